"""The report stage: smoke results -> a compatibility report per GPU (Markdown, JSON, HTML).

Rows are every GPU of matrix.yaml's table (refused ones with the reason, GPUs with no result as
"not run"), then the CPU and any other device a result came from; columns are the variants (and
"host": `python -m smoke` on a bare host). Each cell names where it came from (image digest, commit,
date, machine, an --only or a --budget that limited the run) and lists its checks. The attention benchmark
(`--bench`) follows per GPU: buildtool/report/benchmark.py."""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from buildtool.plan import CheckedPlan
from buildtool.report import benchmark, benchmark_html, pulltime
from buildtool.report.pulltime import PULL_HEADER, PULL_NOTE, PullEstimate, pull_cells, pull_estimates
from buildtool.report.results import read_results, run_limits

REPORT_SCHEMA = "runpod-images/compat-report"
REPORT_SCHEMA_VERSION = 1
CellStatus = Literal["pass", "fail", "refused", "not run", "not targeted"]
HOST_COLUMN = "host"  # results of `python -m smoke` on a bare host (no image, no variant)


@dataclass(frozen=True)
class CheckLine:
    name: str
    status: str
    message: str


@dataclass(frozen=True)
class Provenance:
    """Where a cell's result came from."""

    source: str  # the result file
    started: str
    machine: str  # hostname and device
    digest: str | None = None  # the image the suite ran in (None on a bare host)
    commit: str | None = None
    limits: tuple[str, ...] = ()  # what the run left out: --only patterns, checks its --budget cut


@dataclass(frozen=True)
class Cell:
    status: CellStatus
    reason: str | None = None  # refused: why
    torch: str | None = None
    cuda: str | None = None
    backend: str | None = None  # the attention backend the device got (expected-backend check)
    load_seconds: float | None = None
    failed_checks: tuple[str, ...] = ()
    provenance: Provenance | None = None
    checks: tuple[CheckLine, ...] = ()


@dataclass(frozen=True)
class Row:
    gpu: str
    arch: str | None
    runpod_id: str | None
    cells: dict[str, Cell] = field(default_factory=dict)


@dataclass(frozen=True)
class Report:
    variants: tuple[str, ...]
    rows: tuple[Row, ...]
    sources: tuple[str, ...]
    pulls: tuple[PullEstimate, ...] = ()
    benchmarks: tuple[benchmark.BenchRun, ...] = ()
    floors: tuple[benchmark.FloorVerdict, ...] = ()

    def refusals(self) -> tuple[str, ...]:
        """Each distinct refusal reason once, in row order: cells point at them by number."""
        seen: dict[str, None] = {}
        for row in self.rows:
            for variant in self.variants:
                reason = row.cells[variant].reason
                if row.cells[variant].status == "refused" and reason:
                    seen.setdefault(reason, None)
        return tuple(seen)


