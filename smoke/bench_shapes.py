"""The benchmark's shapes: the FlashAttention-3 paper's grid (batch x seqlen = 16k tokens, hidden
2048) or a quick one for a CPU, their FLOPs as the paper counts them, and what each needs in memory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from smoke import published

DTYPES = ("bfloat16", "float16")


@dataclass(frozen=True)
class Grid:
    tokens: int  # batch x seqlen
    hidden: int  # heads x head dim
    seqlens: tuple[int, ...]
    head_dims: tuple[int, ...]


PAPER = Grid(16384, 2048, published.SEQLENS, (64, 128, 256))
QUICK = Grid(512, 256, (128, 256), (64, 128))


@dataclass(frozen=True)
class Shape:
    batch: int
    heads: int
    seqlen: int
    head_dim: int
    causal: bool
    dtype: str

    @property
    def flops(self) -> float:
        total = 4.0 * self.batch * self.heads * self.seqlen**2 * self.head_dim
        return total / 2 if self.causal else total

    def label(self) -> str:
        mask = "causal" if self.causal else "full"
        return f"b{self.batch}-h{self.heads}-s{self.seqlen}-d{self.head_dim}-{mask}-{self.dtype}"


def shapes(quick: bool) -> list[Shape]:
    grid = QUICK if quick else PAPER
    dtypes = DTYPES[:1] if quick else DTYPES
    return [
        Shape(grid.tokens // seqlen, grid.hidden // head_dim, seqlen, head_dim, causal, dtype)
        for dtype in dtypes
        for head_dim in grid.head_dims
        for causal in (False, True)
        for seqlen in grid.seqlens
    ]


def element_size(dtype: str) -> int:
    return {"float32": 4, "bfloat16": 2, "float16": 2}[dtype]


def memory_needed(shape: Shape, materialises_scores: bool) -> int:
    """Bytes a case needs: q, k, v and the output, plus, for the math backend, the score matrix and
    its softmax in float32 (torch computes half-precision math attention in float32:
    allow_fp16_bf16_reduction_math_sdp is off by default) and the cast back to the input's dtype."""
    size = element_size(shape.dtype)
    tensors = 4 * shape.batch * shape.heads * shape.seqlen * shape.head_dim * size
    scores = shape.batch * shape.heads * shape.seqlen**2 * (2 * 4 + size) if materialises_scores else 0
    return tensors + scores


def memory_free(device: str) -> int | None:
    if device == "cuda":
        import torch

        return int(torch.cuda.mem_get_info()[0])
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return None
