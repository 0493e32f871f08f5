"""How long a cold worker takes to pull each image (FlashBoot aside), for the report: per image the
build measured, its compressed size, layers, base tier and the bytes above the base, at the seeds'
pull throughput (facts.PULL_BYTES_PER_SECOND)."""

from __future__ import annotations

import html
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from buildtool import facts
from buildtool.plan import CheckedPlan


@dataclass(frozen=True)
class PullEstimate:
    """How long a cold worker takes to pull a variant's image (FlashBoot aside)."""

    variant: str
    tier: int
    compressed_size: int
    layers: int | None
    above_base_size: int | None  # compressed bytes above the base's layers
    moved: int  # what a host pulls: above the base for a Tier-1 base (cached on RunPod hosts)
    seconds: tuple[float, float]  # at the seeds' throughput, (fast, slow)


def pull_estimates(
    checked: CheckedPlan, measured: Mapping[str, Mapping[str, Any]]
) -> tuple[PullEstimate, ...]:
    """One estimate per variant the build measured (`measured`: variant -> build/manifest.json entry
    or a result's image stamp)."""
    out = []
    for variant in checked.variants:
        entry = measured.get(variant.name) or {}
        size = entry.get("compressed_size")
        if not isinstance(size, int):
            continue
        above = entry.get("above_base_size")
        above = above if isinstance(above, int) else None
        moved = above if variant.base.tier == 1 and above is not None else size
        fast, slow = facts.PULL_BYTES_PER_SECOND
        layers = entry.get("layers")
        out.append(
            PullEstimate(
                variant.name,
                variant.base.tier,
                size,
                layers if isinstance(layers, int) and layers else None,
                above,
                moved,
                (round(moved / slow, 1), round(moved / fast, 1)),
            )
        )
    return tuple(out)


PULL_HEADER = (
    "image",
    "base tier",
    "compressed",
    "layers",
    "above the base",
    "a cold host pulls",
    "estimate",
)


def pull_cells(p: PullEstimate) -> tuple[str, ...]:
    cached = " (base cached)" if p.tier == 1 and p.above_base_size is not None else ""
    return (
        p.variant,
        str(p.tier),
        f"{p.compressed_size / 1e9:.2f} GB",
        str(p.layers or "-"),
        f"{p.above_base_size / 1e9:.2f} GB" if p.above_base_size is not None else "-",
        f"{p.moved / 1e9:.2f} GB{cached}",
        f"{p.seconds[0]:g}-{p.seconds[1]:g} s",
    )


PULL_NOTE = (
    "Estimate at {:.0f}-{:.0f} MB/s (the seeds' figures: 15 GB in 45-60 s without FlashBoot). A "
    "Tier-1 base is cached on RunPod hosts, so only the layers above it move; Tier 2 and 3 bases "
    "move whole (Tier 3 pulls can stall for minutes)."
).format(*(rate / 1e6 for rate in facts.PULL_BYTES_PER_SECOND))


def pull_html(pulls: tuple[PullEstimate, ...]) -> str:
    if not pulls:
        return ""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in PULL_HEADER)
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in pull_cells(p)) + "</tr>" for p in pulls
    )
    return (
        f'<h2>Pull time</h2>\n<table id="pull"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>\n'
        f"<p>{html.escape(PULL_NOTE)}</p>"
    )
