"""Published attention throughput to hold measurements against: the FlashAttention-3 paper's forward
figures on an H100 SXM5, at the shapes `smoke.bench` runs (batch x seqlen = 16k tokens, hidden 2048).

Data, not code: one tuple per (head dim, causal) panel and series, in TFLOP/s at sequence lengths
512, 1k, 2k, 4k, 8k, 16k (None where the paper's bar says OOM). The values are the labels printed
above the bars of Figure 5; the causal panels are the ones whose standard attention stays near-flat
(its work is not halved by the mask, its FLOP count is). Check a value against the figure before
building a floor on it.
"""

from __future__ import annotations

from typing import Any

SOURCE: dict[str, Any] = {
    "title": "FlashAttention-3: Fast and Accurate Attention with Asynchrony and Low-precision",
    "authors": "J. Shah, G. Bikshandi, Y. Zhang, V. Thakkar, P. Ramani, T. Dao",
    "year": 2024,
    "url": "https://arxiv.org/abs/2407.08608",
    "figure": "Figure 5, attention forward speed (FP16) on H100 80GB SXM5, panels (a)-(f)",
    "gpu": "H100 80GB SXM5",
    "dtype": "float16",
    "shapes": "batch x seqlen = 16384, hidden 2048 (heads = 2048 / head dim)",
    "flops": "4 * batch * heads * seqlen^2 * head_dim, halved under a causal mask",
    "read": "the bar labels of each panel",
}
SEQLENS = (512, 1024, 2048, 4096, 8192, 16384)

# Series names as the paper's legends give them.
STANDARD, FA2, CUDNN, FA3 = "Standard attention", "FlashAttention-2", "cuDNN", "FlashAttention-3"
Values = tuple[float | None, ...]
FIGURES: dict[tuple[int, bool], dict[str, Values]] = {
    (64, False): {
        STANDARD: (52, 63, 67, 72, 73, None),
        FA2: (282, 306, 318, 321, 322, 324),
        CUDNN: (335, 373, 395, 408, 412, 413),
        FA3: (333, 392, 460, 476, 496, 497),
    },
    (64, True): {
        STANDARD: (16, 18, 18, 18, 18, None),
        FA2: (180, 229, 262, 284, 295, 299),
        CUDNN: (225, 288, 334, 363, 379, 388),
        FA3: (197, 265, 371, 420, 460, 473),
    },
    (128, False): {
        STANDARD: (74, 100, 119, 133, 139, None),
        FA2: (309, 350, 362, 368, 370, 370),
        CUDNN: (497, 574, 617, 609, 600, 595),
        FA3: (467, 565, 625, 638, 646, 648),
    },
    (128, True): {
        STANDARD: (26, 31, 34, 35, 35, None),
        FA2: (191, 260, 298, 319, 333, 335),
        CUDNN: (315, 410, 484, 518, 529, 539),
        FA3: (292, 423, 521, 579, 602, 616),
    },
    (256, False): {
        FA2: (275, 313, 321, 323, 324, 326),
        CUDNN: (470, 546, 580, 581, 580, 581),
        FA3: (482, 639, 707, 736, 746, 756),
    },
    (256, True): {
        FA2: (208, 251, 278, 293, 297, 298),
        CUDNN: (308, 391, 450, 483, 497, 509),
        FA3: (286, 427, 537, 612, 628, 642),
    },
}


def series_for(backend: str, flash_attention: int | None = None) -> str | None:
    """The paper's series a backend of ours is held against: torch's flash backend is
    FlashAttention-2's kernel. Its math backend is held against nothing: the paper's standard
    attention ran FP16 matmuls, where torch's math backend computes in FP32, so a percentage of it
    would compare two different computations."""
    if flash_attention == 3:
        return FA3
    if flash_attention == 2:
        return FA2
    return {"sdpa.flash": FA2, "sdpa.cudnn": CUDNN}.get(backend)


def published(series: str | None, head_dim: int, causal: bool, seqlen: int) -> float | None:
    """The paper's TFLOP/s for one shape, or None where it has no figure."""
    if series is None or seqlen not in SEQLENS:
        return None
    values = FIGURES.get((head_dim, causal), {}).get(series)
    value = values[SEQLENS.index(seqlen)] if values else None
    return float(value) if value is not None else None
