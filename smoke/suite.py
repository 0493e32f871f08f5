"""Run every check and gather one SuiteResult. A check that raises becomes a failed check."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import time
import traceback
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from smoke.budget import UNLIMITED, Budget
from smoke.expect import Expectations
from smoke.result import Check, SuiteResult
from smoke.selection import (
    ENVIRONMENT,
    EVERY,
    KERNEL_GROUPS,
    MODEL_IMPORTS,
    MODEL_IN_PROCESS,
    MODEL_SERVE,
    Selection,
    catalogue,
)


def host_info() -> dict[str, Any]:
    import torch

    from smoke.checks.environment import host_driver_version

    info: dict[str, Any] = {
        "hostname": platform.node(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": "cpu",
    }
    commit = smoke_commit()
    if commit:
        info["commit"] = commit
    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability()
        info.update(
            device=torch.cuda.get_device_name(), arch=f"sm_{major}{minor}", driver=host_driver_version()
        )
    return info


def smoke_commit() -> str | None:
    """The commit the suite ran from: $SMOKE_COMMIT, else the git checkout it lives in (a bare GPU
    host runs it from a clone; in an image the runner stamps the build's commit instead). With git,
    "-dirty" marks uncommitted changes; without it (a bare Python image), HEAD is read from .git."""
    if os.environ.get("SMOKE_COMMIT"):
        return os.environ["SMOKE_COMMIT"]
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").is_dir():
        return None
    if shutil.which("git") is not None:
        git = ["git", "-c", "safe.directory=*", "-C", str(root)]
        try:
            head = subprocess.run(
                [*git, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
            )
            dirty = subprocess.run(
                [*git, "status", "--porcelain", "--untracked-files=no"],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            )
            return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
        except (OSError, subprocess.SubprocessError):
            pass
    return _head_from_files(root / ".git")


def _head_from_files(git_dir: Path) -> str | None:
    try:
        head = (git_dir / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head or None
        ref = head.removeprefix("ref: ")
        if (git_dir / ref).is_file():
            return (git_dir / ref).read_text().strip()
        packed = git_dir / "packed-refs"
        for line in packed.read_text().splitlines() if packed.is_file() else []:
            if line.endswith(f" {ref}"):
                return line.split()[0]
    except OSError:
        return None
    return None


def _guarded(group: str, run: Callable[[], list[Check]]) -> list[Check]:
    try:
        return run()
    except Exception as exc:  # a crashing check is a failed check, with its traceback
        return [
            Check(
                f"{group}.crashed",
                "fail",
                f"{type(exc).__name__}: {exc}",
                data={"traceback": traceback.format_exc()[-4000:]},
            )
        ]


def check_names(
    expect: Expectations, *, model: bool = True, attention: bool = True, bench: bool = False
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The names a run can report, and the groups whose names it cannot know. A kernels lock that
    does not read is the image's defect, which the attention checks report as a failed check: here
    its kernel names are left open, not turned into a refusal of the options."""
    from smoke.checks.kernels import read_lock

    try:
        kernels = [entry.name for entry in read_lock(expect.kernels_lock)]
    except (OSError, ValueError, KeyError, TypeError):
        return catalogue((), model=model, attention=attention, bench=bench), KERNEL_GROUPS
    return catalogue(kernels, model=model, attention=attention, bench=bench), ()


def run_suite(
    expect: Expectations,
    *,
    model: bool = True,
    attention: bool = True,
    quick: bool = False,
    bench: bool = False,
    only: Selection = EVERY,
    budget: Budget = UNLIMITED,
) -> SuiteResult:
    """Every check, or (`only`) the selected ones: a part with no selected check does not run, nor
    one that would start after the `budget` is spent (its checks are reported skipped)."""
    from smoke.checks import attention as attention_checks
    from smoke.checks import environment, serve
    from smoke.checks import model as model_checks

    def part(group: str, names: tuple[str, ...], run: Callable[[], list[Check]]) -> list[Check]:
        if not only.any(names):
            return []
        if budget.spent():
            return budget.skipped(names)
        return _guarded(group, run)

    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    began = time.perf_counter()
    checks: list[Check] = []
    checks += part("environment", ENVIRONMENT, lambda: environment.checks(expect))
    if model:
        # The real entry first, in its own process (which it frees): then the in-process checks.
        checks += part("model", MODEL_IMPORTS, lambda: model_checks.imports(expect))
        checks += part("model", MODEL_SERVE, lambda: serve.checks(expect))
        checks += part("model", MODEL_IN_PROCESS, lambda: model_checks.checks(expect))
    if attention:
        checks += _guarded("attention", lambda: attention_checks.checks(expect, quick, only, budget))
    benchmark = None
    if bench:
        from smoke import bench as benchmark_checks

        ran = _guarded("bench", lambda: benchmark_checks.checks(expect, quick, only, budget))
        if ran:
            checks += ran
            benchmark = benchmark_checks.section(quick)
    # A part runs whole (the model's load serves three checks): report what was selected, and crashes.
    kept = tuple(c for c in checks if only.selects(c.name) or c.name.endswith(".crashed"))
    return SuiteResult(
        expect.variant,
        host_info(),
        started,
        time.perf_counter() - began,
        kept,
        benchmark,
        only.patterns,
        budget.seconds,
        {"skip_model": not model, "skip_attention": not attention, "quick": quick, "bench": bench},
    )
