"""Base pinning: matrix.lock, next to matrix.yaml, records the digest each base tag resolved to.

`buildtool lock` records digests; `buildtool build` reports a base tag that moved since, and never
writes the lock (it is the user's tracked file); `buildtool build --locked` builds FROM the recorded
digests, so that a base tag moving upstream cannot change an image silently.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from buildtool.errors import ConfigError, Location, Problem
from buildtool.files import write_atomically

LOCK_VERSION = 1


def lock_path_for(matrix_path: Path) -> Path:
    return matrix_path.with_suffix(".lock")


def read_lock(path: Path) -> dict[str, str]:
    """base reference -> digest; empty when there is no lock file yet."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        bases = data["bases"]
        if data.get("version") != LOCK_VERSION or not isinstance(bases, dict):
            raise ValueError("unexpected layout")
        return {str(ref): str(entry["digest"]) for ref, entry in bases.items()}
    except (ValueError, KeyError, TypeError) as exc:
        hint = "delete it and run buildtool lock to re-create it"
        raise ConfigError(Problem(f"the lock file is malformed ({exc})", Location(path), hint=hint)) from None


def write_lock(path: Path, digests: Mapping[str, str]) -> None:
    """Deterministic JSON, written to a temporary file and renamed into place."""
    data = {"version": LOCK_VERSION, "bases": {ref: {"digest": digests[ref]} for ref in sorted(digests)}}
    write_atomically(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
