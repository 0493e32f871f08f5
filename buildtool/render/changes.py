"""Which variants a change affects: those whose build context, build arguments or base differ
between a commit and now, each rendered from its own commit (the matrix, the templates and smoke/
as that commit has them), and every variant when the tool that builds them, or matrix.lock (the
bases' digests, the kernels' commits), changed."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from buildtool.config.matrix import load_matrix
from buildtool.errors import BuildtoolError, ConfigError, Location, Problem, SelectionError
from buildtool.naming import Revision
from buildtool.plan import CheckedPlan, KernelCommits, make_plan
from buildtool.render.dockerfiles import render
from buildtool.render.output import RenderedVariant

# Paths (from the repository's top) whose change changes how every image is built or checked.
TOOL_PATHS = ("buildtool/", "pyproject.toml", "requirements/tool.txt")


@dataclass(frozen=True)
class Affected:
    variant: str
    why: str


def _git(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=False)


def resolve_commit(root: Path, since: str) -> str:
    done = _git(root, "rev-parse", "--verify", "--quiet", f"{since}^{{commit}}")
    if done.returncode != 0 or not done.stdout.strip():
        raise ConfigError(
            Problem(
                f"--changed-since {since}: no such commit in {root}",
                Location(root),
                hint="pass a commit this checkout has (a shallow clone may need git fetch --deepen "
                "or fetch-depth: 0)",
            )
        )
    return done.stdout.strip()


def affected_since(
    checked: CheckedPlan,
    revision: Revision,
    since: str,
    registry: str,
    select: tuple[str, ...],
    commits: KernelCommits,
) -> tuple[Affected, ...]:
    """The variants of `checked` (rendered at `revision`) that differ from commit `since`."""
    matrix_path = checked.plan.matrix.path.resolve()
    root = matrix_path.parent
    sha = resolve_commit(root, since)
    top = Path(_git(root, "rev-parse", "--show-toplevel").stdout.strip() or root)
    changed = _git(top, "diff", "--name-only", sha, "--").stdout.split()
    names = [v.name for v in checked.variants]
    tool = next((p for p in changed if p.startswith(TOOL_PATHS)), None)
    lock = (matrix_path.parent / "matrix.lock").relative_to(top).as_posix()
    everything = (f"the tool changed ({tool})" if tool else None) or (
        "matrix.lock changed (bases' digests, kernels' commits)" if lock in changed else None
    )
    if everything:
        return tuple(Affected(n, everything) for n in names)
    relative = matrix_path.relative_to(top).as_posix()
    shown = _git(top, "show", f"{sha}:{relative}")
    if shown.returncode != 0:
        return tuple(Affected(n, f"{sha[:12]} has no {relative}") for n in names)
    old_revision = Revision(sha, dirty=False, epoch=revision.epoch, checkout=revision.checkout or top)
    try:
        old_plan = make_plan(load_matrix(matrix_path, shown.stdout), select, commits)
        # Nothing is built from the old rendering: its findings do not matter, only what it holds.
        rendered = render(CheckedPlan(old_plan, ()), old_revision, registry).variants
    except SelectionError:  # the selection matches only variants the commit did not have
        return tuple(Affected(n, f"a new variant (none at {sha[:12]} matches --select)") for n in names)
    except BuildtoolError as exc:  # the old side does not load or render: compared with nothing
        why = f"the matrix at {sha[:12]} does not render: {exc.problems[0].message}"
        return tuple(Affected(n, why) for n in names)
    old = {v.name: v for v in rendered}
    new = render(checked, revision, registry).variants
    out = []
    for v in new:
        reason = _difference(old.get(v.name), v)
        if reason:
            out.append(Affected(v.name, reason))
    return tuple(out)


# Labels that name the commit itself: every commit has its own, and they alone do not make a change.
_COMMIT_LABELS = ("org.opencontainers.image.revision", "org.opencontainers.image.created")


def _image_labels(v: RenderedVariant) -> dict[str, str]:
    return {k: value for k, value in v.labels if k not in _COMMIT_LABELS}


def _in_context(v: RenderedVariant) -> dict[str, tuple[bytes, bool]]:
    """Its files by their path in its context (the context's directory is named by their hash)."""
    cut = len(v.context) + 1
    return {f.path[cut:]: (f.content, f.executable) for f in v.files}


def _difference(old: RenderedVariant | None, new: RenderedVariant) -> str | None:
    if old is None:
        return "a new variant"
    if old.base_ref != new.base_ref:
        return f"its base is {new.base_ref} (was {old.base_ref})"
    if old.build_args != new.build_args:
        return "its build arguments differ"
    if _image_labels(old) != _image_labels(new):
        return "its image labels differ"
    before = _in_context(old)
    after = _in_context(new)
    differing = sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))
    if differing:
        more = f" and {len(differing) - 1} more" if len(differing) > 1 else ""
        return f"build/{new.name}/{differing[0]} differs{more}"
    return None
