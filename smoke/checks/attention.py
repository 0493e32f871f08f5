"""Attention kernels for correctness and speed: torch SDPA with each backend forced and as torch
dispatches it, and the FlashAttention kernels baked into the image (loaded through `kernels`, offline).

Each check runs in a process of its own (`python -m smoke.checks.attention SPEC`), so that a kernel
that faults (illegal memory access, abort) fails its own check and leaves the CUDA context of the
others alone. Each case draws fresh random inputs and is judged as FlashAttention's tests judge
(smoke/checks/numerics.py). Out of memory at a shape is "unsupported at this shape", with torch's
message, not a failure. The backend that ran is observed, not assumed: the profiler's operator names
for each case (`dispatch` in the JSON). On a GPU, time comes from CUDA events after warm-up, reported
as TFLOP/s.
"""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from smoke.budget import UNLIMITED, Budget, cut_short
from smoke.checks.dispatch import expected_backend, observed_backends
from smoke.checks.kernels import KernelEntry, load_kernel, read_lock
from smoke.checks.numerics import attention_math, cases, judge
from smoke.expect import Expectations
from smoke.result import Check, guarded
from smoke.selection import EVERY, EXPECTED_BACKEND, Selection

SDPA_BACKENDS = {
    "math": "MATH",
    "flash": "FLASH_ATTENTION",
    "efficient": "EFFICIENT_ATTENTION",
    "cudnn": "CUDNN_ATTENTION",
}
UNSUPPORTED_MARKS = ("No viable backend", "No available kernel", "not supported", "only supports")
CHECK_TIMEOUT = 1800  # seconds for one check's process


def _time(run: Callable[[], Any], on_gpu: bool, iterations: int) -> float:
    """Seconds per call, after one warm-up call."""
    import torch

    run()
    if on_gpu:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        for _ in range(iterations):
            run()
        end.record()
        torch.cuda.synchronize()
        return float(start.elapsed_time(end)) / 1000 / iterations
    began = time.perf_counter()
    for _ in range(iterations):
        run()
    return (time.perf_counter() - began) / iterations


# An attention implementation: (q, k, v in (batch, heads, seq, dim), causal) -> output in the same layout.
# Causal with q_len != k_len is aligned to the bottom right (numerics.causal_mask).
Attention = Callable[[Any, Any, Any, bool], Any]


def is_out_of_memory(exc: BaseException) -> bool:
    return type(exc).__name__ == "OutOfMemoryError" or "out of memory" in str(exc).lower()


