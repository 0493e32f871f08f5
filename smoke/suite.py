"""Run every check and gather one SuiteResult. A check that raises becomes a failed check."""

from __future__ import annotations

import platform
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from smoke.expect import Expectations
from smoke.result import Check, SuiteResult


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
    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability()
        info.update(
            device=torch.cuda.get_device_name(), arch=f"sm_{major}{minor}", driver=host_driver_version()
        )
    return info


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


def run_suite(
    expect: Expectations, *, model: bool = True, attention: bool = True, quick: bool = False
) -> SuiteResult:
    from smoke.checks import attention as attention_checks
    from smoke.checks import environment, serve
    from smoke.checks import model as model_checks

    started = datetime.now(UTC).isoformat(timespec="seconds")
    began = time.perf_counter()
    checks = _guarded("environment", lambda: environment.checks(expect))
    if model:
        # The real entry first, in its own process (which it frees): then the in-process checks.
        checks += _guarded("model", lambda: model_checks.imports(expect))
        checks += _guarded("model", lambda: serve.checks(expect))
        checks += _guarded("model", lambda: model_checks.checks(expect))
    if attention:
        checks += _guarded("attention", lambda: attention_checks.checks(expect, quick))
    return SuiteResult(expect.variant, host_info(), started, time.perf_counter() - began, tuple(checks))
