"""The attention cases and how an output is judged, as FlashAttention's own tests judge it.

An output passes when max|out - ref| <= 2 * max|out_torch - ref| + atol, checked for every query
row (so that the result names the rows over the bound; one wrong row out of thousands fails).
`ref` is softmax(QK^T/sqrt(d))V computed in float64 on the CPU (float32 on a GPU), `out_torch` the
same formula in the case's own dtype (what a correct kernel of that precision reaches), and atol
twice the rounding error of the dtype at the reference's magnitude. NaN or infinity never passes.
(Each row against its own same-precision error would be too tight: measured on the CPU, correct
float32 SDPA rows exceed twice their own baseline's error by chance.)

Cases cover odd lengths (tail tiles), q_len != k_len including decode (q_len 1), grouped-query
attention, causal and not. With q_len != k_len, causal is aligned to the bottom right (the last query
sees every key), as FlashAttention and decoding do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

FACTOR = 2.0  # FlashAttention's tests: twice the same-precision torch error


@dataclass(frozen=True)
class Case:
    batch: int
    heads: int
    kv_heads: int  # < heads: grouped-query attention
    q_len: int
    k_len: int
    head_dim: int
    causal: bool
    dtype: str

    @property
    def flops(self) -> float:
        """Forward pass: 4*b*h*q*k*d, about half of it under a causal mask."""
        total = 4.0 * self.batch * self.heads * self.q_len * self.k_len * self.head_dim
        return total / 2 if self.causal and self.q_len == self.k_len else total

    @property
    def seq(self) -> int:
        return self.k_len

    def label(self) -> str:
        gqa = f"gqa{self.heads}:{self.kv_heads}" if self.kv_heads != self.heads else f"h{self.heads}"
        lengths = f"s{self.q_len}" if self.q_len == self.k_len else f"q{self.q_len}-k{self.k_len}"
        return f"{lengths}-d{self.head_dim}-{gqa}-{'causal' if self.causal else 'full'}-{self.dtype}"


def cases(on_gpu: bool, quick: bool = False) -> list[Case]:
    """Square lengths (odd ones included), then cross and decode shapes."""
    if on_gpu:
        lengths = [(1024, 1024), (1000, 1000), (4097, 4097), (8192, 8192), (1, 4097), (128, 4097)]
        dtypes: tuple[str, ...] = ("bfloat16", "float16")
    else:
        lengths = [(128, 128), (383, 383), (1, 383), (64, 383)]
        dtypes = ("bfloat16", "float32")
    if quick:
        lengths, dtypes = [lengths[0], lengths[2]], dtypes[:1]
    out = []
    for q_len, k_len in lengths:
        for head_dim in (64, 128, 256):
            for causal in (False, True):
                for kv_heads in (8, 2):
                    for dtype in dtypes:
                        batch = 1 if k_len > 2048 else 2
                        out.append(Case(batch, 8, kv_heads, q_len, k_len, head_dim, causal, dtype))
    return out


def causal_mask(q_len: int, k_len: int, device: Any) -> Any:
    """True where a query may not look: bottom-right aligned (query i sees keys <= i + k_len - q_len)."""
    import torch

    return torch.ones(q_len, k_len, dtype=torch.bool, device=device).triu(k_len - q_len + 1)


def attention_math(q: Any, k: Any, v: Any, causal: bool, dtype: Any = None) -> Any:
    """softmax(QK^T / sqrt(d)) V in `dtype` (default: float64 on the CPU, float32 on a GPU), with
    grouped keys and values repeated to the query heads."""
    import torch

    precise = dtype or (torch.float32 if q.is_cuda else torch.float64)
    q, k, v = q.to(precise), k.to(precise), v.to(precise)
    groups = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    scores = (q @ k.transpose(-1, -2)) / (q.shape[-1] ** 0.5)
    if causal:
        scores = scores.masked_fill(causal_mask(q.shape[-2], k.shape[-2], q.device), float("-inf"))
    return (
        torch.softmax(scores.float() if precise in (torch.float16, torch.bfloat16) else scores, dim=-1).to(
            precise
        )
        @ v
    )


@dataclass(frozen=True)
class Verdict:
    passed: bool
    max_error: float  # max|out - ref|
    bound: float  # 2 * max|out_torch - ref| + atol
    worst_row: tuple[int, ...] | None  # (batch, head, query) of the row furthest over the bound
    rows_over: int
    why: str


def judge(out: Any, ref: Any, baseline: Any, keys: int = 1) -> Verdict:
    """`out` against the precise `ref`, with `baseline` (the same formula in out's dtype) setting the
    bar, overall and per query row. `keys` (the key length) sizes the float32 accumulation term: a
    kernel summing `keys` products in another order than the baseline may differ by about
    sqrt(keys) float32 roundings; without it, 2 of 1,440 float32 cases of the CPU flash kernel
    failed a correct kernel (measured on torch 2.11, ratio up to 1.12 of the bound; with it, 0.24)."""
    import torch

    if out.shape != ref.shape:
        return Verdict(
            False,
            float("nan"),
            float("nan"),
            None,
            0,
            f"shape {tuple(out.shape)}, expected {tuple(ref.shape)}",
        )
    if not torch.isfinite(out).all():
        bad = (~torch.isfinite(out)).any(dim=-1).nonzero()
        where = tuple(int(i) for i in bad[0]) if len(bad) else None
        return Verdict(
            False, float("nan"), float("nan"), where, len(bad), f"{len(bad)} row(s) with NaN or inf"
        )
    rounding = ((ref.to(out.dtype) + 0.3 - 0.3).to(ref.dtype) - ref).abs().max()
    accumulation = 4 * torch.finfo(torch.float32).eps * math.sqrt(keys) * float(ref.abs().max())
    atol = 2 * float(rounding) + accumulation
    error = (out.to(ref.dtype) - ref).abs()
    base = (baseline.to(ref.dtype) - ref).abs()
    max_error, bound = float(error.max()), FACTOR * float(base.max()) + atol
    row_error = error.amax(dim=-1)
    over = row_error > bound
    rows_over = int(over.sum())
    worst = None
    if rows_over:
        excess = row_error.flatten().argmax()
        worst = tuple(int(i) for i in torch.unravel_index(excess, row_error.shape))
    passed = rows_over == 0
    if passed:
        why = f"max error {max_error:.3g} <= {bound:.3g}"
    else:
        why = (
            f"{rows_over} row(s) over the bound, worst at (batch, head, query) {worst}: "
            f"max error {max_error:.3g} > bound {bound:.3g}"
        )
    return Verdict(passed, max_error, bound, worst, rows_over, why)
