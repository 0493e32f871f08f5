"""The library API, kept apart from the CLI: each function runs the pipeline up to one stage.

matrix -> plan -> policy -> render   (build, smoke, report and release follow in their modules)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from buildtool.errors import PolicyError
from buildtool.matrix import load_matrix
from buildtool.naming import Revision, current_revision
from buildtool.plan import make_plan
from buildtool.policy import CheckedPlan, check_plan
from buildtool.render import Rendering, check_rendering, render_checked
from buildtool.render import render as render_in_memory


@dataclass(frozen=True)
class RenderOptions:
    registry: str | None = None  # None: $REGISTRY, then matrix.yaml's registry
    revision: Revision | None = None  # None: the matrix repository's HEAD
    build_dir: Path | None = None  # None: build/ next to matrix.yaml


def plan_and_check(matrix_path: Path, select: tuple[str, ...] = ()) -> CheckedPlan:
    """Load, expand and apply every plan-level policy; raise PolicyError on any error finding."""
    checked = check_plan(make_plan(load_matrix(matrix_path), select))
    if checked.errors:
        raise PolicyError(f.problem for f in checked.errors)
    return checked


def build_dir_for(matrix_path: Path, options: RenderOptions) -> Path:
    return options.build_dir or matrix_path.parent / "build"


def _registry(checked: CheckedPlan, options: RenderOptions) -> str:
    return options.registry or os.environ.get("REGISTRY") or checked.plan.matrix.registry


def _revision(matrix_path: Path, options: RenderOptions) -> Revision:
    return options.revision or current_revision(matrix_path.resolve().parent)


def check(
    matrix_path: Path, select: tuple[str, ...] = (), options: RenderOptions = RenderOptions()
) -> tuple[CheckedPlan, Rendering]:
    """Everything render does except writing: plan policies and rendered-Dockerfile policies."""
    checked = plan_and_check(matrix_path, select)
    revision = options.revision or Revision("0" * 40, dirty=False)  # content checks need no real commit
    rendering = render_in_memory(checked, revision, _registry(checked, options))
    errors = [
        f
        for f in check_rendering(rendering, checked, build_dir_for(matrix_path, options))
        if f.severity == "error"
    ]
    if errors:
        raise PolicyError(f.problem for f in errors)
    return checked, rendering


def render(
    matrix_path: Path, select: tuple[str, ...] = (), options: RenderOptions = RenderOptions()
) -> tuple[CheckedPlan, Rendering]:
    checked = plan_and_check(matrix_path, select)
    rendering = render_checked(
        checked,
        _revision(matrix_path, options),
        _registry(checked, options),
        build_dir_for(matrix_path, options),
    )
    return checked, rendering
