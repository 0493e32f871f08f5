"""GitHub Actions: the job matrices `plan` hands to the workflow, and the outputs file it writes them to.

The workflow reads `strategy.matrix: ${{ fromJSON(needs.plan.outputs.matrix) }}`. GitHub refuses a
matrix of more than 256 jobs when the run starts, after the plan job has passed, so `plan` refuses
it first, where the message can say which variants to narrow.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

from buildtool.build.result import BuildResult
from buildtool.errors import ConfigError, Location, Problem
from buildtool.files import write_atomically
from buildtool.plan import CheckedPlan

MAX_MATRIX_JOBS = 256  # GitHub's limit per strategy.matrix
OUTPUT_NAMES = ("matrix", "smoke-matrix")  # what `plan --github-output` sets; ci.yml reads them


def build_matrix(checked: CheckedPlan) -> dict[str, Any]:
    """The build job's matrix: one include entry per variant."""
    entries = []
    for cv in checked.variants:
        v = cv
        entries.append(
            {
                "variant": cv.name,
                "image": v.image.name,
                "base": v.base.name,
                "base_ref": v.base.ref,
                "torch": v.base.torch,
                "cuda": v.base.cuda,
                "gpus": [g.name for g in cv.targets],
                "runpod_gpu_ids": [g.runpod_id for g in cv.targets],
                "archs": list(cv.archs),
                "flash_attention": list(cv.flash_attention),
                "default": cv.name == checked.plan.default_variant,
                "refused_gpus": [
                    {"gpu": r.gpu.name, "arch": r.gpu.arch, "reason": r.reason} for r in cv.refused
                ],
            }
        )
    return {"include": entries}


def runner_labels(gpu_name: str) -> list[str]:
    """Self-hosted runner labels for a GPU of the table: register GPU runners with these."""
    return ["self-hosted", "linux", "x64", f"gpu-{gpu_name.lower()}"]


def smoke_matrix(checked: CheckedPlan) -> dict[str, Any]:
    """The smoke job's matrix: one entry per variant and GPU target, `runs-on: ${{ matrix.runner }}`."""
    entries = [
        {
            "variant": cv.name,
            "gpu": gpu.name,
            "arch": gpu.arch,
            "runpod_gpu_id": gpu.runpod_id,
            "runner": runner_labels(gpu.name),
        }
        for cv in checked.variants
        for gpu in cv.targets
    ]
    return {"include": entries}


def within_job_limit(name: str, made: dict[str, Any], checked: CheckedPlan) -> dict[str, Any]:
    """The matrix, or ConfigError when GitHub would refuse it for its size."""
    jobs = len(made["include"])
    if jobs <= MAX_MATRIX_JOBS:
        return made
    what = "variant" if name == "matrix" else "variant x GPU pair"
    raise ConfigError(
        Problem(
            f"the {name} for GitHub Actions has {jobs} jobs (one per {what}); GitHub refuses a matrix "
            f"of more than {MAX_MATRIX_JOBS} when the workflow starts",
            Location(checked.plan.matrix.path),
            hint="narrow the matrix (exclude: entries, fewer bases or GPUs), or give each workflow "
            "run a share with --select, e.g. --select 'worker-*'",
        )
    )


def matrix(checked: CheckedPlan, name: str) -> dict[str, Any]:
    """One matrix the workflow reads, by output name, within GitHub's job limit."""
    made = build_matrix(checked) if name == "matrix" else smoke_matrix(checked)
    return within_job_limit(name, made, checked)


def write_outputs(outputs: dict[str, str], path: Path | None = None) -> Path:
    """Append step outputs to $GITHUB_OUTPUT, each between delimiters no value contains (GitHub's
    multi-line syntax); the whole text in one write, so a failure leaves no half an output."""
    if path is None:
        value = os.environ.get("GITHUB_OUTPUT")
        if not value:
            raise ConfigError(
                Problem(
                    "--github-output, but $GITHUB_OUTPUT is not set",
                    hint="it is set in a GitHub Actions step; elsewhere use plan --json",
                )
            )
        path = Path(value)
    text = []
    for name, value in outputs.items():
        delimiter = f"EOF_{secrets.token_hex(8)}"
        while delimiter in value:  # pragma: no cover - 64 random bits
            delimiter = f"EOF_{secrets.token_hex(8)}"
        text.append(f"{name}<<{delimiter}\n{value}\n{delimiter}\n")
    previous = path.read_text() if path.is_file() else ""
    write_atomically(path, previous + "".join(text))
    return path


def outputs_for(checked: CheckedPlan) -> dict[str, str]:
    """The plan job's outputs: each matrix as one line of JSON."""
    return {name: json.dumps(matrix(checked, name), sort_keys=True) for name in OUTPUT_NAMES}


def _cell(text: str) -> str:
    """Text for one cell of a Markdown table: no line breaks, no column separators."""
    return " ".join(text.split()).replace("|", "\\|") or "-"


def build_summary(result: BuildResult) -> str:
    """The build's job summary (Markdown): each variant's status and, for a failure, the failed step
    with the installer's words for it (pip's or lockcheck's: the package), and the fix."""
    lines = [
        f"### buildtool build: {result.registry} @ {result.revision[:12]}",
        "",
        "| variant | status | digest | seconds | problem |",
        "| --- | --- | --- | --- | --- |",
    ]
    for v in result.variants:
        problem = ""
        if v.problem is not None:
            problem = v.problem.message + (f" (fix: {v.problem.hint})" if v.problem.hint else "")
        lines.append(
            f"| {_cell(v.variant)} | {v.status} | {_cell((v.digest or '')[:19])} | "
            f"{v.build_seconds:.1f} | {_cell(problem)} |"
        )
    lines += [f"- {_cell(error)}" for error in result.errors]
    return "\n".join(lines) + "\n\n"


def append_step_summary(text: str) -> Path | None:
    """Append to $GITHUB_STEP_SUMMARY when a GitHub Actions step runs this; else nothing."""
    value = os.environ.get("GITHUB_STEP_SUMMARY")
    if not value:
        return None
    with Path(value).open("a", encoding="utf-8") as handle:
        handle.write(text)
    return Path(value)
