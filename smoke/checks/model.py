"""Load the image's model the way its worker does (import the handler module: its module-level
load runs), call the handler with the image's sample input, and check what comes back."""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from smoke.checks import outputs, serve
from smoke.expect import Expectations
from smoke.result import Check, guarded

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


def collect(handler: Callable[[dict[str, Any]], Any], job: dict[str, Any]) -> tuple[Any, int | None]:
    """Call the handler as the RunPod SDK does: a function's return value; a generator's or an
    async generator's yields, as a list (with their count); a coroutine's result."""
    if inspect.isasyncgenfunction(handler):

        async def drain() -> list[Any]:
            return [item async for item in handler(job)]

        items = asyncio.run(drain())
        return items, len(items)
    if inspect.isgeneratorfunction(handler):
        items = list(handler(job))
        return items, len(items)
    output = handler(job)
    if inspect.iscoroutine(output):
        output = asyncio.run(output)
    return output, None


def imports(expect: Expectations) -> list[Check]:
    """model.imports: each module the image declares imports, in a fresh interpreter (on any device:
    a CPU can still prove the install)."""
    if not expect.imports:
        return []
    started, failed, seconds = time.perf_counter(), [], {}
    for name in expect.imports:
        began = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", f"import {name}"], capture_output=True, text=True, timeout=600
        )
        seconds[name] = round(time.perf_counter() - began, 2)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            failed.append(f"{name}: {last}")
    took = time.perf_counter() - started
    if failed:
        return [Check("model.imports", "fail", "; ".join(failed), took, {"seconds": seconds})]
    said = ", ".join(f"{n} ({s:g} s)" for n, s in seconds.items())
    return [Check("model.imports", "pass", f"imported {said}", took, {"seconds": seconds})]


def checks(expect: Expectations) -> list[Check]:
    if expect.handler is None:
        skipped = "the image declares no handler (SMOKE_HANDLER): not a serverless worker"
        return [Check("model.load", "skipped", skipped), Check("model.handler", "skipped", skipped)]
    start = time.perf_counter()
    try:
        with _OpenWatcher() as opened_at_load:
            module = import_handler(expect.handler)
    except Exception as exc:  # the worker would crash the same way at start
        said = f"{type(exc).__name__}: {exc}"
        if serve.needs_gpu_here(expect, said):
            reason = serve.gpu_reason(said)
            return [
                Check("model.load", "skipped", reason, time.perf_counter() - start),
                Check("model.handler", "skipped", reason),
            ]
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
    # Each on its own: one that raises fails alone, with its traceback's last line.
    results = [guarded("model.load", lambda: loaded(expect, load_seconds, opened_at_load))]
    answered = guarded("model.handler", lambda: call_handler(getattr(module, "handler", None), expect))
    results.append(answered)
    results.append(guarded("model.cuda", lambda: ran_on_cuda(expect, answered)))
    return results


def ran_on_cuda(expect: Expectations, answered: Check) -> Check:
    """model.cuda (GPU only): where a GPU is, the worker's model ran on it. The in-process load and
    request must have put tensors on the GPU (torch's allocator saw them), or the worker quietly
    served from the CPU (a DEVICE that stayed "cpu", a model never moved)."""
    name = "model.cuda"
    try:
        import torch
    except ImportError:
        return Check(name, "skipped", "no torch here: nothing can run on CUDA")
    if not torch.cuda.is_available():
        return Check(name, "skipped", "no CUDA device: runs where a GPU is")
    if answered.status != "pass":
        return Check(name, "skipped", "the handler did not answer")
    if expect.requires_gpu:
        return Check(name, "skipped", "a model server runs the model in its own process (model.serve)")
    peak = int(torch.cuda.max_memory_allocated())
    data = {"peak_cuda_bytes": peak, "device": torch.cuda.get_device_name()}
    if peak == 0:
        said = "the worker answered without allocating CUDA memory: its model ran on the CPU"
        return Check(name, "fail", said, data=data)
    said = f"the model ran on {data['device']}: {peak / 1e6:.1f} MB of CUDA memory at peak"
    return Check(name, "pass", said, data=data)


def loaded(expect: Expectations, seconds: float, opened: list[str]) -> Check:
    """model.load: the import loaded the model; with a volume mounted, from the volume."""
    data: dict[str, Any] = {"load_seconds": round(seconds, 3)}
    said = f"{expect.handler} imported (model loaded) in {seconds:.2f} s"
    if expect.model_volume is None:
        return Check("model.load", "pass", said, seconds, data)
    volume = expect.model_volume.rstrip("/") + "/"
    from_volume = sorted({path for path in opened if path.startswith(volume)})
    data["opened_from_volume"] = from_volume[:20]
    if not opened:  # a server process loads it (vLLM): model.serve proves it answers from there
        return Check("model.load", "pass", f"{said}; no model file opened in this process", seconds, data)
    if not from_volume:
        elsewhere = f" (it opened {opened[0]})" if opened else ""
        return Check(
            "model.load",
            "fail",
            f"the worker did not load its model from the volume at {volume}{elsewhere}",
            seconds,
            data,
        )
    return Check(
        "model.load", "pass", f"{said}, from the volume: {len(from_volume)} model files", seconds, data
    )


def call_handler(handler: Callable[[dict[str, Any]], Any] | None, expect: Expectations) -> Check:
    name = "model.handler"
    if not callable(handler):
        return Check(name, "fail", "the handler module defines no handler(job) function")
    job = {"id": "smoke", "input": expect.sample_input or {}}
    watcher = _OpenWatcher()
    start = time.perf_counter()
    try:
        with watcher as opened:
            output, yielded = collect(handler, job)
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
    if yielded == 0:
        return Check(name, "fail", "the handler is a generator that yielded nothing", seconds, data)
    passed, message, more = outputs.judge(output, expect)
    data.update(more)
    if yielded is not None:
        data["yielded"] = yielded
    return Check(name, "pass" if passed else "fail", f"{message}, in {seconds * 1000:.0f} ms", seconds, data)
