"""Load the image's model the way its worker does (import the handler module: its module-level
load runs), call the handler with the image's sample input, and check what comes back."""

from __future__ import annotations

import importlib.util
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from smoke.expect import Expectations
from smoke.result import Check

# Files whose opening during a request means the handler loads its model per request.
MODEL_FILE_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".onnx")
MODEL_FILE_NAMES = ("config.json", "modules.json", "tokenizer.json", "tokenizer_config.json")


class _OpenWatcher:
    """Records model files the calling thread opens, through Python's audit hook (PEP 578).
    Audit hooks cannot be removed, so one is installed once and switched on and off."""

    _installed = False
    _active: threading.local = threading.local()

    def __init__(self) -> None:
        if not _OpenWatcher._installed:
            sys.addaudithook(_OpenWatcher._hook)
            _OpenWatcher._installed = True

    @staticmethod
    def _hook(event: str, args: tuple[Any, ...]) -> None:
        opened = getattr(_OpenWatcher._active, "opened", None)
        if opened is None or event != "open" or not args or not isinstance(args[0], str | Path):
            return
        path = str(args[0])
        if path.endswith(MODEL_FILE_SUFFIXES) or Path(path).name in MODEL_FILE_NAMES:
            opened.append(path)

    def __enter__(self) -> list[str]:
        _OpenWatcher._active.opened = []
        return _OpenWatcher._active.opened  # type: ignore[no-any-return]

    def __exit__(self, *exc: object) -> None:
        _OpenWatcher._active.opened = None


def import_handler(path: Path) -> ModuleType:
    """Import the handler module as the worker's `python handler.py` would, minus __main__."""
    sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(f"smoke_handler_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def find_array(output: Any, ndim: int) -> Any:
    """The first value of the handler's output that is a numeric array of `ndim` dimensions."""
    import numpy as np

    values = output.values() if isinstance(output, dict) else [output]
    for value in values:
        try:
            array = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            continue
        if array.ndim == ndim:
            return array
    return None


def checks(expect: Expectations) -> list[Check]:
    if expect.handler is None:
        skipped = "the image declares no handler (SMOKE_HANDLER): not a serverless worker"
        return [Check("model.load", "skipped", skipped), Check("model.handler", "skipped", skipped)]
    start = time.perf_counter()
    try:
        module = import_handler(expect.handler)
    except Exception as exc:  # the worker would crash the same way at start
        return [
            Check(
                "model.load",
                "fail",
                f"importing {expect.handler} failed: {type(exc).__name__}: {exc}",
                time.perf_counter() - start,
            ),
            Check("model.handler", "skipped", "the handler module did not load"),
        ]
    load_seconds = time.perf_counter() - start
    results = [
        Check(
            "model.load",
            "pass",
            f"{expect.handler} imported (model loaded) in {load_seconds:.2f} s",
            load_seconds,
            {"load_seconds": round(load_seconds, 3)},
        )
    ]
    results.append(call_handler(getattr(module, "handler", None), expect))
    return results


def call_handler(handler: Callable[[dict[str, Any]], Any] | None, expect: Expectations) -> Check:
    import numpy as np

    name = "model.handler"
    if not callable(handler):
        return Check(name, "fail", "the handler module defines no handler(job) function")
    job = {"id": "smoke", "input": expect.sample_input or {}}
    watcher = _OpenWatcher()
    start = time.perf_counter()
    try:
        with watcher as opened:
            output = handler(job)
    except Exception as exc:
        return Check(name, "fail", f"handler raised {type(exc).__name__}: {exc}", time.perf_counter() - start)
    seconds = time.perf_counter() - start
    data: dict[str, Any] = {"seconds": round(seconds, 4)}
    if opened:
        return Check(
            name,
            "fail",
            f"the handler opened model files during the request ({opened[0]}, "
            f"{len(opened)} in all): it loads its model per request; load it once at module level",
            seconds,
            {**data, "opened": opened[:10]},
        )
    if isinstance(output, dict) and output.get("error"):
        return Check(name, "fail", f"the handler answered an error: {output['error']}", seconds, data)
    if expect.output_shape is None:
        return Check(name, "pass", "the handler answered (no output shape declared)", seconds, data)
    array = find_array(output, len(expect.output_shape))
    if array is None:
        return Check(
            name, "fail", f"no {len(expect.output_shape)}-D numeric array in the output", seconds, data
        )
    data["shape"] = list(array.shape)
    if tuple(array.shape) != expect.output_shape:
        return Check(
            name, "fail", f"output shape {tuple(array.shape)}, expected {expect.output_shape}", seconds, data
        )
    if not np.isfinite(array).all():
        return Check(name, "fail", "the output holds NaN or infinity", seconds, data)
    return Check(
        name, "pass", f"output {tuple(array.shape)}, finite, in {seconds * 1000:.0f} ms", seconds, data
    )
