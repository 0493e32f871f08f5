"""Options, resolved once: the CLI builds one Options from its arguments (a library caller builds it
directly), and every stage reads it. Defaults are filled in here and nowhere else."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from buildtool.config.lock import lock_path_for
from buildtool.config.model import Matrix
from buildtool.naming import EMBEDDED_REGISTRY, Revision, check_registry

SAMPLES = Path("reports") / "samples"  # smoke results from GPU hosts, committed


def default_cache_dir() -> Path:
    """Where facts about layers are remembered across builds, build directories and clones: they are
    keyed by the layer's digest, so true wherever they were measured. $BUILDTOOL_CACHE_DIR, else
    $XDG_CACHE_HOME/buildtool, else ~/.cache/buildtool."""
    if os.environ.get("BUILDTOOL_CACHE_DIR"):
        return Path(os.environ["BUILDTOOL_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "buildtool"


@dataclass(frozen=True)
class Options:
    matrix_path: Path
    build_dir: Path  # build/ next to matrix.yaml unless given
    lock_path: Path  # matrix.lock next to matrix.yaml
    select: tuple[str, ...] = ()  # --select patterns; empty: every variant
    registry: str | None = None  # --registry; None: $REGISTRY, then matrix.yaml's, then the embedded one
    revision: Revision | None = None  # --commit; None: HEAD of the matrix's repository
    kernels_local: Path | None = None  # kernels for the bake step, as the named context kernels-local
    results: tuple[Path, ...] = field(default=())  # smoke results; empty: build/smoke/*.json + samples
    locked: bool = False  # build FROM matrix.lock's base digests
    allow_dirty: bool = False  # push -dirty tags from a worktree with changes
    jobs: int = 2  # variants built at once
    rebuild: bool = False  # build even a commit whose immutable tags the registry already holds
    cold: bool = False  # no build cache, no registry cache read, an empty layer cache; implies rebuild
    commit: str | None = None  # release: the commit to promote (default: the one the git tag names)
    dry_run: bool = False  # release: print what would move; move nothing
    cache_dir: Path = field(default_factory=default_cache_dir)  # layer facts (unpacked sizes, files)

    @classmethod
    def for_matrix(cls, matrix_path: Path, build_dir: Path | None = None, **given: Any) -> Options:
        """Options for `matrix_path`, with the defaults that depend on it filled in."""
        return cls(
            matrix_path=matrix_path,
            build_dir=build_dir or matrix_path.parent / "build",
            lock_path=lock_path_for(matrix_path),
            **given,
        )

    @property
    def root(self) -> Path:
        """The directory of matrix.yaml: the repository the images are built from."""
        return self.matrix_path.resolve().parent

    def but(self, **changed: Any) -> Options:
        return replace(self, **changed)

    def result_paths(self) -> tuple[Path, ...]:
        """The given results, else build/smoke/*.json then reports/samples/*.json, as they are now."""
        if self.results:
            return self.results
        return (
            *sorted((self.build_dir / "smoke").glob("*.json")),
            *sorted((self.root / SAMPLES).glob("*.json")),
        )

    def registry_for(self, matrix: Matrix) -> tuple[str, bool]:
        """The registry, and whether it is the embedded default (nothing configured)."""
        for value, source in (
            (self.registry, "--registry"),
            (os.environ.get("REGISTRY"), "$REGISTRY"),
            (matrix.registry, "registry"),  # checked with its line when the matrix loaded
        ):
            if value is not None and (value or source != "$REGISTRY"):  # an empty $REGISTRY is unset
                return check_registry(value, source), False
        return EMBEDDED_REGISTRY, True
