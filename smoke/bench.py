"""`python -m smoke --bench`: forward attention at the FlashAttention-3 paper's shapes, for every
backend the image has (each forced torch SDPA backend, the FlashAttention kernels of its lock).

Shapes: bf16 and fp16, head dim 64/128/256, sequence length 512 to 16k with batch x seqlen = 16k
tokens and hidden 2048 (heads = 2048 / head dim), causal and not. `--quick` runs the same code path at
shapes a CPU finishes in seconds. FLOPs are counted as the paper counts them (4 * batch * heads *
seqlen^2 * head dim, halved under a causal mask). Each case is timed after warm-up over repetitions
lasting at least MIN_TIMED_SECONDS (CUDA events on a GPU, one pair per call, read after one
synchronisation); the median and the spread are reported, and each median as a percentage of the
paper's figure (smoke/published.py). Correctness is judged per configuration at a small shape (the
fp32 reference at 16k does not fit), and each case's memory is estimated first, so that a shape that
cannot fit is skipped with the estimate instead of running the process out of memory.

Each backend runs in a process of its own (`python -m smoke.bench SPEC`): a kernel that faults
fails its own check only.
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from smoke import published
from smoke.bench_shapes import DTYPES, PAPER, QUICK, Shape, memory_free, memory_needed, shapes
from smoke.budget import UNLIMITED, Budget
from smoke.checks.attention import (
    SDPA_BACKENDS,
    UNSUPPORTED_MARKS,
    Attention,
    child_main,
    is_out_of_memory,
    isolated,
    kernel_attention,
    sdpa,
)
from smoke.checks.kernels import KernelEntry, load_kernel, read_lock
from smoke.checks.numerics import attention_math, judge
from smoke.expect import Expectations
from smoke.machine import machine
from smoke.result import Check
from smoke.selection import EVERY, Selection

MIN_TIMED_SECONDS = 0.1
MIN_REPETITIONS = 5
MAX_REPETITIONS = 10_000
WARMUP_CALLS = 2
MEMORY_HEADROOM = 0.85  # of what is free: allocator slack, the CUDA context, fragmentation
CORRECTNESS_SEQLEN = 512  # the judged shape: batch 1, 2 heads; the fp32 reference fits anywhere


def timed(run: Callable[[], Any], on_gpu: bool) -> dict[str, Any]:
    """Per-call seconds after warm-up, over repetitions lasting at least MIN_TIMED_SECONDS."""
    import torch

    for _ in range(WARMUP_CALLS):
        run()
    if on_gpu:
        torch.cuda.synchronize()
    began = time.perf_counter()
    run()
    if on_gpu:
        torch.cuda.synchronize()
    estimate = max(time.perf_counter() - began, 1e-6)
    seconds: list[float] = []
    while sum(seconds) < MIN_TIMED_SECONDS and len(seconds) < MAX_REPETITIONS:
        wanted = (MIN_TIMED_SECONDS - sum(seconds)) / estimate
        count = min(MAX_REPETITIONS - len(seconds), max(MIN_REPETITIONS, math.ceil(wanted * 1.1)))
        if on_gpu:
            events = [
                (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                for _ in range(count)
            ]
            for start, end in events:
                start.record()
                run()
                end.record()
            torch.cuda.synchronize()
            seconds += [start.elapsed_time(end) / 1000 for start, end in events]
        else:
            for _ in range(count):
                began = time.perf_counter()
                run()
                seconds.append(time.perf_counter() - began)
        estimate = max(statistics.median(seconds), 1e-6)
    ordered = sorted(seconds)
    quartiles = statistics.quantiles(ordered, n=4) if len(ordered) > 1 else [ordered[0]] * 3
    return {
        "repetitions": len(seconds),
        "timed_seconds": round(sum(seconds), 6),
        "median": statistics.median(ordered),
        "min": ordered[0],
        "max": ordered[-1],
        "p25": quartiles[0],
        "p75": quartiles[2],
    }


def inputs(shape: Shape, device: str) -> tuple[Any, Any, Any]:
    import torch

    dtype = getattr(torch, shape.dtype)
    size = (shape.batch, shape.heads, shape.seqlen, shape.head_dim)
    q, k, v = (torch.randn(size, device=device, dtype=dtype) for _ in range(3))
    return q, k, v


def correctness(attention: Attention, shape: Shape, device: str) -> dict[str, Any]:
    """The configuration (dtype, head dim, mask) judged at a small shape against an fp32/fp64 reference."""
    import torch

    small = Shape(1, 2, min(CORRECTNESS_SEQLEN, shape.seqlen), shape.head_dim, shape.causal, shape.dtype)
    q, k, v = inputs(small, device)
    out = attention(q, k, v, small.causal)
    verdict = judge(
        out,
        attention_math(q, k, v, small.causal),
        attention_math(q, k, v, small.causal, getattr(torch, small.dtype)),
        small.seqlen,
    )
    return {
        "shape": small.label(),
        "passed": verdict.passed,
        "max_error": verdict.max_error,
        "bound": verdict.bound,
        "why": verdict.why,
    }


def significant(value: float) -> float:
    """Four significant digits: a CPU's 0.0004 TFLOP/s and a GPU's 612.3 alike."""
    return float(f"{value:.4g}")


def unsupported(exc: BaseException) -> bool:
    return isinstance(exc, (RuntimeError, ValueError, TypeError, NotImplementedError)) and any(
        mark in str(exc) for mark in UNSUPPORTED_MARKS
    )


def first_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:300]}"


def time_shape(attention: Attention, shape: Shape, device: str) -> dict[str, Any]:
    """`timed` on fresh inputs of `shape`, freed on return (before the next shape's memory estimate)."""
    q, k, v = inputs(shape, device)
    return timed(lambda: attention(q, k, v, shape.causal), device == "cuda")


def run_backend(
    name: str,
    attention: Attention,
    device: str,
    quick: bool,
    series: str | None,
    materialises_scores: bool,
    budget: Budget = UNLIMITED,
) -> Check:
    """Every shape through one backend: correctness per configuration, then the timing. No shape
    starts once the budget is spent: those left are skipped, with that reason."""
    import torch

    on_gpu = device == "cuda"
    began = time.perf_counter()
    cases: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    failures: list[str] = []
    judged: dict[tuple[int, bool, str], dict[str, Any]] = {}
    cut = 0  # shapes the budget left out
    for shape in shapes(quick):
        config = (shape.head_dim, shape.causal, shape.dtype)
        if budget.spent():
            skipped.append({"case": shape.label(), "why": budget.reason()})
            cut += 1
            continue
        try:
            if config not in judged:
                judged[config] = correctness(attention, shape, device)
                if not judged[config]["passed"]:
                    failures.append(f"{judged[config]['shape']}: {judged[config]['why']}")
            if not judged[config]["passed"]:
                continue
            needed, free = memory_needed(shape, materialises_scores), memory_free(device)
            if free is not None and needed > free * MEMORY_HEADROOM:
                skipped.append(
                    {
                        "case": shape.label(),
                        "why": f"needs about {needed / 2**30:.1f} GiB, {free / 2**30:.1f} GiB free",
                    }
                )
                continue
            timing = time_shape(attention, shape, device)
        except Exception as exc:
            if is_out_of_memory(exc) or unsupported(exc):
                skipped.append({"case": shape.label(), "why": first_line(exc)})
                if on_gpu:
                    torch.cuda.empty_cache()
                continue
            failures.append(f"{shape.label()}: {first_line(exc)}")
            continue
        tflops = shape.flops / timing["median"] / 1e12
        paper = published.published(series, shape.head_dim, shape.causal, shape.seqlen)
        cases.append(
            {
                **asdict(shape),
                "flops": shape.flops,
                "seconds": timing,
                "tflops": significant(tflops),
                # The spread, as throughput: from the slowest and the fastest call.
                "tflops_range": [
                    significant(shape.flops / timing["max"] / 1e12),
                    significant(shape.flops / timing["min"] / 1e12),
                ],
                "paper_tflops": paper,
                "percent_of_paper": round(100 * tflops / paper, 1) if paper else None,
                "memory_estimate": needed,
            }
        )
    data: dict[str, Any] = {
        "backend": name.removeprefix("bench."),
        "device": device,
        "paper_series": series,
        "cases": cases,
        "skipped": skipped,
        "correctness": list(judged.values()),
    }
    if cut:
        data["budget"] = True  # the budget, not the backend, left shapes out
    seconds = time.perf_counter() - began
    if failures:
        message = f"{len(failures)} failed: {failures[0]}"
        return Check(name, "fail", message, seconds, {**data, "failures": failures})
    if not cases and cut == len(skipped) > 0:
        return Check(name, "skipped", budget.reason(), seconds, data)
    if not cases:
        why = skipped[0]["why"] if skipped else "no shape ran"
        return Check(name, "skipped", f"not available on {device}: {why}", seconds, data)
    best = max(cases, key=lambda c: c["tflops"])
    versus = [c["percent_of_paper"] for c in cases if c["percent_of_paper"] is not None]
    paper_part = f"; {min(versus):g}-{max(versus):g}% of the paper's {series}" if versus else ""
    skipped_part = f"; {len(skipped)} shapes skipped" if skipped else ""
    message = (
        f"{len(cases)} shapes, best {best['tflops']:.3g} TFLOP/s at s{best['seqlen']}-d{best['head_dim']}"
        f"{'-causal' if best['causal'] else ''}-{best['dtype']}{paper_part}{skipped_part}"
    )
    return Check(name, "pass", message, seconds, data)


def run_one(spec: dict[str, Any], quick: bool) -> Check:
    """One backend in this process: {"sdpa": backend} or {"kernel": KernelEntry fields}."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    budget = Budget.from_json(spec.get("budget"))
    if "kernel" in spec:
        fields = spec["kernel"]
        entry = KernelEntry(**{**fields, "archs": tuple(fields["archs"])})
        name = f"bench.kernel.{entry.name}"
        arch = None
        if device == "cuda":
            major, minor = torch.cuda.get_device_capability()
            arch = f"sm_{major}{minor}"
        if entry.archs and arch not in entry.archs:
            why = f"{entry.repo_id} runs on {', '.join(entry.archs)}; this device is {arch or 'a CPU'}"
            return Check(name, "skipped", why, data={"kernel": asdict(entry)})
        try:
            module = load_kernel(entry)
        except Exception as exc:
            return Check(
                name,
                "skipped",
                f"{entry.repo_id}@{entry.revision} cannot load here: {first_line(exc)}",
                data={"kernel": asdict(entry)},
            )
        series = published.series_for(name, entry.flash_attention)
        attention = kernel_attention(module, entry.function)
        check = run_backend(name, attention, device, quick, series, False, budget)
        return Check(
            check.name, check.status, check.message, check.seconds, {**check.data, "kernel": asdict(entry)}
        )
    backend = spec["sdpa"]
    name = f"bench.sdpa.{backend}"
    series = published.series_for(f"sdpa.{backend}")
    return run_backend(name, sdpa(backend), device, quick, series, backend == "math", budget)


def checks(
    expect: Expectations, quick: bool = False, only: Selection = EVERY, budget: Budget = UNLIMITED
) -> list[Check]:
    specs: list[tuple[str, dict[str, Any]]] = [(f"bench.sdpa.{b}", {"sdpa": b}) for b in SDPA_BACKENDS]
    specs += [(f"bench.kernel.{e.name}", {"kernel": asdict(e)}) for e in read_lock(expect.kernels_lock)]
    return [
        isolated(name, {**spec, "budget": budget.to_json()}, quick, module="smoke.bench", budget=budget)
        for name, spec in specs
        if only.selects(name)
    ]


def section(quick: bool) -> dict[str, Any]:
    """The result's `benchmark` section: the machine, the grid, and where the paper's figures are from."""
    return {
        "machine": machine(),
        "quick": quick,
        "grid": {**asdict(QUICK if quick else PAPER), "dtypes": list(DTYPES[:1] if quick else DTYPES)},
        "timing": {
            "warmup_calls": WARMUP_CALLS,
            "min_timed_seconds": MIN_TIMED_SECONDS,
            "min_repetitions": MIN_REPETITIONS,
        },
        "published": published.SOURCE,
    }


if __name__ == "__main__":
    sys.exit(child_main(run_one, sys.argv[1:]))
