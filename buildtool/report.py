"""The report stage: smoke results -> a compatibility report per GPU (Markdown, JSON, HTML).

Rows are every GPU of matrix.yaml's table (refused ones with the reason, GPUs with no result as
"not run"), then the CPU and any other device a result came from; columns are the variants.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from buildtool import facts
from buildtool.plan import CheckedPlan
from buildtool.results import read_results

REPORT_SCHEMA = "runpod-images/compat-report"
REPORT_SCHEMA_VERSION = 1
CellStatus = Literal["pass", "fail", "refused", "not run", "not targeted"]


@dataclass(frozen=True)
class Cell:
    status: CellStatus
    reason: str | None = None  # refused: why
    torch: str | None = None
    cuda: str | None = None
    backend: str | None = None  # the attention backend the device got (expected-backend check)
    best_tflops: float | None = None
    load_seconds: float | None = None
    failed_checks: tuple[str, ...] = ()


@dataclass(frozen=True)
class Row:
    gpu: str
    arch: str | None
    runpod_id: str | None
    cells: dict[str, Cell] = field(default_factory=dict)
    tflops_by_backend: dict[str, float] = field(default_factory=dict)  # for the plot


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


@dataclass(frozen=True)
class Report:
    variants: tuple[str, ...]
    rows: tuple[Row, ...]
    sources: tuple[str, ...]
    pulls: tuple[PullEstimate, ...] = ()


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


def _cell_from(document: dict[str, Any]) -> tuple[Cell, dict[str, float]]:
    checks = {c["name"]: c for c in document.get("checks", [])}
    expected = checks.get("attention.expected-backend", {}).get("data", {}).get("expected")
    rates = {
        name.removeprefix("attention."): c["data"]["best_tflops"]
        for name, c in checks.items()
        if name.startswith("attention.") and isinstance(c.get("data", {}).get("best_tflops"), int | float)
    }
    load = checks.get("model.load", {}).get("data", {}).get("load_seconds")
    host = document.get("host", {})
    cell = Cell(
        status="pass" if document.get("passed") else "fail",
        torch=host.get("torch"),
        cuda=host.get("cuda"),
        backend=expected.removeprefix("attention.") if isinstance(expected, str) else None,
        best_tflops=round(max(rates.values()), 3) if rates else None,
        load_seconds=round(load, 3) if isinstance(load, int | float) else None,
        failed_checks=tuple(sorted(n for n, c in checks.items() if c.get("status") == "fail")),
    )
    return cell, {k: round(v, 3) for k, v in rates.items()}


def _row_name(document: dict[str, Any], checked: CheckedPlan) -> str:
    host = document.get("host", {})
    device = str(host.get("device") or "cpu")
    if device == "cpu":
        return "CPU"
    for gpu in checked.plan.matrix.gpus:
        if device == gpu.runpod_id or gpu.name.lower() in device.lower():
            return gpu.name
    return device


def build_report(
    checked: CheckedPlan, result_paths: Iterable[Path], built: Mapping[str, Mapping[str, Any]] | None = None
) -> Report:
    """`built`: build/manifest.json's variants, when the build ran here; else the sizes the smoke
    runner stamped into each result."""
    variants = tuple(cv.name for cv in checked.variants)
    measured: dict[str, Mapping[str, Any]] = {}
    rows: dict[str, Row] = {}
    for gpu in checked.plan.matrix.gpus:
        cells: dict[str, Cell] = {}
        for cv in checked.variants:
            refused = next((r for r in cv.refused if r.gpu.name == gpu.name), None)
            if refused is not None:
                cells[cv.name] = Cell("refused", reason=refused.reason)
            elif all(t.name != gpu.name for t in cv.targets):
                cells[cv.name] = Cell("not targeted")
            else:
                cells[cv.name] = Cell("not run")
        rows[gpu.name] = Row(gpu.name, gpu.arch, gpu.runpod_id, cells)
    latest: dict[tuple[str, str], str] = {}
    sources = []
    for path, document in read_results(sorted(result_paths)):
        variant = document.get("variant")
        if variant not in variants:
            continue
        name = _row_name(document, checked)
        key = (name, variant)
        if key in latest and latest[key] > document.get("started", ""):
            continue
        latest[key] = document.get("started", "")
        sources.append(str(path))
        if isinstance(document.get("image"), dict) and "compressed_size" in document["image"]:
            measured[variant] = document["image"]
        if name not in rows:
            rows[name] = Row(
                name, document.get("host", {}).get("arch"), None, {v: Cell("not run") for v in variants}
            )
        cell, rates = _cell_from(document)
        rows[name].cells[variant] = cell
        for backend, rate in rates.items():
            rows[name].tflops_by_backend[backend] = max(rate, rows[name].tflops_by_backend.get(backend, 0.0))
    measured.update(built or {})
    return Report(variants, tuple(rows.values()), tuple(sources), pull_estimates(checked, measured))


def to_json(report: Report) -> dict[str, Any]:
    return {
        "schema": REPORT_SCHEMA,
        "schema_version": REPORT_SCHEMA_VERSION,
        "variants": list(report.variants),
        "rows": [
            {
                "gpu": r.gpu,
                "arch": r.arch,
                "runpod_id": r.runpod_id,
                "cells": {
                    v: {k: val for k, val in asdict(c).items() if val not in (None, ())}
                    for v, c in r.cells.items()
                },
                "tflops_by_backend": r.tflops_by_backend,
            }
            for r in report.rows
        ],
        "pull": [asdict(p) for p in report.pulls],
    }


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


def cell_text(cell: Cell, markdown: bool = True) -> str:
    if cell.status == "refused":
        return f"refused: {cell.reason}"
    if cell.status in ("not run", "not targeted"):
        return cell.status
    parts = ["pass" if cell.status == "pass" else ("**FAIL**" if markdown else "FAIL")]
    if cell.torch:
        parts.append(f"torch {cell.torch} / CUDA {cell.cuda}")
    if cell.backend:
        parts.append(cell.backend)
    if cell.best_tflops is not None:
        parts.append(f"{cell.best_tflops:g} TFLOP/s")
    if cell.load_seconds is not None:
        parts.append(f"load {cell.load_seconds:g} s")
    if cell.failed_checks:
        parts.append("failed: " + ", ".join(cell.failed_checks))
    return " · ".join(parts)


def to_markdown(report: Report) -> str:
    lines = [
        "# Compatibility report",
        "",
        "| GPU | arch | " + " | ".join(report.variants) + " |",
        "| --- | --- | " + " | ".join("---" for _ in report.variants) + " |",
    ]
    for row in report.rows:
        cells = [cell_text(row.cells[v]).replace("|", "\\|") for v in report.variants]
        lines.append(f"| {row.gpu} | {row.arch or '-'} | " + " | ".join(cells) + " |")
    lines += ["", f"From {len(report.sources)} smoke result(s)."]
    if report.pulls:
        lines += ["", "## Pull time", "", "| " + " | ".join(PULL_HEADER) + " |"]
        lines += ["| " + " | ".join("---" for _ in PULL_HEADER) + " |"]
        lines += ["| " + " | ".join(pull_cells(p)) + " |" for p in report.pulls]
        lines += ["", PULL_NOTE]
    return "\n".join(lines) + "\n"


def plot_png(report: Report) -> bytes:
    """Attention TFLOP/s per GPU and backend, as a PNG (matplotlib, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = [r for r in report.rows if r.tflops_by_backend]
    backends = sorted({b for r in measured for b in r.tflops_by_backend})
    figure, axes = plt.subplots(figsize=(8, 4), dpi=100)
    if not measured:
        axes.text(0.5, 0.5, "no attention timings yet", ha="center", va="center")
        axes.set_axis_off()
    else:
        width = 0.8 / max(1, len(backends))
        for i, backend in enumerate(backends):
            xs = [j + i * width for j in range(len(measured))]
            axes.bar(xs, [r.tflops_by_backend.get(backend, 0.0) for r in measured], width, label=backend)
        axes.set_xticks(
            [j + width * (len(backends) - 1) / 2 for j in range(len(measured))], [r.gpu for r in measured]
        )
        axes.set_ylabel("best TFLOP/s")
        axes.set_title("Attention throughput per GPU and backend")
        axes.legend(fontsize="small")
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    plt.close(figure)
    return buffer.getvalue()


def _pull_html(report: Report) -> str:
    if not report.pulls:
        return ""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in PULL_HEADER)
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in pull_cells(p)) + "</tr>" for p in report.pulls
    )
    return (
        f'<h2>Pull time</h2>\n<table id="pull"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>\n'
        f"<p>{html.escape(PULL_NOTE)}</p>"
    )


