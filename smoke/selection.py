"""`--only PATTERN`: run only the checks a pattern selects, as pytest's -k or cibuildwheel's build
selectors narrow a run. A pattern selects a check when it matches its dotted name (fnmatch:
`attention.sdpa.*`) or names one of its groups (`attention`, `attention.sdpa`, `bench.kernel`).

The names each part of the suite can report are known before it runs (static, or from the image's
kernels lock), so a pattern that selects nothing is refused before anything runs, with the names
it could have meant, and parts with no selected check are not run at all.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass

ENVIRONMENT = (
    "environment.torch-version",
    "environment.cuda-version",
    "environment.cudnn-version",
    "environment.device-arch",
    "environment.driver",
    "environment.libcuda",
)
MODEL_IMPORTS = ("model.imports",)
MODEL_SERVE = ("model.serve", "model.attention-backend")
MODEL_IN_PROCESS = ("model.load", "model.handler", "model.cuda")
SDPA = ("math", "flash", "efficient", "cudnn", "default")
EXPECTED_BACKEND = "attention.expected-backend"
KERNEL_GROUPS = ("attention.kernel", "bench.kernel")  # named after each image's kernels lock


def attention_names(kernels: Iterable[str]) -> tuple[str, ...]:
    return (
        *(f"attention.sdpa.{b}" for b in SDPA),
        *(f"attention.kernel.{k}" for k in kernels),
        EXPECTED_BACKEND,
    )


def bench_names(kernels: Iterable[str]) -> tuple[str, ...]:
    return (*(f"bench.sdpa.{b}" for b in SDPA if b != "default"), *(f"bench.kernel.{k}" for k in kernels))


def catalogue(
    kernels: Iterable[str] = (), *, model: bool = True, attention: bool = True, bench: bool = False
) -> tuple[str, ...]:
    """Every check name a run with these parts can report; `kernels`: the kernels lock's names."""
    kernels = tuple(kernels)
    names: tuple[str, ...] = ENVIRONMENT
    if model:
        names += MODEL_IMPORTS + MODEL_SERVE + MODEL_IN_PROCESS
    if attention:
        names += attention_names(kernels)
    if bench:
        names += bench_names(kernels)
    return names


def split_patterns(values: Iterable[str]) -> tuple[str, ...]:
    """Repeatable and comma-separated, as --select is."""
    return tuple(p.strip() for value in values for p in value.split(",") if p.strip())


@dataclass(frozen=True)
class Selection:
    patterns: tuple[str, ...] = ()  # none: every check

    def selects(self, name: str) -> bool:
        return not self.patterns or any(_matches(name, p) for p in self.patterns)

    def any(self, names: Iterable[str]) -> bool:
        return any(self.selects(n) for n in names)

    def unmatched(self, names: Iterable[str], open_groups: Iterable[str] = ()) -> list[tuple[str, str]]:
        """(what is wrong, the fix) for each pattern that selects none of `names`, nor could select a
        check of an `open_groups` group (`attention.kernel`: kernel names the caller does not know)."""
        names, open_groups = tuple(names), tuple(open_groups)
        problems = []
        for pattern in self.patterns:
            if any(_matches(n, pattern) for n in names) or any(_may_select(g, pattern) for g in open_groups):
                continue
            close = difflib.get_close_matches(pattern, _groups(names) + names, n=1, cutoff=0.6)
            groups = ", ".join(dict.fromkeys(n.split(".")[0] for n in names))
            fix = f"Perhaps you meant '{close[0]}'? " if close else ""
            problems.append(
                (
                    f"--only '{pattern}' selects no check of this run",
                    f"{fix}The groups are {groups}; python -m smoke --list names each check",
                )
            )
        return problems


EVERY = Selection()


def _matches(name: str, pattern: str) -> bool:
    return fnmatch.fnmatchcase(name, pattern) or name.startswith(pattern + ".")


def _may_select(group: str, pattern: str) -> bool:
    """Whether a check named `<group>.<anything>` could match `pattern`."""
    literal = pattern
    for wildcard in "*?[":
        literal = literal.split(wildcard)[0]
    prefix = group + "."
    wild = literal != pattern
    return pattern == group or literal.startswith(prefix) or (wild and prefix.startswith(literal))


def _groups(names: tuple[str, ...]) -> tuple[str, ...]:
    groups: dict[str, None] = {}
    for name in names:
        parts = name.split(".")
        for end in range(1, len(parts)):
            groups.setdefault(".".join(parts[:end]), None)
    return tuple(groups)
