"""The build directory: one run at a time (a lock), and renders that land whole or not at all.

A rendering is written into build/.renders/<id>/ and switched in by one rename of the symbolic
link build/.current, so a run killed at any point leaves either the previous rendering or the new
one, never a mix. build/<variant> and build/docker-bake.json are stable links through .current
(<variant> in a rendering links to its context's directory, named by its files' hash);
the next run removes what a killed one left. Builds run bake inside the rendering it resolves to.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from buildtool.errors import ConfigError, Location, Problem
from buildtool.render.output import REPRODUCIBLE_EPOCH, RenderedFile, Rendering

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
    name = f"{RENDERS}/{content_id(rendering)}"  # the same rendering is the same directory
    staging = build_dir / name
    current = build_dir / CURRENT
    # <variant>, in the rendering: a link to its context's directory, whose name changes with its
    # files (render.output.context_directory); build/<variant> is a link to it through .current.
    contexts = {v.name: v.context for v in rendering.variants}
    if current.is_symlink() and str(current.readlink()) == name:
        if _holds_exactly(staging, files, contexts):
            return _links(rendering, build_dir)  # already switched in, untouched: nothing to write
        name = f"{name}-{secrets.token_hex(4)}"  # edited by hand since: written anew beside it
        staging = build_dir / name
    made: set[Path] = set()
    # A file that every variant holds at the same place (smoke/, a template's own files) is written
    # once and linked from the others: never two places in one variant's context, so that BuildKit
    # sends no hard link within a build context.
    first_copy: dict[tuple[str, bool, bytes], Path] = {}
    for f in files:
        target = staging / f.path
        if target.parent not in made:
            target.parent.mkdir(parents=True, exist_ok=True)
            made.add(target.parent)
        key = (f.path.partition("/")[2], f.executable, f.content)
        if key in first_copy:
            target.hardlink_to(first_copy[key])
            continue
        target.write_bytes(f.content)
        target.chmod(0o755 if f.executable else 0o644)
        moment = context_file_time(f.content)
        os.utime(target, ns=(moment, moment))
        first_copy[key] = target
    # COPY keeps a context file's time (context_file_time) and a directory's mode and time: the same
    # on every machine (whatever its umask, whenever it cloned), so a layer rebuilt anywhere is the
    # same layer.
    for directory in sorted(made | _parents(made, staging), key=lambda d: len(d.parts), reverse=True):
        directory.chmod(0o755)
        os.utime(directory, (REPRODUCIBLE_EPOCH, REPRODUCIBLE_EPOCH))
    for variant, context in contexts.items():
        (staging / variant).symlink_to(context)
    _write_stamp(staging, files)
    written = _links(rendering, build_dir)
    _replace_link(current, name)  # the switch: before it the old rendering, after it the new
    clean_up(build_dir)
    return written


def context_file_time(content: bytes) -> int:
    """A context file's time, in ns: REPRODUCIBLE_EPOCH, and a fraction of a second from its content.
    COPY keeps it, so the layer is the same on every machine; and BuildKit's context transfer, which
    takes a file of the same size and time as unchanged, sees an edit (one time for every file would
    let an edit of the same length build the old file)."""
    fraction = int.from_bytes(hashlib.sha256(content).digest()[:8], "big") % 1_000_000_000
    return REPRODUCIBLE_EPOCH * 1_000_000_000 + fraction


def _parents(directories: set[Path], top: Path) -> set[Path]:
    """The directories between each of `directories` and `top` (the variants' own context roots)."""
    out = set()
    for directory in directories:
        for parent in directory.parents:
            if parent == top or top not in parent.parents:
                break
            out.add(parent)
    return out


def _links(rendering: Rendering, build_dir: Path) -> list[Path]:
    """build/<variant> and build/docker-bake.json, each a link through .current."""
    written = []
    for entry in [*(v.name for v in rendering.variants), BAKE_FILE]:
        link = build_dir / entry
        if not (link.is_symlink() and str(link.readlink()) == f"{CURRENT}/{entry}"):
            _replace_link(link, f"{CURRENT}/{entry}")
        written.append(link)
    return written


STAMP = ".written"  # in a rendering's directory: each file's size, mtime, ctime and inode as written


def _write_stamp(directory: Path, files: list[RenderedFile]) -> None:
    """What each file looked like once written, so that a re-render can tell an untouched rendering
    by its files' status alone (git's index does the same), written after the files."""
    seen = {}
    for f in files:
        status = (directory / f.path).stat()
        seen[f.path] = [status.st_size, status.st_mtime_ns, status.st_ctime_ns, status.st_ino]
    (directory / STAMP).write_text(json.dumps(seen, separators=(",", ":")))


def _holds_exactly(directory: Path, files: list[RenderedFile], links: dict[str, str]) -> bool:
    """Whether `directory` holds these files, byte for byte and mode for mode, these links (name:
    target), and nothing else. A file whose size, mtime, ctime (which no write or utime leaves as
    it was) and inode are those written, changed before the stamp was written, is untouched; the
    others are read. A re-render of 1,000 variants meets tens of thousands of files: os.scandir,
    one stat per inode (the files written once for many variants share one)."""
    expected = {f.path: f for f in files}
    try:
        stamp_path = directory / STAMP
        stamp_time = stamp_path.stat().st_mtime_ns
        written: dict[str, list[int]] = json.loads(stamp_path.read_bytes())
    except (OSError, ValueError):
        stamp_time, written = 0, {}
    verified: dict[int, tuple[bytes, bool]] = {}  # inode -> what it was found to hold
    found = linked = 0
    pending = [(str(directory), "")]
    while pending:
        base, prefix = pending.pop()
        with os.scandir(base) as entries:
            for entry in entries:
                relative = prefix + entry.name
                if entry.is_symlink():
                    if links.get(relative) != str(Path(entry.path).readlink()):
                        return False
                    linked += 1
                    continue
                if entry.is_dir(follow_symlinks=False):
                    pending.append((entry.path, relative + "/"))
                    continue
                if relative == STAMP:
                    continue
                f = expected.get(relative)
                if f is None:
                    return False
                seen = verified.get(entry.inode())  # a file written once for many variants
                if seen is not None:
                    if seen[1] != f.executable or (seen[0] is not f.content and seen[0] != f.content):
                        return False
                    found += 1
                    continue
                status = entry.stat(follow_symlinks=False)
                if status.st_mode & 0o777 != (0o755 if f.executable else 0o644) or status.st_size != len(
                    f.content
                ):
                    return False
                # Changed in the stamp's own clock tick, a file's times may not show it: read it.
                now = [status.st_size, status.st_mtime_ns, status.st_ctime_ns, status.st_ino]
                trusted = written.get(relative) == now and status.st_ctime_ns < stamp_time
                if not trusted and Path(entry.path).read_bytes() != f.content:
                    return False
                verified[status.st_ino] = (f.content, f.executable)
                found += 1
    return found == len(expected) and linked == len(links)


def content_id(rendering: Rendering) -> str:
    """A name for the rendering: each variant's name and context directory (named by its files'
    hash, render.output.context_directory), and the bake file."""
    digest = hashlib.sha256()
    for v in sorted(rendering.variants, key=lambda v: v.name):
        digest.update(f"{v.name}\0{v.context}\0".encode())
    digest.update(rendering.bake.encode())
    return digest.hexdigest()[:20]
