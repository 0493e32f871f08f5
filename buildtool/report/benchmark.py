"""The report's attention benchmark: `python -m smoke --bench` results -> per-GPU tables, plots and
the floors of facts.BENCH_FLOORS as pass/fail lines.

Reads only what the result documents hold (the `bench.*` checks and the `benchmark` section, with
the paper's figure beside each measured shape), so a result committed from a GPU host renders the
same anywhere.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from buildtool import facts


@dataclass(frozen=True)
class BenchPoint:
    backend: str  # sdpa.flash, kernel.flash-attn3, ...
    dtype: str
    head_dim: int
    causal: bool
    seqlen: int
    batch: int
    heads: int
    tflops: float  # at the median time
    tflops_range: tuple[float, float]  # at the slowest and the fastest call
    repetitions: int
    paper_series: str | None
    paper_tflops: float | None
    percent_of_paper: float | None

    @property
    def panel(self) -> tuple[str, int, bool]:
        return (self.dtype, self.head_dim, self.causal)

    def label(self) -> str:
        mask = "causal" if self.causal else "full"
        return f"s{self.seqlen}-d{self.head_dim}-{mask}-{self.dtype}"


@dataclass(frozen=True)
class BenchRun:
    """One benchmark run: what ran where, from which result file."""

    gpu: str  # the report row
    source: str
    variant: str
    started: str
    digest: str | None
    commit: str | None
    machine: Mapping[str, Any]
    quick: bool
    min_timed_seconds: float
    published: Mapping[str, Any]
    points: tuple[BenchPoint, ...]
    backends: tuple[tuple[str, str, str], ...]  # (backend, status, message) per bench check
    kernels: tuple[str, ...] = ()  # each kernel benchmarked: repository@revision (commit)

    def backend_names(self) -> list[str]:
        return sorted({p.backend for p in self.points})

    def seqlens(self) -> list[int]:
        return sorted({p.seqlen for p in self.points})


@dataclass(frozen=True)
class FloorVerdict:
    gpu: str
    floor: str  # BenchFloor.describe()
    status: Literal["pass", "fail", "not run", "no floor"]
    detail: str
    why: str


def bench_run(gpu: str, source: str, document: Mapping[str, Any]) -> BenchRun | None:
    """The benchmark in one result document, or None when it ran none."""
    section = document.get("benchmark")
    bench_checks = [c for c in document.get("checks", []) if str(c.get("name", "")).startswith("bench.")]
    if not isinstance(section, dict) or not bench_checks:
        return None
    points = []
    for check in bench_checks:
        backend = check["name"].removeprefix("bench.")
        for case in check.get("data", {}).get("cases", []):
            low, high = case.get("tflops_range", [case["tflops"], case["tflops"]])
            points.append(
                BenchPoint(
                    backend,
                    case["dtype"],
                    case["head_dim"],
                    case["causal"],
                    case["seqlen"],
                    case["batch"],
                    case["heads"],
                    case["tflops"],
                    (low, high),
                    case.get("seconds", {}).get("repetitions", 0),
                    check.get("data", {}).get("paper_series"),
                    case.get("paper_tflops"),
                    case.get("percent_of_paper"),
                )
            )
    image: Mapping[str, Any] = document["image"] if isinstance(document.get("image"), dict) else {}
    host = document.get("host", {})
    return BenchRun(
        gpu=gpu,
        source=source,
        variant=str(document.get("variant") or "host"),
        started=str(document.get("started", "")),
        digest=image.get("digest"),
        commit=image.get("revision") or host.get("commit"),
        machine=section.get("machine", {}),
        quick=bool(section.get("quick")),
        min_timed_seconds=float(section.get("timing", {}).get("min_timed_seconds", 0)),
        published=section.get("published", {}),
        points=tuple(points),
        backends=tuple(
            (c["name"].removeprefix("bench."), c["status"], c.get("message", "")) for c in bench_checks
        ),
        kernels=tuple(
            _kernel_text(c["data"]["kernel"]) for c in bench_checks if "kernel" in c.get("data", {})
        ),
    )


def _kernel_text(kernel: Mapping[str, Any]) -> str:
    commit = f" (commit {kernel['commit']})" if kernel.get("commit") else ""
    return f"{kernel.get('repo_id')}@{kernel.get('revision')}{commit}"


def floor_verdicts(
    runs: Iterable[BenchRun], floors: Iterable[facts.BenchFloor] = facts.BENCH_FLOORS
) -> tuple[FloorVerdict, ...]:
    """Each floor of the run's hardware: its exact card (the SKU of the device name the run
    recorded) or its arch (machine.arch), or one "no floor" line for a GPU none holds for: never
    another card's floor. A CPU run gets none."""
    verdicts = []
    floors = tuple(floors)
    for run in runs:
        device = run.machine.get("gpu")
        if not device:
            continue  # a CPU: the floors are about GPUs
        sku, arch = facts.gpu_sku(str(device)), run.machine.get("arch")
        held = [floor for floor in floors if floor.holds_for(sku, str(arch) if arch else None)]
        verdicts += [_verdict(run, floor) for floor in held]
        if not held:
            what = f"the {sku}" if sku else "a card facts.GPU_SKUS does not know"
            verdicts.append(
                FloorVerdict(
                    run.gpu,
                    "no floor",
                    "no floor",
                    f"{device} is {what}: no floor is set for it, and another card's would not hold",
                    "floors are per exact SKU or arch (facts.BENCH_FLOORS)",
                )
            )
    return tuple(verdicts)


