"""The commit being built and the tag scheme derived from it, shared by render, build and release.

Tag scheme, per variant `<image>-<base>` pushed to `<registry>/<image>`:
  immutable  <registry>/<image>:<base>-<full git sha>        never overwritten with other content
  moving     <registry>/<image>:<base>-latest                 moved after the immutable tags verify
             <registry>/<image>:latest                        the matrix's default variant only
  cache      <registry>/<image>:buildcache-<base>             BuildKit registry cache, mode=max
A dirty worktree gets `<base>-<sha>-dirty` instead, which is mutable and never promoted.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from buildtool.errors import GitError, Location, Problem

EMBEDDED_REGISTRY = "localhost:5000"  # where `buildtool build` starts registry:2 when none is configured


@dataclass(frozen=True)
class Revision:
    sha: str
    dirty: bool
    epoch: int = 0  # commit time: the image's org.opencontainers.image.created label

    @property
    def tag_suffix(self) -> str:
        return f"{self.sha}-dirty" if self.dirty else self.sha


@dataclass(frozen=True)
class VariantTags:
    repository: str  # <registry>/<image>
    immutable: str
    moving: tuple[str, ...]
    cache: str


def current_revision(directory: Path) -> Revision:
    """HEAD's full sha and whether the worktree has uncommitted changes."""

    def git(*args: str) -> str:
        try:
            done = subprocess.run(
                ["git", "-C", str(directory), *args], capture_output=True, text=True, check=True
            )
        except (OSError, subprocess.CalledProcessError) as exc:
            detail = getattr(exc, "stderr", "") or str(exc)
            raise GitError(
                Problem(
                    f"cannot read the git revision: {detail.strip()}",
                    Location(directory),
                    hint="run inside a git checkout with a commit, or pass --commit SHA",
                )
            ) from None
        return done.stdout.strip()

    sha, epoch = git("show", "-s", "--format=%H %ct", "HEAD").split()
    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    return Revision(sha, dirty, int(epoch))


def revision_of(directory: Path, sha: str) -> Revision:
    """An explicit commit (--commit): its time from git when the checkout has it, else 0."""
    if not re.fullmatch(r"[0-9a-f]{7,40}", sha):
        raise GitError(
            Problem(f"--commit '{sha}' is not a git sha", hint="give 7 to 40 lower-case hex digits")
        )
    done = subprocess.run(
        ["git", "-C", str(directory), "show", "-s", "--format=%ct", sha],
        capture_output=True,
        text=True,
        check=False,
    )
    epoch = int(done.stdout.strip()) if done.returncode == 0 and done.stdout.strip().isdigit() else 0
    return Revision(sha, dirty=False, epoch=epoch)


def tag_commit(directory: Path, tag: str) -> str | None:
    """The commit a git tag names, or None when the checkout has no such tag."""
    done = subprocess.run(
        ["git", "-C", str(directory), "rev-parse", "--verify", "--quiet", f"{tag}^{{commit}}"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() or None


def variant_tags(registry: str, image: str, base: str, revision: Revision, is_default: bool) -> VariantTags:
    repository = f"{registry.rstrip('/')}/{image}"
    moving = (f"{repository}:{base}-latest",) + ((f"{repository}:latest",) if is_default else ())
    return VariantTags(
        repository, f"{repository}:{base}-{revision.tag_suffix}", moving, f"{repository}:buildcache-{base}"
    )
