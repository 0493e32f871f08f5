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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from buildtool.errors import ConfigError, GitError, Location, Problem

EMBEDDED_REGISTRY = "localhost:5000"  # where `buildtool build` starts registry:2 when none is configured


@dataclass(frozen=True)
class Revision:
    sha: str
    dirty: bool
    epoch: int = 0  # commit time: the image's org.opencontainers.image.created label
    strays: tuple[str, ...] = ()  # files outside the commit that would reach a build context
    # The checkout whose git objects hold the commit's files: a clean revision's build contexts are
    # read from there (context_files.CommitFiles), never from the worktree. None: the worktree.
    checkout: Path | None = None

    @property
    def tag_suffix(self) -> str:
        return f"{self.sha}-dirty" if self.dirty else self.sha


@dataclass(frozen=True)
class VariantTags:
    repository: str  # <registry>/<image>
    immutable: str
    moving: tuple[str, ...]
    cache: str


def current_revision(
    directory: Path,
    sources: Sequence[Path] = (),
    reaches_context: Callable[[str], bool] = lambda _: True,
    commit: Revision | None = None,
    inputs: Sequence[Path] = (),
) -> Revision:
    """The revision a build is tagged with: `commit` (--commit) or HEAD, and whether the worktree
    differs from it: tracked files changed since that commit, files outside it under `sources`
    (what render copies into build contexts), or `inputs` (the matrix, its lock) that the commit does
    not hold. A clean one
    reads its build contexts from git's objects (`checkout`)."""

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

    if commit is None:
        sha, epoch = git("show", "-s", "--format=%H %ct", "HEAD").split()
        commit = Revision(sha, False, int(epoch))
    dirty = bool(git("diff", "--name-only", commit.sha, "--"))
    strays = stray_files(directory, sources, reaches_context) if sources else ()
    top = Path(git("rev-parse", "--show-toplevel"))
    for path in inputs:  # an untracked or ignored matrix (or lock) is no commit's
        if path.exists() and not git("ls-files", "--", str(path.resolve())):
            strays = (path.resolve().relative_to(top.resolve()).as_posix(), *strays)
    if not dirty and not strays:
        from buildtool.context_files import differences

        strays = tuple(
            f"{name} (differs from the commit)"
            for name in differences(top, commit.sha, list(sources), list(inputs))
        )
    clean = not dirty and not strays
    return Revision(commit.sha, not clean, commit.epoch, strays, top if clean else None)


def stray_files(
    directory: Path, sources: Sequence[Path], reaches_context: Callable[[str], bool]
) -> tuple[str, ...]:
    """Files under `sources` that are not in the commit (untracked, or ignored) and that render
    would copy into a build context: an image built with them is not the commit's image."""
    done = subprocess.run(
        [
            "git",
            "-C",
            str(directory),
            "status",
            "--porcelain",
            "-z",
            "--ignored",
            "--untracked-files=all",
            "--",
            *(str(s) for s in sources),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    entries = [e for e in done.stdout.split("\0") if e]
    return tuple(sorted(e[3:] for e in entries if e[:2] in ("??", "!!") and reaches_context(e[3:])))


def revision_of(directory: Path, sha: str) -> Revision:
    """An explicit commit (--commit): one the repository holds, a short sha expanded. Immutable tags
    promise the commit's content, so a sha git cannot find (or a tree's, or a blob's) is refused."""
    if not re.fullmatch(r"[0-9a-f]{7,40}", sha):
        raise GitError(
            Problem(f"--commit '{sha}' is not a git sha", hint="give the commit's 40 lower-case hex digits")
        )
    done = subprocess.run(
        ["git", "-C", str(directory), "show", "-s", "--format=%H %ct", f"{sha}^{{commit}}", "--"],
        capture_output=True,
        text=True,
        check=False,
    )
    fields = done.stdout.split() if done.returncode == 0 else []
    if len(fields) == 2 and fields[0].startswith(sha):
        return Revision(fields[0], dirty=False, epoch=int(fields[1]))
    kind = subprocess.run(
        ["git", "-C", str(directory), "cat-file", "-t", sha], capture_output=True, text=True, check=False
    ).stdout.strip()
    what = f"a {kind}, not a commit" if kind and kind != "commit" else "not a commit of this repository"
    raise GitError(
        Problem(
            f"--commit '{sha}' is {what}: an immutable tag names a commit whose files it holds",
            Location(directory),
            hint="give a commit of this checkout (git rev-parse HEAD); fetch it first if it is only "
            "on the remote (git fetch origin <sha>)",
        )
    )


# The distribution reference grammar's registry host and repository path (docker/distribution
# reference/regexp.go), upper case excluded: images are pushed to <registry>/<image>.
_DOMAIN_COMPONENT = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_HOST = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9a-fA-F:]+\])"
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
REGISTRY_PATTERN = re.compile(rf"{_HOST}(?::[0-9]+)?(?:/{_PATH_COMPONENT})*")


def check_registry(value: str, source: str, where: Location | None = None) -> str:
    """A registry (host[:port][/namespace...]) as images are pushed under it; else ConfigError."""
    fix = "e.g. ghcr.io/my-org or localhost:5000: no scheme, no tag, lower case"
    if value != value.strip() or not value or " " in value:
        raise ConfigError(Problem(f"{source} '{value}' has spaces or is empty", where, hint=fix))
    if "://" in value:
        raise ConfigError(
            Problem(f"{source} '{value}' has a scheme", where, hint=f"write {value.split('://', 1)[1]}")
        )
    host, _, path = value.partition("/")
    if "@" in value or (":" in path) or not REGISTRY_PATTERN.fullmatch(value.rstrip("/")):
        detail = "upper case in its path" if path != path.lower() else "no registry form"
        if "@" in value or ":" in path:
            detail = "a tag or a digest (buildtool adds the tags)"
        raise ConfigError(Problem(f"{source} '{value}' has {detail}", where, hint=fix))
    if host != host.lower():
        raise ConfigError(
            Problem(f"{source} '{value}' has upper case in its host", where, hint=f"write {value.lower()}")
        )
    return value.rstrip("/")


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


def check_build_dir(build_dir: Path, root: Path) -> None:
    """The build directory is rewritten by every run: it may hold no file the repository tracks,
    lie in no directory of the repository that holds tracked files (but its top), nor be the
    repository itself or above it."""
    target, top = build_dir.resolve(), root.resolve()
    fix = "use a directory of its own, e.g. build/ (git-ignored)"
    if target == top or target in top.parents:
        raise ConfigError(
            Problem(
                f"--build-dir {build_dir} holds the repository {root}: every render rewrites it",
                Location(build_dir),
                hint=fix,
            )
        )

    def tracked(directory: Path) -> list[str]:
        done = subprocess.run(
            ["git", "-C", str(top), "ls-files", "-z", "--", str(directory)],
            capture_output=True,
            text=True,
            check=False,
        )
        return [name for name in done.stdout.split("\0") if name]

    inside = tracked(target)
    if inside:
        raise ConfigError(
            Problem(
                f"--build-dir {build_dir} holds files the repository tracks ({', '.join(inside[:3])}"
                f"{' ...' if len(inside) > 3 else ''}): a render replaces what is there",
                Location(build_dir),
                hint=fix,
            )
        )
    if top not in target.parents:
        return  # outside the repository
    for parent in target.parents:
        if parent == top:
            break
        if tracked(parent):
            raise ConfigError(
                Problem(
                    f"--build-dir {build_dir} is inside {parent.relative_to(top)}/, which the repository "
                    "tracks: a rendering there lands in build contexts and templates",
                    Location(build_dir),
                    hint=fix,
                )
            )
