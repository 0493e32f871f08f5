"""Files every stage writes: whole, or not at all (a temporary file in the same directory, renamed)."""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        Path(temporary).replace(path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def read_json_object(path: Path) -> dict[str, Any]:
    """The JSON object in `path`; {} when it is missing or not one (a cache starts over)."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def merge_json_object(path: Path, additions: Mapping[str, Any]) -> None:
    """Add `additions` to the JSON object in `path`. Writers that run at once (variants built in
    parallel, two builds on one machine) each re-read the file under an exclusive lock before they
    write it whole, so no one's additions are lost."""
    if not additions:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with (path.parent / f".{path.name}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        merged = {**read_json_object(path), **additions}
        write_atomically(path, json.dumps(merged, sort_keys=True) + "\n")
