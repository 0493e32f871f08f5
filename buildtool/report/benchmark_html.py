"""The attention benchmark's part of the report, rendered: a table per GPU (median TFLOP/s with the
percentage of the paper's figure), where it ran, the floors' lines, and a plot (TFLOP/s vs sequence
length per backend, the paper's points beside on a GPU)."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Iterable

from buildtool.report.benchmark import BenchPoint, BenchRun, FloorVerdict


def point_text(p: BenchPoint | None) -> str:
    if p is None:
        return "-"
    percent = f" ({p.percent_of_paper:g}%)" if p.percent_of_paper is not None else ""
    return f"{p.tflops:.3g}{percent}"


def table_rows(run: BenchRun) -> list[tuple[tuple[str, ...], list[BenchPoint | None]]]:
    """(backend, dtype, head dim, mask) -> the points at each of the run's sequence lengths."""
    by_key: dict[tuple[str, str, int, bool], dict[int, BenchPoint]] = {}
    for p in run.points:
        by_key.setdefault((p.backend, p.dtype, p.head_dim, p.causal), {})[p.seqlen] = p
    rows: list[tuple[tuple[str, ...], list[BenchPoint | None]]] = []
    for (backend, dtype, head_dim, causal), points in sorted(by_key.items()):
        label = (backend, dtype, str(head_dim), "causal" if causal else "full")
        rows.append((label, [points.get(s) for s in run.seqlens()]))
    return rows


def provenance(run: BenchRun) -> str:
    machine = run.machine
    device = (
        machine.get("gpu") or f"CPU ({machine.get('cpu') or 'unknown'}, {machine.get('cpu_count')} cores)"
    )
    parts = [f"{device}"]
    if machine.get("sm_count"):
        parts.append(f"{machine['sm_count']} SMs")
    for key, unit in (("sm_clock_max_mhz", "MHz max SM clock"), ("power_limit_w", "W power limit")):
        value = machine.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            parts.append(f"{value:g} {unit}")
        elif value is not None:  # nvidia-smi's words where it gave no number ("Unknown Error")
            parts.append(f"{unit.split(' ', 1)[1]}: {value}")
    if machine.get("driver"):
        parts.append(f"driver {machine['driver']}")
    parts.append(f"torch {machine.get('torch')}, CUDA {machine.get('cuda')}, cuDNN {machine.get('cudnn')}")
    parts += [f"kernel {k}" for k in run.kernels]
    parts.append(f"host {machine.get('hostname')}")
    origin = [f"run {run.started}", f"variant {run.variant}"]
    if run.digest:
        origin.append(f"image {run.digest}")
    if run.commit:
        origin.append(f"commit {run.commit}")
    origin.append(f"from {run.source}")
    return "; ".join(parts) + ". " + ", ".join(origin) + "."


HEADER = ("backend", "dtype", "head dim", "mask")
NOTHING_MEASURED = "No shape was measured: each backend's reason is below."
PAPER_NOTE = (
    "Median TFLOP/s over at least {} s of repetitions after warm-up (CUDA events on a GPU); in "
    "brackets, the percentage of the paper's figure at that shape ({})."
)


def _paper_note(run: BenchRun) -> str:
    source = run.published
    cited = f"{source.get('title', 'the paper')}, {source.get('figure', '')}, {source.get('url', '')}"
    return PAPER_NOTE.format(f"{run.min_timed_seconds:g}", cited.strip(", "))


def to_markdown(runs: Iterable[BenchRun], verdicts: Iterable[FloorVerdict]) -> list[str]:
    runs, verdicts = list(runs), list(verdicts)
    if not runs:
        return []
    lines = ["", "## Attention benchmark", ""]
    for run in runs:
        lines += [f"### {run.gpu}{' (quick shapes)' if run.quick else ''}", "", provenance(run), ""]
        head = [*HEADER, *(f"s{s}" for s in run.seqlens())]
        if run.points:
            lines += ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
        else:
            lines.append(NOTHING_MEASURED)
        for label, points in table_rows(run):
            lines.append("| " + " | ".join([*label, *(point_text(p) for p in points)]) + " |")
        not_run = [(b, m) for b, s, m in run.backends if s != "pass"]
        lines += ["", _paper_note(run)]
        if not_run:
            lines += [""] + [f"- {b}: {m}" for b, m in not_run]
        floors = [v for v in verdicts if v.gpu == run.gpu]
        if floors:
            lines += ["", "Floors:", ""]
            lines += [f"- {v.status.upper()}: {v.floor}: {v.detail} ({v.why})" for v in floors]
        lines.append("")
    return lines


