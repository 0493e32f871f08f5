"""`buildtool lock` and `buildtool lock-deps`: record what moving names resolve to today (base
digests and kernel commits in matrix.lock; each image's Python packages with hashes)."""

from __future__ import annotations

from pathlib import Path

from buildtool.build.engine import BuildxEngine
from buildtool.config.lock import Lock, lock_path_for, read_lock_file, write_lock
from buildtool.config.matrix import load_matrix
from buildtool.errors import ConfigError, EngineError, Location, PolicyError, Problem, did_you_mean
from buildtool.plan import make_plan
from buildtool.policy import check_plan


def lock(
    matrix_path: Path, select: tuple[str, ...] = (), bases: bool = True, kernels: bool = True
) -> tuple[Path, Lock]:
    """Resolve each base of the selected variants to the digest the engine has (pulling it when it
    has none), and each Hub kernel they bake to the commit its revision names now; write
    matrix.lock once everything resolved. `build --locked` builds FROM the digests; every build
    bakes the recorded commits."""
    from buildtool.locks import hub

    path = lock_path_for(matrix_path)
    current = read_lock_file(path)
    matrix = load_matrix(matrix_path)
    # Resolved against the matrix's own revisions: what is recorded now must not shadow them.
    checked = check_plan(make_plan(matrix, select))
    if checked.errors:
        raise PolicyError(f.problem for f in checked.errors)
    digests = dict(current.bases)
    if bases:
        engine = BuildxEngine()
        for ref in sorted({cv.base.ref for cv in checked.variants}):
            digests[ref] = _base_digest(engine, ref, matrix_path)
    commits = dict(current.kernels)
    if kernels:
        wanted = {(pin.repo_id, pin.revision) for cv in checked.variants for pin in cv.kernels}
        for repo_id, revision in sorted(wanted):
            commits[(repo_id, revision)] = hub.resolve_commit(repo_id, revision)
    locked = Lock(digests, commits)
    write_lock(path, locked)
    return path, locked


def _base_digest(engine: BuildxEngine, ref: str, matrix_path: Path) -> str:
    digest = engine.local_image_digest(ref)
    if digest is None:
        error = engine.pull(ref)
        digest = engine.local_image_digest(ref)
        if digest is None:
            raise EngineError(
                Problem(
                    f"cannot resolve base {ref}: {error}",
                    Location(matrix_path),
                    hint="check the reference, `docker login`, and the network",
                )
            )
    return digest


def lock_dependencies(matrix_path: Path, images: tuple[str, ...] = (), upgrade: bool = False) -> list[Path]:
    """Write images/<name>/requirements.lock for each image (or those named) from requirements.in,
    keeping the locked versions that still fit (`upgrade`: the newest)."""
    from buildtool.locks import deps

    plan = make_plan(load_matrix(matrix_path))
    known = sorted({job.image for job in deps.lock_jobs(plan)})
    for name in images:
        if name not in known:
            raise ConfigError(
                Problem(
                    f"no image '{name}' with a {deps.INPUT_NAME}",
                    Location(matrix_path),
                    hint=did_you_mean(name, known) or f"images with one: {', '.join(known) or 'none'}",
                )
            )
    return deps.write_locks(plan, images, upgrade)