def _verdict(run: BenchRun, floor: facts.BenchFloor) -> FloorVerdict:
    measured = [p for p in run.points if p.backend == floor.backend and p.seqlen >= floor.from_seqlen]
    ratios: list[tuple[float, BenchPoint]] = []
    if floor.versus == "paper":
        ratios = [(p.tflops / p.paper_tflops, p) for p in measured if p.paper_tflops]
    else:
        other = {
            (p.dtype, p.head_dim, p.causal, p.seqlen): p for p in run.points if p.backend == floor.versus
        }
        for p in measured:
            base = other.get((p.dtype, p.head_dim, p.causal, p.seqlen))
            if base is not None and base.tflops > 0:
                ratios.append((p.tflops / base.tflops, p))
    if not ratios:
        if measured and floor.versus == "paper":
            why = f"{floor.backend}: the paper has no figure at the shapes measured"
        else:
            why = _not_measured(run, floor.backend if not measured else floor.versus, floor.from_seqlen)
        return FloorVerdict(run.gpu, floor.describe(), "not run", why, floor.why)
    worst, at = min(ratios, key=lambda r: r[0])
    shown = f"{worst:.0%}" if floor.versus == "paper" else f"{worst:.2f}x"
    detail = f"worst {shown} at {at.label()} over {len(ratios)} shapes"
    return FloorVerdict(
        run.gpu, floor.describe(), "pass" if worst >= floor.minimum else "fail", detail, floor.why
    )


def _not_measured(run: BenchRun, backend: str, from_seqlen: int) -> str:
    """Why `backend` has no shape at seqlen >= `from_seqlen` in `run`: its check's own reason, or
    only shorter shapes (a --quick run), or no such check."""
    lengths = [p.seqlen for p in run.points if p.backend == backend]
    if lengths:
        return (
            f"{backend}: measured up to seqlen {max(lengths)} only (a --quick run?); "
            f"the floor applies from {from_seqlen}"
        )
    for name, status, message in run.backends:
        if name == backend:
            return f"{backend}: {message or status}"
    if backend.startswith("kernel."):
        return (
            f"{backend}: not in this run: no kernels lock "
            "(kernels are baked into images at build; a bare host has none)"
        )
    return f"{backend}: not in this run"


def to_json(runs: Iterable[BenchRun], verdicts: Iterable[FloorVerdict]) -> dict[str, Any]:
    return {
        "runs": [
            {
                "gpu": r.gpu,
                "source": r.source,
                "variant": r.variant,
                "started": r.started,
                "digest": r.digest,
                "commit": r.commit,
                "machine": dict(r.machine),
                "quick": r.quick,
                "published": dict(r.published),
                "backends": [{"backend": b, "status": s, "message": m} for b, s, m in r.backends],
                "kernels": list(r.kernels),
                "points": [
                    {
                        "backend": p.backend,
                        "shape": p.label(),
                        "tflops": p.tflops,
                        "tflops_range": list(p.tflops_range),
                        "paper_tflops": p.paper_tflops,
                        "percent_of_paper": p.percent_of_paper,
                    }
                    for p in r.points
                ],
            }
            for r in runs
        ],
        "floors": [
            {"gpu": v.gpu, "floor": v.floor, "status": v.status, "detail": v.detail, "why": v.why}
            for v in verdicts
        ],
    }
