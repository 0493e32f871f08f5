"""The build directory: one run at a time (a lock), and renders that land whole or not at all.

A rendering is written into build/.renders/<id>/ and switched in by one rename of the symbolic
link build/.current, so a run killed at any point leaves either the previous rendering or the new
one, never a mix. build/<variant> and build/docker-bake.json are stable links through .current;
the next run removes what a killed one left. Builds run bake inside the rendering it resolves to.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from buildtool.errors import ConfigError, Location, Problem
from buildtool.render.output import OCI_LAYOUTS, RenderedFile, Rendering

LOCK_NAME = ".buildtool.lock"


class BuildDirError(ConfigError):
    """The build directory cannot be used as it is."""


CURRENT = ".current"
RENDERS = ".renders"
BAKE_FILE = "docker-bake.json"


# Build directories held, by the thread that holds each: a nested hold (build, then its
# reproducibility check) is the same hold; another thread waits like another process.
_HELD: dict[Path, int] = {}


@contextlib.contextmanager
def exclusive(build_dir: Path, on_note: Callable[[str], None] = lambda _: None) -> Iterator[None]:
    """Hold the build directory's lock; a second run waits, and says for whom."""
    build_dir.mkdir(parents=True, exist_ok=True)
    key = build_dir.resolve()
    if _HELD.get(key) == threading.get_ident():
        yield
        return
    lock_path = build_dir / LOCK_NAME
    try:  # never through a link: the file is truncated and written
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        raise BuildDirError(
            Problem(
                f"cannot open the build directory's lock {lock_path}: {exc.strerror}",
                Location(lock_path),
                hint="remove it if it is a link or not a file; buildtool makes it anew",
            )
        ) from None
    with os.fdopen(fd, "r+", encoding="utf-8") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            holder = lock.read().strip() or "another process"
            on_note(f"waiting for {holder}, which holds {lock_path} (one run per build directory)")
            started = time.monotonic()
            fcntl.flock(lock, fcntl.LOCK_EX)
            on_note(f"{lock_path} is free after {time.monotonic() - started:.0f} s")
        lock.seek(0)
        lock.truncate()
        lock.write(f"buildtool pid {os.getpid()}\n")
        lock.flush()
        _HELD[key] = threading.get_ident()
        try:
            yield
        finally:
            _HELD.pop(key, None)
            lock.seek(0)
            lock.truncate()
            fcntl.flock(lock, fcntl.LOCK_UN)


def _replace_link(link: Path, target: str) -> None:
    """Point `link` at `target` in one rename (atomic on POSIX)."""
    temporary = link.with_name(f".link-{secrets.token_hex(4)}")
    temporary.symlink_to(target)
    if link.is_dir() and not link.is_symlink():  # a build directory from before renders were linked
        shutil.rmtree(link)
    temporary.replace(link)


def clean_up(build_dir: Path) -> None:
    """Remove what a killed run left: unused renders, temporary links, links into nothing."""
    renders = build_dir / RENDERS
    current = build_dir / CURRENT
    in_use = str(current.readlink()) if current.is_symlink() else None
    if renders.is_dir():
        for entry in renders.iterdir():
            if f"{RENDERS}/{entry.name}" != in_use:
                shutil.rmtree(entry, ignore_errors=True)
    for entry in build_dir.iterdir():
        if entry.name.startswith((".link-", ".render-", ".old-")):  # .render-/.old-: earlier layouts
            if entry.is_symlink() or entry.is_file():
                entry.unlink()
            else:
                shutil.rmtree(entry, ignore_errors=True)
        elif entry.is_symlink() and str(entry.readlink()).startswith(f"{CURRENT}/") and not entry.exists():
            entry.unlink()


def write_rendering(rendering: Rendering, build_dir: Path) -> list[Path]:
    """Write the rendering beside the current one, then switch to it with one rename."""
    build_dir.mkdir(parents=True, exist_ok=True)
    clean_up(build_dir)
    files = rendering.files()
    name = f"{RENDERS}/{content_id(files)}"  # the same rendering is the same directory
    staging = build_dir / name
    current = build_dir / CURRENT
    if current.is_symlink() and str(current.readlink()) == name:
        if _holds_exactly(staging, files):
            return _links(rendering, build_dir)  # already switched in, untouched: nothing to write
        name = f"{name}-{secrets.token_hex(4)}"  # edited by hand since: written anew beside it
        staging = build_dir / name
    for f in files:
        target = staging / f.path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(f.content)
        target.chmod(0o755 if f.executable else 0o644)
    # Builds export to build/oci/, which the build stage makes first (buildx's MkdirAll fails on a
    # link into nothing).
    (staging / OCI_LAYOUTS).symlink_to(Path("..", "..", OCI_LAYOUTS))
    written = _links(rendering, build_dir)
    _replace_link(current, name)  # the switch: before it the old rendering, after it the new
    clean_up(build_dir)
    return written


def _links(rendering: Rendering, build_dir: Path) -> list[Path]:
    """build/<variant> and build/docker-bake.json, each a link through .current."""
    written = []
    for entry in [*(v.name for v in rendering.variants), BAKE_FILE]:
        link = build_dir / entry
        if not (link.is_symlink() and str(link.readlink()) == f"{CURRENT}/{entry}"):
            _replace_link(link, f"{CURRENT}/{entry}")
        written.append(link)
    return written


def _holds_exactly(directory: Path, files: list[RenderedFile]) -> bool:
    """Whether `directory` holds these files, byte for byte and mode for mode, and nothing else (a
    link only where the OCI layouts' link belongs). os.scandir: a re-render of 1,000 variants
    reads back tens of thousands of files."""
    expected = {f.path: f for f in files}
    found = 0
    pending = [(str(directory), "")]
    while pending:
        base, prefix = pending.pop()
        with os.scandir(base) as entries:
            for entry in entries:
                relative = prefix + entry.name
                if entry.is_symlink():
                    if relative == OCI_LAYOUTS:
                        continue
                    return False
                if entry.is_dir(follow_symlinks=False):
                    pending.append((entry.path, relative + "/"))
                    continue
                f = expected.get(relative)
                if f is None:
                    return False
                status = entry.stat(follow_symlinks=False)
                if status.st_mode & 0o777 != (0o755 if f.executable else 0o644) or status.st_size != len(
                    f.content
                ):
                    return False
                if Path(entry.path).read_bytes() != f.content:
                    return False
                found += 1
    return found == len(expected)


def content_id(files: list[RenderedFile]) -> str:
    digest = hashlib.sha256()
    for f in sorted(files, key=lambda f: f.path):
        digest.update(f"{f.path}\0{int(f.executable)}\0{len(f.content)}\0".encode())
        digest.update(f.content)
    return digest.hexdigest()[:20]