def to_html(report: Report) -> str:
    """One self-contained page: the table, and the plot inlined as a data: URI."""
    head = "".join(f"<th>{html.escape(v)}</th>" for v in report.variants)
    body = []
    for row in report.rows:
        cells = "".join(
            f'<td class="{row.cells[v].status.replace(" ", "-")}">'
            f"{html.escape(cell_text(row.cells[v], markdown=False))}</td>"
            for v in report.variants
        )
        body.append(f"<tr><th>{html.escape(row.gpu)}</th><td>{html.escape(row.arch or '-')}</td>{cells}</tr>")
    plot = base64.b64encode(plot_png(report)).decode()
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Compatibility report</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; }}
th, td {{ border: 1px solid #bbb; padding: 4px 8px; font-size: 13px; vertical-align: top; }}
td.pass {{ background: #dff5df; }} td.fail {{ background: #f8d7d7; }}
td.refused {{ background: #eee; color: #666; }} td.not-run, td.not-targeted {{ color: #888; }}
</style></head>
<body>
<h1>Compatibility report</h1>
<table id="compat"><thead><tr><th>GPU</th><th>arch</th>{head}</tr></thead>
<tbody>
{chr(10).join(body)}
</tbody></table>
<h2>Attention TFLOP/s</h2>
<img id="plot" alt="attention TFLOP/s per GPU and backend" src="data:image/png;base64,{plot}">
<p>From {len(report.sources)} smoke result(s).</p>
{_pull_html(report)}
</body></html>
"""