def exercise(name: str, attention: Attention, device: str, quick: bool) -> Check:
    """Run every case through `attention`; fail on any output over its bound or not finite."""
    import torch

    on_gpu = device == "cuda"
    results: list[dict[str, Any]] = []
    unsupported: list[str] = []
    out_of_memory: list[dict[str, str]] = []
    failures: list[str] = []
    began = time.perf_counter()
    for case in cases(on_gpu, quick):
        dtype = getattr(torch, case.dtype)
        causal = case.causal
        q = torch.randn((case.batch, case.heads, case.q_len, case.head_dim), device=device, dtype=dtype)
        k = torch.randn((case.batch, case.kv_heads, case.k_len, case.head_dim), device=device, dtype=dtype)
        v = torch.randn((case.batch, case.kv_heads, case.k_len, case.head_dim), device=device, dtype=dtype)
        try:

            def call(q: Any = q, k: Any = k, v: Any = v, causal: bool = causal) -> Any:
                return attention(q, k, v, causal)

            out, dispatch = observed_backends(call)
        except Exception as exc:
            if is_out_of_memory(exc):
                out_of_memory.append({"case": case.label(), "error": str(exc).splitlines()[0][:300]})
                if on_gpu:
                    torch.cuda.empty_cache()
                continue
            if isinstance(exc, (RuntimeError, ValueError, TypeError, NotImplementedError)) and any(
                mark in str(exc) for mark in UNSUPPORTED_MARKS
            ):
                unsupported.append(case.label())
                continue
            failures.append(f"{case.label()}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
            continue
        verdict = judge(
            out,
            attention_math(q, k, v, case.causal),
            attention_math(q, k, v, case.causal, dtype),
            case.k_len,
        )
        entry: dict[str, Any] = {
            "case": case.label(),
            "max_error": verdict.max_error,
            "bound": verdict.bound,
            "dispatch": dispatch,
        }
        if not verdict.passed:
            failures.append(f"{case.label()}: {verdict.why}")
        elif on_gpu or not quick:
            seconds = _time(call, on_gpu, 10 if on_gpu else 1)
            entry["tflops"] = case.flops / seconds / 1e12
        results.append(entry)
    return summarise(name, device, results, unsupported, out_of_memory, failures, time.perf_counter() - began)


def summarise(
    name: str,
    device: str,
    results: list[dict[str, Any]],
    unsupported: list[str],
    out_of_memory: list[dict[str, str]],
    failures: list[str],
    seconds: float,
) -> Check:
    data: dict[str, Any] = {
        "device": device,
        "cases": results,
        "unsupported": unsupported,
        "out_of_memory": out_of_memory,
        "dispatch": sorted({b for r in results for b in r["dispatch"]}),
    }
    rates = [r["tflops"] for r in results if "tflops" in r]
    if rates:
        data["best_tflops"] = max(rates)
    if failures:
        total = len(results) + len(failures)
        message = f"{len(failures)} of {total} cases failed: {failures[0]}"
        return Check(name, "fail", message, seconds, {**data, "failures": failures})
    if not results:
        why = unsupported[0] if unsupported else (out_of_memory[0]["error"] if out_of_memory else "")
        return Check(name, "skipped", f"not available on {device}: {why}", seconds, data)
    best = f", best {data['best_tflops']:.1f} TFLOP/s" if rates else ""
    worst = max(r["max_error"] / r["bound"] for r in results if r["bound"] > 0)
    extra = "".join(
        f", {len(items)} shapes {what}"
        for items, what in ((unsupported, "unsupported"), (out_of_memory, "out of memory"))
        if items
    )
    message = (
        f"{len(results)} cases within bounds (worst at {worst:.0%} of its bound){best}{extra}; "
        f"ran {data['dispatch']}"
    )
    return Check(name, "pass", message, seconds, data)


def sdpa_has_enable_gqa() -> bool:
    """torch 2.5 added enable_gqa; on older torch the grouped keys are repeated here instead."""
    import torch

    try:
        return "enable_gqa" in inspect.signature(torch.nn.functional.scaled_dot_product_attention).parameters
    except (TypeError, ValueError):  # a builtin without a signature: its docstring lists the arguments
        return "enable_gqa" in (torch.nn.functional.scaled_dot_product_attention.__doc__ or "")


def sdpa(backend: str | None) -> Attention:
    """torch SDPA with one backend forced, or (None) as torch dispatches it."""
    import torch

    gqa = sdpa_has_enable_gqa()

    def call(q: Any, k: Any, v: Any, causal: bool) -> Any:
        extra: dict[str, Any] = {}
        if k.shape[1] != q.shape[1]:
            if gqa:
                extra["enable_gqa"] = True
            else:
                groups = q.shape[1] // k.shape[1]
                k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        if causal and q.shape[-2] != k.shape[-2]:
            from torch.nn.attention.bias import causal_lower_right

            extra["attn_mask"] = causal_lower_right(q.shape[-2], k.shape[-2])
            causal = False
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal, **extra)

    if backend is None:
        return call
    from torch.nn.attention import SDPBackend, sdpa_kernel

    chosen = getattr(SDPBackend, SDPA_BACKENDS[backend])

    def forced(q: Any, k: Any, v: Any, causal: bool) -> Any:
        with sdpa_kernel([chosen]):
            return call(q, k, v, causal)

    return forced


def kernel_attention(module: Any, function: str) -> Attention:
    call = getattr(module, function)

    def run(q: Any, k: Any, v: Any, causal: bool) -> Any:
        # FlashAttention takes (batch, seq, heads, dim); SDPA's layout is (batch, heads, seq, dim).
        out = call(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), causal=causal)
        out = out[0] if isinstance(out, tuple) else out
        return out.transpose(1, 2)

    return run


def kernel_check(entry: KernelEntry, device: str, arch: str | None, quick: bool) -> Check:
    name = f"attention.kernel.{entry.name}"
    if entry.archs and arch not in entry.archs:
        return Check(
            name,
            "skipped",
            f"{entry.repo_id} runs on {', '.join(entry.archs)}; this device is {arch or 'a CPU'}",
            data=asdict(entry),
        )
    try:
        module = load_kernel(entry)
    except Exception as exc:
        return Check(
            name,
            "fail",
            f"{entry.repo_id}@{entry.revision} is not baked into the image "
            f"({type(exc).__name__}: {str(exc)[:200]}). Bake it: list it in the image's kernels lock "
            "and rebuild (buildtool build), or pass its directory as the named build context "
            "'kernels-local' (bake: contexts.kernels-local=<dir>)",
            data=asdict(entry),
        )
    check = exercise(name, kernel_attention(module, entry.function), device, quick)
    return Check(
        check.name, check.status, check.message, check.seconds, {**check.data, "kernel": asdict(entry)}
    )


