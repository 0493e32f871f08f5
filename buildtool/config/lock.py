"""matrix.lock, next to matrix.yaml: what moving names resolved to when `buildtool lock` ran.

- bases: the digest each base tag resolved to. `buildtool build` reports a base tag that moved
  since; `buildtool build --locked` builds FROM the recorded digests.
- kernels: the commit each Hub kernel's revision (a branch such as v1) resolved to. The plan bakes
  the recorded commit, so a branch moving upstream cannot change an image silently. An entry must
  be a commit: a branch or tag name here is refused (exit 2).
The build never writes the lock (it is the user's tracked file).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from buildtool.errors import ConfigError, Location, Problem
from buildtool.files import write_atomically

LOCK_VERSION = 1
COMMIT = re.compile(r"[0-9a-f]{40}")


@dataclass(frozen=True)
class Lock:
    bases: dict[str, str] = field(default_factory=dict)  # base reference -> digest
    kernels: dict[tuple[str, str], str] = field(default_factory=dict)  # (repo_id, revision) -> commit


def lock_path_for(matrix_path: Path) -> Path:
    return matrix_path.with_suffix(".lock")


def _malformed(path: Path, why: str) -> ConfigError:
    hint = "delete it and run buildtool lock to re-create it"
    return ConfigError(Problem(f"the lock file is malformed ({why})", Location(path), hint=hint))


def _kernels(path: Path, data: Mapping[str, Any]) -> dict[tuple[str, str], str]:
    out: dict[tuple[str, str], str] = {}
    for key, entry in data.items():
        repo_id, at, revision = str(key).rpartition("@")
        if not at or not repo_id or not isinstance(entry, dict):
            raise _malformed(path, f"kernels entry '{key}' is not '<repo_id>@<revision>': {{commit}}")
        commit = str(entry.get("commit", ""))
        if not COMMIT.fullmatch(commit):
            raise ConfigError(
                Problem(
                    f"kernels entry '{key}' records '{commit}', which is not a commit: a branch or tag "
                    "moves, and the image would bake whatever it points to on the day of the build",
                    Location(path),
                    hint="run buildtool lock where the Hub is reachable (it records the 40-hex commit), "
                    "or write the commit yourself",
                )
            )
        out[(repo_id, revision)] = commit
    return out


def read_lock_file(path: Path) -> Lock:
    """The whole lock; empty when there is none yet."""
    if not path.is_file():
        return Lock()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        bases = data["bases"]
        kernels = data.get("kernels", {})
        if (
            data.get("version") != LOCK_VERSION
            or not isinstance(bases, dict)
            or not isinstance(kernels, dict)
        ):
            raise ValueError("unexpected layout")
        digests = {str(ref): str(entry["digest"]) for ref, entry in bases.items()}
    except (ValueError, KeyError, TypeError) as exc:
        raise _malformed(path, str(exc)) from None
    return Lock(digests, _kernels(path, kernels))


def read_lock(path: Path) -> dict[str, str]:
    """base reference -> digest."""
    return read_lock_file(path).bases


def write_lock(path: Path, lock: Lock) -> None:
    """Deterministic JSON, written to a temporary file and renamed into place."""
    data: dict[str, Any] = {
        "version": LOCK_VERSION,
        "bases": {ref: {"digest": lock.bases[ref]} for ref in sorted(lock.bases)},
    }
    if lock.kernels:
        data["kernels"] = {f"{r}@{v}": {"commit": lock.kernels[(r, v)]} for r, v in sorted(lock.kernels)}
    write_atomically(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
