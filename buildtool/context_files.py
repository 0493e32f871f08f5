"""Where a build context's files come from: the commit's own objects for a clean revision (what an
immutable tag promises), the worktree for a -dirty one. Either way a symbolic link is refused,
never followed: a link to /etc/passwd or ~/.docker/config.json would copy the host's file into an
image, and a linked directory would be dropped or followed out of the repository."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from buildtool.errors import ConfigError, GitError, Location, Problem

LINK_HINT = "commit the file or directory itself in place of the link (a build context holds files only)"


@dataclass(frozen=True)
class SourceFile:
    relative: str  # '/'-separated, relative to the directory asked for
    content: bytes
    executable: bool = False


class SourceTree(Protocol):
    def files(self, directory: Path) -> list[SourceFile]:
        """Every regular file under `directory`, sorted by relative path; [] when it is absent."""
        ...


def _link_error(path: Path, target: str, where: str) -> ConfigError:
    return ConfigError(
        Problem(
            f"{path} is a symbolic link (to {target}){where}: it is never followed",
            Location(path),
            hint=LINK_HINT,
        )
    )


class WorktreeFiles:
    """The files on disk: what a -dirty build holds."""

    def files(self, directory: Path) -> list[SourceFile]:
        if directory.is_symlink():
            raise _link_error(directory, str(directory.readlink()), "")
        out = []
        for current, dirs, names in os.walk(directory):  # links are not followed, and refused below
            dirs.sort()
            for name in sorted([*dirs, *names]):
                path = Path(current, name)
                if path.is_symlink():
                    raise _link_error(path, str(path.readlink()), "")
                if name in names and path.is_file():
                    relative = path.relative_to(directory).as_posix()
                    out.append(SourceFile(relative, path.read_bytes(), os.access(path, os.X_OK)))
        return sorted(out, key=lambda f: f.relative)


class CommitFiles:
    """The files of one commit, read from git's objects: nothing the worktree adds, ignores or
    changes reaches the image."""

    def __init__(self, checkout: Path, sha: str) -> None:
        self.checkout = checkout.resolve()
        self.sha = sha

    def _git(self, *args: str, stdin: bytes | None = None) -> bytes:
        try:
            done = subprocess.run(
                ["git", "-C", str(self.checkout), *args], input=stdin, capture_output=True, check=True
            )
        except (OSError, subprocess.CalledProcessError) as exc:
            detail = getattr(exc, "stderr", b"") or str(exc).encode()
            raise GitError(
                Problem(f"cannot read commit {self.sha[:12]}: {detail.decode(errors='replace').strip()}")
            ) from None
        return done.stdout

    def files(self, directory: Path) -> list[SourceFile]:
        try:
            prefix = directory.resolve().relative_to(self.checkout).as_posix()
        except ValueError:
            raise ConfigError(
                Problem(
                    f"{directory} is outside the repository {self.checkout}",
                    Location(directory),
                    hint="keep templates and smoke/ inside the repository that holds matrix.yaml",
                )
            ) from None
        listing = self._git("ls-tree", "-r", "-z", "--full-tree", self.sha, "--", f"{prefix}/")
        entries = []
        for record in filter(None, listing.split(b"\0")):
            meta, _, raw_name = record.partition(b"\t")
            mode, kind, obj = meta.decode().split()
            entries.append((mode, kind, obj, raw_name.decode()))
        blobs = self._blobs([obj for _, kind, obj, _ in entries if kind == "blob"])
        out = []
        for mode, kind, obj, name in entries:
            path = self.checkout / name
            if mode == "120000":
                raise _link_error(path, blobs[obj].decode(errors="replace"), f" in commit {self.sha[:12]}")
            if kind != "blob":
                raise ConfigError(
                    Problem(
                        f"{path} is a submodule in commit {self.sha[:12]}: a build context holds files only",
                        Location(path),
                        hint="vendor the files, or install the package from the lock",
                    )
                )
            relative = name[len(prefix) + 1 :]
            out.append(SourceFile(relative, blobs[obj], mode == "100755"))
        return sorted(out, key=lambda f: f.relative)

    def read(self, relative: str) -> bytes | None:
        """The commit's bytes of one file (no filter, no end-of-line conversion), or None."""
        listing = self._git("ls-tree", "-z", "--full-tree", self.sha, "--", relative)
        meta = listing.split(b"\t", 1)[0].decode().split()
        if len(meta) != 3 or meta[1] != "blob" or meta[0] == "120000":
            return None
        return self._blobs([meta[2]])[meta[2]]

    def _blobs(self, objects: list[str]) -> dict[str, bytes]:
        """Every blob's content through one `git cat-file --batch`."""
        if not objects:
            return {}
        stream = self._git("cat-file", "--batch", stdin="".join(f"{o}\n" for o in objects).encode())
        out: dict[str, bytes] = {}
        position = 0
        for obj in objects:
            end = stream.index(b"\n", position)
            size = int(stream[position:end].split()[2])
            out[obj] = stream[end + 1 : end + 1 + size]
            position = end + 1 + size + 1  # the content, then a newline
        return out


class CachedTree:
    """A tree each directory of which is read once per render (variants share templates, smoke/)."""

    def __init__(self, tree: SourceTree) -> None:
        self.tree = tree
        self._files: dict[Path, list[SourceFile]] = {}

    def files(self, directory: Path) -> list[SourceFile]:
        if directory not in self._files:
            self._files[directory] = self.tree.files(directory)
        return self._files[directory]


def differences(checkout: Path, sha: str, directories: list[Path], files: list[Path]) -> list[str]:
    """What the worktree holds other than the commit, byte for byte, of the files the commit has
    under `directories` and of `files`: what git's own status can be told to overlook
    (update-index --assume-unchanged or --skip-worktree, a clean filter, a sparse checkout)."""
    commit, top = CommitFiles(checkout, sha), checkout.resolve()
    out = []
    for directory in directories:
        for f in commit.files(directory):
            path = directory / f.relative
            if path.is_symlink() or not path.is_file() or path.read_bytes() != f.content:
                out.append(path.resolve().relative_to(top).as_posix())
    for path in files:
        if not path.exists():
            continue
        relative = path.resolve().relative_to(top).as_posix()
        blob = commit.read(relative)
        if blob is None or path.is_symlink() or path.read_bytes() != blob:
            out.append(relative)
    return out


def source_tree(checkout: Path | None, sha: str) -> SourceTree:
    return CommitFiles(checkout, sha) if checkout is not None else WorktreeFiles()
