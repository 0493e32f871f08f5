"""Every kind of failure buildtool reports, each with its exit code.

The CLI is the only place that turns these into exit codes and messages; library code raises them.
A message says what is wrong, where (file and line, variant) and how to fix it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal


@dataclass(frozen=True)
class Location:
    """A place in an input file, 1-based line, for messages and GitHub annotations."""

    file: Path
    line: int | None = None

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" if self.line else str(self.file)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input: what, where, which variant, and the fix."""

    message: str
    location: Location | None = None
    variant: str | None = None
    hint: str | None = None

    def render(self) -> str:
        head = f"{self.location}: " if self.location else ""
        who = f"[{self.variant}] " if self.variant else ""
        tail = f"\n  fix: {self.hint}" if self.hint else ""
        return f"{head}{who}{self.message}{tail}"


Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Finding:
    """What a policy rule found: an error refuses (exit 2), a warning is reported."""

    rule: str
    severity: Severity
    problem: Problem


class BuildtoolError(Exception):
    """Base class. `exit_code` is what the CLI exits with."""

    exit_code = 1

    def __init__(self, problems: Problem | Iterable[Problem]) -> None:
        self.problems: tuple[Problem, ...] = (problems,) if isinstance(problems, Problem) else tuple(problems)
        super().__init__("\n".join(p.render() for p in self.problems))


class ConfigError(BuildtoolError):
    """matrix.yaml (or a template it names) is malformed: bad YAML, types, unknown keys, names."""

    exit_code = 2


class PolicyError(BuildtoolError):
    """The input is well formed but would break in production (CUDA/torch mismatch, nvidia/cuda...)."""

    exit_code = 2


class TemplateError(BuildtoolError):
    """A Jinja2 template is missing, does not parse, or uses an undefined variable."""

    exit_code = 2


class SelectionError(BuildtoolError):
    """--select matched no variant, or --only no smoke check."""

    exit_code = 2


class GitError(BuildtoolError):
    """The commit to label and tag images with could not be determined."""

    exit_code = 2


class DirtyWorktreeError(BuildtoolError):
    """An immutable tag must name a commit; the worktree has uncommitted changes."""

    exit_code = 2


class EngineError(BuildtoolError):
    """The container engine is not there, or refused what was asked of it."""

    exit_code = 1


class BuildError(BuildtoolError):
    """One or more variants failed to build, push or verify (the others still ran)."""

    exit_code = 1


class ReleaseRefused(BuildtoolError):
    """The release would move an existing version tag to another digest."""

    exit_code = 2


class RegistryError(BuildtoolError):
    """The registry answered with an error (an escaped one is exit 1, with its message)."""

    exit_code = 1

    def __init__(self, problems: str | Problem | Iterable[Problem]) -> None:
        super().__init__(Problem(problems) if isinstance(problems, str) else problems)


class RegistryUnreachable(RegistryError):
    """The registry did not answer."""


class RegistryDenied(RegistryError):
    """The registry answered, and refused (credentials)."""


class HubError(BuildtoolError):
    """The Hugging Face Hub did not resolve a kernel's revision (unreachable, unknown, refused)."""

    exit_code = 1


class DeploySpecError(BuildtoolError):
    """A deployment spec cannot be made: the variant was not built, or its settings contradict."""

    exit_code = 2


class DeployError(BuildtoolError):
    """RunPod's API refused a request, or could not be reached."""

    exit_code = 1


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """'Perhaps you meant 'x'?' for the closest of `choices`, or None."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"Perhaps you meant '{close[0]}'?" if close else None
