"""buildtool: matrix -> plan -> policy -> render -> build -> smoke -> report -> release -> deploy,
for RunPod images.

The library API: `buildtool.api` runs the pipeline up to one stage per function, reading one
`Options`; its results are named (`Checked`, `Released`, ...). Errors are `BuildtoolError`s with the
exit code the CLI gives them. Names are imported on first use, so that `import buildtool` (and the
CLI's `--help`) stays quick.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    "BuildResult",
    "BuildtoolError",
    "Checked",
    "CheckedPlan",
    "DeploySpecs",
    "Deployed",
    "Matrix",
    "Options",
    "Plan",
    "Problem",
    "Released",
    "Reported",
    "Variant",
    "api",
    "check_plan",
    "load_matrix",
    "make_plan",
]

_WHERE = {
    "BuildResult": "buildtool.build.result",
    "BuildtoolError": "buildtool.errors",
    "Problem": "buildtool.errors",
    "CheckedPlan": "buildtool.plan",
    "Plan": "buildtool.plan",
    "Variant": "buildtool.plan",
    "make_plan": "buildtool.plan",
    "Checked": "buildtool.api",
    "Deployed": "buildtool.api",
    "DeploySpecs": "buildtool.api",
    "Released": "buildtool.api",
    "Reported": "buildtool.api",
    "Matrix": "buildtool.config.model",
    "Options": "buildtool.config.options",
    "load_matrix": "buildtool.config.matrix",
    "check_plan": "buildtool.policy",
}

if TYPE_CHECKING:
    from buildtool import api
    from buildtool.api import Checked, Deployed, DeploySpecs, Released, Reported
    from buildtool.build.result import BuildResult
    from buildtool.config.matrix import load_matrix
    from buildtool.config.model import Matrix
    from buildtool.config.options import Options
    from buildtool.errors import BuildtoolError, Problem
    from buildtool.plan import CheckedPlan, Plan, Variant, make_plan
    from buildtool.policy import check_plan


def __getattr__(name: str) -> Any:
    if name == "api":
        return importlib.import_module("buildtool.api")
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'buildtool' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted(__all__)