def to_html(runs: Iterable[BenchRun], verdicts: Iterable[FloorVerdict]) -> str:
    runs, verdicts = list(runs), list(verdicts)
    if not runs:
        return "<h2>Attention benchmark</h2>\n<p>No benchmark results yet (python -m smoke --bench).</p>\n"
    parts = ["<h2>Attention benchmark</h2>"]
    for number, run in enumerate(runs):
        head = "".join(f"<th>{html.escape(h)}</th>" for h in [*HEADER, *(f"s{s}" for s in run.seqlens())])
        body = []
        for label, points in table_rows(run):
            cells = "".join(f"<td>{html.escape(v)}</td>" for v in label)
            for p in points:
                spread = f"{p.tflops_range[0]:.3g}-{p.tflops_range[1]:.3g} TFLOP/s" if p else ""
                title = f' title="{spread} over {p.repetitions} calls; b{p.batch} h{p.heads}"' if p else ""
                cells += f"<td{title}>{html.escape(point_text(p))}</td>"
            body.append(f"<tr>{cells}</tr>")
        quick = " (quick shapes)" if run.quick else ""
        plot = f"data:image/png;base64,{base64.b64encode(plot_png(run)).decode()}" if run.points else None
        not_run = "".join(
            f"<li>{html.escape(b)}: {html.escape(m)}</li>" for b, s, m in run.backends if s != "pass"
        )
        floors = "".join(
            f'<li class="{v.status.replace(" ", "-")}">{html.escape(v.status.upper())}: '
            f"{html.escape(v.floor)}: {html.escape(v.detail)} <small>({html.escape(v.why)})</small></li>"
            for v in verdicts
            if v.gpu == run.gpu
        )
        table = (
            f'<table class="bench" id="bench-{number}"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>"
            if run.points
            else f"<p>{html.escape(NOTHING_MEASURED)}</p>"
        )
        alt = f"TFLOP/s vs sequence length per backend on {html.escape(run.gpu)}"
        parts.append(
            f"<h3>{html.escape(run.gpu)}{quick}</h3>\n"
            f'<p class="provenance">{html.escape(provenance(run))}</p>\n{table}\n'
            f"<p>{html.escape(_paper_note(run))}</p>\n"
            + (f"<ul>{not_run}</ul>\n" if not_run else "")
            + (f'<ul class="floors">{floors}</ul>\n' if floors else "")
            + (f'<img class="bench-plot" id="bench-plot-{number}" alt="{alt}" src="{plot}">' if plot else "")
        )
    return "\n".join(parts) + "\n"


def plot_png(run: BenchRun) -> bytes:
    """TFLOP/s vs sequence length per backend, one panel per head dim and mask (the paper's dtype,
    fp16, when it ran), the paper's points beside on a GPU."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dtypes = sorted({p.dtype for p in run.points})
    dtype = "float16" if "float16" in dtypes else dtypes[0]
    head_dims = sorted({p.head_dim for p in run.points})
    figure, axes = plt.subplots(
        2, len(head_dims), figsize=(4 * len(head_dims), 6.4), dpi=100, squeeze=False, sharex=True
    )
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    backends = run.backend_names()
    on_gpu = bool(run.machine.get("gpu"))
    for row, causal in enumerate((False, True)):
        for column, head_dim in enumerate(head_dims):
            ax = axes[row][column]
            for i, backend in enumerate(backends):
                points = sorted(
                    (p for p in run.points if p.backend == backend and p.panel == (dtype, head_dim, causal)),
                    key=lambda p: p.seqlen,
                )
                if points:
                    ax.plot(
                        [p.seqlen for p in points],
                        [p.tflops for p in points],
                        "o-",
                        label=backend,
                        color=colours[i % len(colours)],
                    )
            if on_gpu:
                series = sorted({p.paper_series for p in run.points if p.paper_series})
                for i, name in enumerate(series):
                    paper = sorted(
                        {
                            (p.seqlen, p.paper_tflops)
                            for p in run.points
                            if p.paper_series == name
                            and p.panel == (dtype, head_dim, causal)
                            and p.paper_tflops
                        },
                    )
                    if paper:
                        ax.plot(
                            [s for s, _ in paper],
                            [t for _, t in paper],
                            "x--",
                            color="grey",
                            alpha=0.4 + 0.6 * i / max(1, len(series)),
                            label=f"paper: {name}",
                        )
            ax.set_xscale("log", base=2)
            ax.set_title(f"d{head_dim}, {'causal' if causal else 'no mask'}, {dtype}", fontsize="small")
            ax.tick_params(labelsize="x-small")
            if column == 0:
                ax.set_ylabel("TFLOP/s")
            if row == 1:
                ax.set_xlabel("sequence length")
    handles, labels = axes[0][0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=min(4, max(1, len(labels))), fontsize="x-small")
    figure.suptitle(f"Attention forward on {run.gpu} ({run.started})", fontsize="medium")
    figure.tight_layout(rect=(0, 0.08, 1, 1))
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    plt.close(figure)
    return buffer.getvalue()
