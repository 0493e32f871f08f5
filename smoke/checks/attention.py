"""Attention kernels for correctness and speed: torch SDPA with each backend forced, and the
FlashAttention kernels baked into the image (loaded through `kernels`, offline).

Each case draws fresh random inputs (never zeros) and compares with a reference computed in float64
on the CPU (float32 on a GPU); bf16/fp16 pass under 1e-2 relative error, float32 under 1e-4; NaN or
infinity never passes. On a GPU, time comes from CUDA events after warm-up, reported as TFLOP/s
(4*b*h*s^2*d for the forward pass, half of it when causal).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from smoke.expect import Expectations
from smoke.result import Check

TOLERANCE = {"bfloat16": 1e-2, "float16": 1e-2, "float32": 1e-4}
SDPA_BACKENDS = {
    "math": "MATH",
    "flash": "FLASH_ATTENTION",
    "efficient": "EFFICIENT_ATTENTION",
    "cudnn": "CUDNN_ATTENTION",
}
UNSUPPORTED_MARKS = ("No viable backend", "No available kernel", "not supported", "only supports")


@dataclass(frozen=True)
class Case:
    batch: int
    heads: int
    kv_heads: int  # < heads: grouped-query attention
    seq: int
    head_dim: int
    causal: bool
    dtype: str

    @property
    def flops(self) -> float:
        total = 4.0 * self.batch * self.heads * self.seq * self.seq * self.head_dim
        return total / 2 if self.causal else total

    def label(self) -> str:
        gqa = f"gqa{self.heads}:{self.kv_heads}" if self.kv_heads != self.heads else f"h{self.heads}"
        return f"s{self.seq}-d{self.head_dim}-{gqa}-{'causal' if self.causal else 'full'}-{self.dtype}"


def cases(on_gpu: bool, quick: bool = False) -> list[Case]:
    seqs: tuple[int, ...] = (1024, 4096, 8192) if on_gpu else (128, 384)
    dtypes: tuple[str, ...] = ("bfloat16", "float16") if on_gpu else ("bfloat16", "float32")
    if quick:
        seqs, dtypes = seqs[:1], dtypes[:1]
    out = []
    for seq in seqs:
        for head_dim in (64, 128, 256):
            for causal in (False, True):
                for kv_heads in (8, 2):
                    for dtype in dtypes:
                        out.append(Case(1 if seq > 2048 else 2, 8, kv_heads, seq, head_dim, causal, dtype))
    return out


def reference(q: Any, k: Any, v: Any, causal: bool) -> Any:
    """Plain softmax(QK^T / sqrt(d)) V in float64 on the CPU, or float32 on a GPU."""
    import torch

    precise = torch.float32 if q.is_cuda else torch.float64
    q, k, v = q.to(precise), k.to(precise), v.to(precise)
    groups = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    scores = (q @ k.transpose(-1, -2)) / (q.shape[-1] ** 0.5)
    if causal:
        seq = q.shape[-2]
        mask = torch.ones(seq, seq, dtype=torch.bool, device=q.device).triu(1)
        scores = scores.masked_fill(mask, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def relative_error(out: Any, ref: Any) -> float:
    import torch

    difference = out.to(ref.dtype) - ref
    if not torch.isfinite(out).all():
        return float("nan")
    return float(difference.norm() / ref.norm())


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
Attention = Callable[[Any, Any, Any, bool], Any]


def exercise(name: str, attention: Attention, device: str, quick: bool) -> Check:
    """Run every case through `attention`; fail on any error over tolerance or non-finite output."""
    import torch

    on_gpu = device == "cuda"
    results: list[dict[str, Any]] = []
    unsupported: list[str] = []
    failures: list[str] = []
    began = time.perf_counter()
    for case in cases(on_gpu, quick):
        dtype = getattr(torch, case.dtype)
        shape_q = (case.batch, case.heads, case.seq, case.head_dim)
        shape_kv = (case.batch, case.kv_heads, case.seq, case.head_dim)
        q = torch.randn(shape_q, device=device, dtype=dtype)
        k = torch.randn(shape_kv, device=device, dtype=dtype)
        v = torch.randn(shape_kv, device=device, dtype=dtype)
        try:
            out = attention(q, k, v, case.causal)
        except (RuntimeError, ValueError, TypeError, NotImplementedError) as exc:
            if any(mark in str(exc) for mark in UNSUPPORTED_MARKS):
                unsupported.append(case.label())
                continue
            failures.append(f"{case.label()}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
            continue
        error = relative_error(out, reference(q, k, v, case.causal))
        entry: dict[str, Any] = {"case": case.label(), "relative_error": error}
        if not error < TOLERANCE[case.dtype]:  # NaN compares false: never passes
            failures.append(f"{case.label()}: relative error {error:.3g} (limit {TOLERANCE[case.dtype]:g})")
        elif on_gpu or not quick:

            def call(q: Any = q, k: Any = k, v: Any = v, causal: bool = case.causal) -> Any:
                return attention(q, k, v, causal)

            seconds = _time(call, on_gpu, 10 if on_gpu else 1)
            entry["tflops"] = case.flops / seconds / 1e12
        results.append(entry)
    seconds = time.perf_counter() - began
    data: dict[str, Any] = {"device": device, "cases": results, "unsupported": unsupported}
    rates = [r["tflops"] for r in results if "tflops" in r]
    if rates:
        data["best_tflops"] = max(rates)
    if results:
        data["max_relative_error"] = max(r["relative_error"] for r in results)
    if failures:
        return Check(
            name,
            "fail",
            f"{len(failures)} of {len(results) + len(failures)} cases failed: {failures[0]}",
            seconds,
            {**data, "failures": failures},
        )
    if not results:
        return Check(
            name,
            "skipped",
            f"not available on {device}: {unsupported[0] if unsupported else ''}",
            seconds,
            data,
        )
    best = f", best {data['best_tflops']:.1f} TFLOP/s" if rates else ""
    return Check(
        name,
        "pass",
        f"{len(results)} cases, max relative error {data['max_relative_error']:.2g}{best}"
        f"{f', {len(unsupported)} shapes unsupported' if unsupported else ''}",
        seconds,
        data,
    )


def sdpa(backend: str) -> Attention:
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    chosen = getattr(SDPBackend, SDPA_BACKENDS[backend])

    def run(q: Any, k: Any, v: Any, causal: bool) -> Any:
        with sdpa_kernel([chosen]):
            return torch.nn.functional.scaled_dot_product_attention(
                q, k, v, is_causal=causal, enable_gqa=k.shape[1] != q.shape[1]
            )

    return run


@dataclass(frozen=True)
class KernelEntry:
    """One kernel of the image's kernels lock (written at render, completed by the bake step)."""

    name: str  # e.g. flash-attn3
    repo_id: str  # e.g. kernels-community/vllm-flash-attn3
    revision: str  # a pinned revision: `version=` cannot resolve offline
    function: str  # e.g. flash_attn_func: (q, k, v in (batch, seq, heads, dim), causal=...) -> out
    archs: tuple[str, ...]  # GPU archs it runs on; empty: any device, the CPU included
    flash_attention: int | None = None
    local_path: str | None = None  # baked from a local directory (LOCAL_KERNELS)