def run_one(spec: dict[str, Any], quick: bool) -> Check:
    """One check in this process: {"sdpa": backend or null} or {"kernel": KernelEntry fields}."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if "kernel" in spec:
        arch = None
        if device == "cuda":
            major, minor = torch.cuda.get_device_capability()
            arch = f"sm_{major}{minor}"
        fields = spec["kernel"]
        return kernel_check(KernelEntry(**{**fields, "archs": tuple(fields["archs"])}), device, arch, quick)
    backend = spec["sdpa"]
    return exercise(f"attention.sdpa.{backend or 'default'}", sdpa(backend), device, quick)


def isolated(
    name: str,
    spec: dict[str, Any],
    quick: bool,
    module: str = "smoke.checks.attention",
    budget: Budget = UNLIMITED,
) -> Check:
    """`module`'s `run_one` in a child process: a crash, abort or hang fails this check only. It does
    not start once the budget is spent, and is stopped (skipped, not judged) when it outlives it."""
    if budget.spent():
        return budget.skipped([name])[0]
    args = [sys.executable, "-m", module, json.dumps(spec)] + (["--quick"] if quick else [])
    timeout = budget.timeout(CHECK_TIMEOUT)
    began = time.perf_counter()
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        if timeout < CHECK_TIMEOUT:
            why = f"stopped after {timeout:.0f} s: the --budget of {budget.seconds:g} s ran out; not judged"
            return Check(name, "skipped", why, timeout, {"budget": True})
        return Check(name, "fail", f"did not finish in {CHECK_TIMEOUT} s (a hung kernel?)", CHECK_TIMEOUT)
    seconds = time.perf_counter() - began
    last = done.stdout.strip().splitlines()[-1:] if done.stdout.strip() else []
    if done.returncode == 0 and last:
        document = json.loads(last[0])
        return Check(**document)
    how = f"signal {-done.returncode}" if done.returncode < 0 else f"exit code {done.returncode}"
    tail = done.stderr.strip().splitlines()[-3:]
    return Check(
        name,
        "fail",
        f"its process died ({how}): {' | '.join(tail)[-300:] or 'no output'}",
        seconds,
        {"stderr": done.stderr[-4000:]},
    )


def checks(
    expect: Expectations, quick: bool = False, only: Selection = EVERY, budget: Budget = UNLIMITED
) -> list[Check]:
    """Each selected check in its own process; the expected-backend check needs every other one."""
    import torch

    arch = None
    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability()
        arch = f"sm_{major}{minor}"
    entries = read_lock(expect.kernels_lock)
    judged = only.selects(EXPECTED_BACKEND)
    specs: list[tuple[str, dict[str, Any]]] = [(f"attention.sdpa.{b}", {"sdpa": b}) for b in SDPA_BACKENDS]
    specs.append(("attention.sdpa.default", {"sdpa": None}))
    specs += [(f"attention.kernel.{entry.name}", {"kernel": asdict(entry)}) for entry in entries]
    results = [
        isolated(name, spec, quick, budget=budget) for name, spec in specs if judged or only.selects(name)
    ]
    if judged and any(cut_short(r) for r in results):
        results += budget.skipped([EXPECTED_BACKEND])  # its evidence is incomplete: not judged
    elif judged:
        cudnn = torch.backends.cudnn.version() if arch else None  # the runtime cuDNN torch loaded
        judging = results  # every other check's outcome, as it is now
        results.append(
            guarded(EXPECTED_BACKEND, lambda: expected_backend(judging, entries, expect, arch, cudnn))
        )
    return results


def child_main(run: Callable[[dict[str, Any], bool], Check], argv: list[str]) -> int:
    """The child process of `isolated`: one check from its SPEC, printed as the JSON line it reads."""
    check = run(json.loads(argv[0]), "--quick" in argv[1:])
    print(json.dumps(asdict(check)))
    return 0


if __name__ == "__main__":
    sys.exit(child_main(run_one, sys.argv[1:]))