def _cell_from(source: str, document: dict[str, Any]) -> Cell:
    checks = {c["name"]: c for c in document.get("checks", [])}
    expected = checks.get("attention.expected-backend", {}).get("data", {}).get("expected")
    load = checks.get("model.load", {}).get("data", {}).get("load_seconds")
    host = document.get("host", {})
    image: Mapping[str, Any] = document["image"] if isinstance(document.get("image"), dict) else {}
    return Cell(
        status="pass" if document.get("passed") else "fail",
        torch=host.get("torch"),
        cuda=host.get("cuda"),
        backend=expected.removeprefix("attention.") if isinstance(expected, str) else None,
        load_seconds=round(load, 3) if isinstance(load, int | float) else None,
        failed_checks=tuple(sorted(n for n, c in checks.items() if c.get("status") == "fail")),
        provenance=Provenance(
            source=source,
            started=str(document.get("started", "")),
            machine=f"{host.get('hostname', '?')} ({host.get('device', 'cpu')})",
            digest=image.get("digest"),
            commit=image.get("revision") or host.get("commit"),
            limits=run_limits(document),
        ),
        checks=tuple(
            CheckLine(str(c["name"]), str(c.get("status")), str(c.get("message", "")))
            for c in document.get("checks", [])
        ),
    )


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
    documents = read_results(sorted(result_paths))
    variants = tuple(cv.name for cv in checked.variants)
    if any(_column(d) == HOST_COLUMN for _, d in documents):
        variants += (HOST_COLUMN,)
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
        if HOST_COLUMN in variants:
            cells[HOST_COLUMN] = Cell("not run")
        rows[gpu.name] = Row(gpu.name, gpu.arch, gpu.runpod_id, cells)
    latest: dict[tuple[str, str], str] = {}
    latest_bench: dict[str, tuple[str, benchmark.BenchRun]] = {}
    sources = []
    for path, document in documents:
        variant = _column(document)
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
        shown = _shown(path, checked.plan.matrix.path.parent)
        rows[name].cells[variant] = _cell_from(shown, document)
        run = benchmark.bench_run(name, shown, document)
        if run is not None and run.started >= latest_bench.get(name, ("", run))[0]:
            latest_bench[name] = (run.started, run)
    measured.update(built or {})
    order = list(rows)
    runs = tuple(run for _, run in sorted(latest_bench.values(), key=lambda item: order.index(item[1].gpu)))
    return Report(
        variants,
        tuple(rows.values()),
        tuple(sources),
        pull_estimates(checked, measured),
        runs,
        benchmark.floor_verdicts(runs),
    )


def _shown(path: Path, root: Path) -> str:  # relative to the matrix's directory: the same anywhere
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


def _column(document: dict[str, Any]) -> str:
    return str(document.get("variant") or HOST_COLUMN)


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
                "cells": {v: _cell_json(c) for v, c in r.cells.items()},
            }
            for r in report.rows
        ],
        "pull": [asdict(p) for p in report.pulls],
        "benchmark": benchmark.to_json(report.benchmarks, report.floors),
    }


def _cell_json(cell: Cell) -> dict[str, Any]:
    out = {k: v for k, v in asdict(cell).items() if v not in (None, (), [])}
    if cell.provenance is not None:
        out["provenance"] = {k: v for k, v in asdict(cell.provenance).items() if v not in (None, ())}
    return out


def cell_text(cell: Cell, refusals: tuple[str, ...], markdown: bool = True) -> str:
    if cell.status == "refused":
        return f"refused [{refusals.index(cell.reason or '') + 1}]"
    if cell.status in ("not run", "not targeted"):
        return cell.status
    parts = ["pass" if cell.status == "pass" else ("**FAIL**" if markdown else "FAIL")]
    if cell.torch:
        parts.append(f"torch {cell.torch} / CUDA {cell.cuda}")
    if cell.backend:
        parts.append(cell.backend)
    if cell.load_seconds is not None:
        parts.append(f"load {cell.load_seconds:g} s")
    if cell.failed_checks:
        parts.append("failed: " + ", ".join(cell.failed_checks))
    return " · ".join(parts)


def provenance_text(p: Provenance) -> str:
    parts = [f"image {p.digest[:19]}" if p.digest else "bare host"]
    if p.commit:
        parts.append(f"commit {p.commit[:12]}")
    return ", ".join([*parts, p.started, p.machine, *p.limits])


def to_markdown(report: Report) -> str:
    refusals = report.refusals()
    lines = [
        "# Compatibility report",
        "",
        "| GPU | arch | " + " | ".join(report.variants) + " |",
        "| --- | --- | " + " | ".join("---" for _ in report.variants) + " |",
    ]
    for row in report.rows:
        cells = []
        for v in report.variants:
            cell = row.cells[v]
            text = cell_text(cell, refusals)
            if cell.provenance is not None:
                text += f" ({provenance_text(cell.provenance)})"
            cells.append(text.replace("|", "\\|"))
        lines.append(f"| {row.gpu} | {row.arch or '-'} | " + " | ".join(cells) + " |")
    lines += [""] + [f"[{n}] refused: {reason}" for n, reason in enumerate(refusals, start=1)]
    lines += ["", f"From {len(report.sources)} smoke result(s)."]
    lines += benchmark_html.to_markdown(report.benchmarks, report.floors)
    if report.pulls:
        lines += ["", "## Pull time", "", "| " + " | ".join(PULL_HEADER) + " |"]
        lines += ["| " + " | ".join("---" for _ in PULL_HEADER) + " |"]
        lines += ["| " + " | ".join(pull_cells(p)) + " |" for p in report.pulls]
        lines += ["", PULL_NOTE]
    return "\n".join(lines) + "\n"