def read_lock(path: Path | None) -> list[KernelEntry]:
    if path is None or not path.is_file():
        return []
    entries = json.loads(path.read_text())["kernels"]
    return [KernelEntry(**{**e, "archs": tuple(e.get("archs", ()))}) for e in entries]


def load_kernel(entry: KernelEntry) -> Any:
    """Through the real `kernels` loader, offline: from LOCAL_KERNELS or the baked Hub cache."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    if entry.local_path:
        overrides = [o for o in os.environ.get("LOCAL_KERNELS", "").split(":") if o]
        if f"{entry.repo_id}={entry.local_path}" not in overrides:
            overrides.append(f"{entry.repo_id}={entry.local_path}")
        os.environ["LOCAL_KERNELS"] = ":".join(overrides)
    from kernels import get_kernel

    return get_kernel(entry.repo_id, revision=entry.revision, trust_remote_code=[entry.repo_id])


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


def expected_backend(
    results: list[Check], entries: list[KernelEntry], expect: Expectations, arch: str | None
) -> Check:
    """The backend this device must get: FA3 on sm_90 and FA2 on sm_80/86/89 when the image ships
    FlashAttention; else torch's own flash SDPA on a GPU; the math SDPA on a CPU."""
    name = "attention.expected-backend"
    wanted_fa = None
    if arch == "sm_90" and 3 in expect.flash_attention:
        wanted_fa = 3
    elif arch in ("sm_80", "sm_86", "sm_89", "sm_90") and 2 in expect.flash_attention:
        wanted_fa = 2
    if wanted_fa is not None:
        entry = next((e for e in entries if e.flash_attention == wanted_fa), None)
        if entry is None:
            return Check(
                name,
                "fail",
                f"FlashAttention {wanted_fa} is expected on {arch}, and the image's "
                "kernels lock has no kernel for it",
            )
        wanted = f"attention.kernel.{entry.name}"
    else:
        wanted = "attention.sdpa.flash" if arch else "attention.sdpa.math"
    ran = next((c for c in results if c.name == wanted), None)
    if ran is None or ran.status != "pass":
        why = ran.message if ran else "it did not run"
        return Check(
            name,
            "fail",
            f"{wanted} is expected on {arch or 'the CPU'} and did not pass: {why}",
            data={"expected": wanted},
        )
    return Check(name, "pass", f"{wanted} ran on {arch or 'the CPU'}", data={"expected": wanted})


def checks(expect: Expectations, quick: bool = False) -> list[Check]:
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    arch = None
    if device == "cuda":
        major, minor = torch.cuda.get_device_capability()
        arch = f"sm_{major}{minor}"
    results = [
        exercise(f"attention.sdpa.{backend}", sdpa(backend), device, quick) for backend in SDPA_BACKENDS
    ]
    entries = read_lock(expect.kernels_lock)
    results += [kernel_check(entry, device, arch, quick) for entry in entries]
    results.append(expected_backend(results, entries, expect, arch))
    return results
