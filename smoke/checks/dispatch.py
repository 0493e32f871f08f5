"""Which attention ran, and which should: the backends and kernels the profiler saw each case run,
and attention.expected-backend, which compares them with what this device must get."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any

from smoke.checks.kernels import KernelEntry
from smoke.expect import Expectations
from smoke.result import Check

# What torch's SDPA dispatches to when nothing is forced: its priority order, then each backend's
# constraints (a case the first backend cannot take goes to the next). Sources, torch 2.11:
# - CPU: flash, then math (aten/src/ATen/native/transformers/sdp_utils_cpp.cpp, priority_order_cpp).
# - CUDA: flash, efficient, math, cuDNN; except that cuDNN comes first when the runtime cuDNN is
#   newer than 9.15.0 on compute capability 9.0, 10.0 or 10.3 and TORCH_CUDNN_SDPA_DEPRIORITIZED is
#   not set (aten/src/ATen/native/transformers/cuda/sdp_utils.cpp, check_prefer_cudnn_attention;
#   torch 2.11.0+cu130 ships cuDNN 9.19: H100/H200 get cuDNN attention by default).
# The math backend on a GPU is the slow path the image must not end up on.
FUSED_CUDA = ("flash", "efficient", "cudnn")
CUDNN_FIRST_ARCHS = ("sm_90", "sm_100", "sm_103")
CUDNN_FIRST_ABOVE = 91500  # cuDNN 9.15.0, as torch.backends.cudnn.version() says it


def sdpa_preference(arch: str | None, cudnn: int | None) -> tuple[str, ...]:
    """The backends torch's SDPA may run on this device, its first choice first."""
    if arch is None:
        return ("flash",)
    deprioritized = os.environ.get("TORCH_CUDNN_SDPA_DEPRIORITIZED", "").lower() in ("1", "true", "on", "yes")
    if not deprioritized and arch in CUDNN_FIRST_ARCHS and (cudnn or 0) > CUDNN_FIRST_ABOVE:
        return ("cudnn", "flash", "efficient")
    return FUSED_CUDA


def expected_backend(
    results: list[Check],
    entries: list[KernelEntry],
    expect: Expectations,
    arch: str | None,
    cudnn: int | None = None,
) -> Check:
    """The backend this device must get, compared with what ran: FA3 on sm_90 and FA2 on
    sm_80/86/89 when the image ships FlashAttention (its kernel check must pass: it ran that
    kernel); else torch's own SDPA as dispatched, whose observed backends must be fused ones for
    every case that has one (flash on a CPU)."""
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
        ran = next((c for c in results if c.name == wanted), None)
        if ran is None or ran.status != "pass":
            why = ran.message if ran else "it did not run"
            return Check(
                name,
                "fail",
                f"{wanted} is expected on {arch} and did not pass: {why}",
                data={"expected": wanted},
            )
        return Check(name, "pass", f"{wanted} ran on {arch}", data={"expected": wanted})
    allowed = sdpa_preference(arch, cudnn)
    default = next((c for c in results if c.name == "attention.sdpa.default"), None)
    if default is None or default.status != "pass":
        why = default.message if default else "it did not run"
        return Check(name, "fail", f"torch's SDPA as dispatched did not pass: {why}")
    # Cases a fused backend takes (square ones, as the priority order's constraints allow).
    square = [c for c in default.data.get("cases", []) if c["case"].startswith("s")]
    off = [c["case"] + f" ran {c['dispatch']}" for c in square if not set(c["dispatch"]) & set(allowed)]
    observed = sorted({b for c in default.data.get("cases", []) for b in c["dispatch"]})
    first = [c["case"] for c in square if allowed[0] in c["dispatch"]]
    data = {
        "expected": list(allowed),
        "observed": observed,
        "device": arch or "cpu",
        "cudnn": cudnn,
        "first_choice_ran": f"{len(first)}/{len(square)}",
    }
    if off:
        return Check(
            name,
            "fail",
            f"torch's SDPA on {arch or 'the CPU'} should run {' or '.join(allowed)}; "
            f"{len(off)} case(s) did not: {off[0]}",
            data=data,
        )
    return Check(
        name,
        "pass",
        f"torch's SDPA on {arch or 'the CPU'} ran {observed}; its first choice here, {allowed[0]}, "
        f"took {len(first)} of {len(square)} square cases",
        data=data,
    )


# The profiler's operator names, most specific first: which SDPA backend ran.
DISPATCH_OPS = (
    ("_scaled_dot_product_flash_attention", "flash"),
    ("_scaled_dot_product_cudnn_attention", "cudnn"),
    ("_scaled_dot_product_efficient_attention", "efficient"),
    ("_scaled_dot_product_fused_attention_overrideable", "overrideable"),
    ("_scaled_dot_product_attention_math", "math"),
)


# Operators and GPU kernels of an attention implementation outside torch's SDPA (a Hub kernel's
# `flash_attn::fwd`, the CUDA kernel `flash::flash_fwd_kernel<...>`): what the FlashAttention path ran.
ATTENTION_KERNEL = re.compile(r"flash|fmha|attn|attention", re.IGNORECASE)


def kernels_seen(names: set[str]) -> list[str]:
    """Attention operators and kernels the profiler saw that are not torch's own (aten) ones."""
    own = ("aten::", "cudaLaunch", "cudaStream", "Memcpy", "Memset")
    found = sorted(n[:120] for n in names if ATTENTION_KERNEL.search(n) and not n.startswith(own))
    return found[:5]


def observed_backends(run: Callable[[], Any]) -> tuple[Any, list[str]]:
    """Run once under the profiler: the output, and the SDPA backends whose operators ran (for a
    Hub kernel that calls no SDPA: `kernel:<name>` for each attention kernel it ran instead)."""
    import torch

    activities = [torch.profiler.ProfilerActivity.CPU]
    if torch.cuda.is_available():
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as profile:
        out = run()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
    names = {event.name for event in profile.events()}
    seen = []
    for op, backend in DISPATCH_OPS:
        if any(op in name for name in names) and backend not in seen:
            seen.append(backend)
    return out, seen or [f"kernel:{name}" for name in kernels_seen(names)]