def _cell_html(cell: Cell, refusals: tuple[str, ...]) -> str:
    css = cell.status.replace(" ", "-")
    text = html.escape(cell_text(cell, refusals, markdown=False))
    if cell.status == "refused":
        text = f'<a href="#refusal-{refusals.index(cell.reason or "") + 1}">{text}</a>'
    if cell.provenance is None:
        return f'<td class="{css}">{text}</td>'
    checks = "".join(
        f'<tr class="{html.escape(c.status)}"><td>{html.escape(c.name)}</td><td>{html.escape(c.status)}</td>'
        f"<td>{html.escape(c.message)}</td></tr>"
        for c in cell.checks
    )
    return (
        f'<td class="{css}"><details><summary>{text}</summary>'
        f'<p class="provenance">{html.escape(provenance_text(cell.provenance))}; '
        f"from {html.escape(cell.provenance.source)}</p>"
        '<table class="checks"><thead><tr><th>check</th><th>status</th>'
        f"<th>reason and figures</th></tr></thead><tbody>{checks}</tbody></table></details></td>"
    )


def to_html(report: Report) -> str:
    """One self-contained page: the table (each cell opens to its checks), the benchmark with its
    plots inlined as data: URIs, the pull-time table."""
    refusals = report.refusals()
    head = "".join(f"<th>{html.escape(v)}</th>" for v in report.variants)
    body = []
    for row in report.rows:
        row_cells = ""
        cells = [row.cells[v] for v in report.variants]
        while cells:  # adjacent cells refused for one reason: one cell spanning them
            span = 1
            while (
                cells[0].status == "refused"
                and span < len(cells)
                and (cells[span].status, cells[span].reason) == (cells[0].status, cells[0].reason)
            ):
                span += 1
            cell_html = _cell_html(cells[0], refusals)
            if span > 1:
                cell_html = cell_html.replace("<td ", f'<td colspan="{span}" ', 1)
            row_cells += cell_html
            cells = cells[span:]
        body.append(
            f"<tr><th>{html.escape(row.gpu)}</th><td>{html.escape(row.arch or '-')}</td>{row_cells}</tr>"
        )
    notes = "".join(
        f'<li id="refusal-{n}">[{n}] refused: {html.escape(reason)}</li>'
        for n, reason in enumerate(refusals, start=1)
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Compatibility report</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; }}
th, td {{ border: 1px solid #bbb; padding: 4px 8px; font-size: 13px; vertical-align: top; }}
td.pass {{ background: #dff5df; }} td.fail {{ background: #f8d7d7; }}
td.refused {{ background: #eee; color: #666; }} td.not-run, td.not-targeted {{ color: #888; }}
table.checks td, table.checks th {{ font-size: 11px; }} tr.fail td {{ color: #a00; }}
p.provenance {{ font-size: 11px; color: #555; }} li.fail {{ color: #a00; }} li.pass {{ color: #070; }}
</style></head>
<body>
<h1>Compatibility report</h1>
<table id="compat"><thead><tr><th>GPU</th><th>arch</th>{head}</tr></thead>
<tbody>
{chr(10).join(body)}
</tbody></table>
<ul id="refusals">{notes}</ul>
<p>From {len(report.sources)} smoke result(s).</p>
{benchmark_html.to_html(report.benchmarks, report.floors)}
{pulltime.pull_html(report.pulls)}
</body></html>
"""
