"""What the CLI prints: problems (with GitHub Actions annotations), the plan's tables, a build's
progress and results. Rich, on stdout for results and stderr for problems."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from buildtool.errors import Problem

if TYPE_CHECKING:
    from rich.live import Live

    from buildtool.build.result import BuildEvent, BuildResult
    from buildtool.errors import Finding
    from buildtool.plan import CheckedPlan

# Where output is not a terminal (a CI log, a pipe) and $COLUMNS says nothing, rich would fold every
# table into 80 columns, a variant name over four lines; a log has room for a row per variant.
LOG_WIDTH = 160


def _console(stderr: bool = False) -> Console:
    console = Console(stderr=stderr, highlight=False, soft_wrap=True)
    if not console.is_terminal and not os.environ.get("COLUMNS"):
        console.width = LOG_WIDTH
    return console


out = _console()
err = _console(stderr=True)


def _in_github_actions() -> bool:
    return os.environ.get("GITHUB_ACTIONS") == "true"


def _annotate(level: str, problem: Problem) -> None:
    """GitHub Actions workflow command, so the problem shows on the file and line in the PR."""
    if not _in_github_actions():
        return
    props = []
    if problem.location:
        props.append(f"file={problem.location.file}")
        if problem.location.line:
            props.append(f"line={problem.location.line}")
    text = problem.render().replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    # stderr: GitHub reads workflow commands from both streams, and stdout stays machine-readable.
    print(f"::{level} {','.join(props)}::{text}", file=sys.stderr, flush=True)


def report_problem(level: str, problem: Problem) -> None:
    colour = "red" if level == "error" else "yellow"
    err.print(f"[{colour}]{level}[/{colour}]: {escape(problem.render())}", markup=True, highlight=False)
    _annotate(level, problem)


def report_findings(findings: Sequence[Finding]) -> None:
    for finding in findings:
        report_problem(finding.severity, finding.problem)


def plan_tables(checked: CheckedPlan) -> list[Table]:
    """Variants, then each refused GPU once with its reason (reasons are long and repeat)."""
    table = Table(title=f"{len(checked.variants)} variant(s) from {checked.plan.matrix.path}")
    # Variant names stay whole (a log reader greps for them); the other columns fold.
    widest = max((len(cv.name) for cv in checked.variants), default=0)
    table.add_column("variant", overflow="fold", min_width=widest)
    for column in ("base", "torch", "GPU targets", "FA", "refused"):
        table.add_column(column, overflow="fold")
    refusals: dict[tuple[str, str, str], list[str]] = {}
    for cv in checked.variants:
        for r in cv.refused:
            refusals.setdefault((r.gpu.name, r.gpu.arch, r.reason), []).append(cv.name)
        table.add_row(
            cv.name,
            cv.base.ref,
            cv.base.torch or "-",
            " ".join(g.name for g in cv.targets),
            ",".join(f"FA{v}" for v in cv.flash_attention) or "-",
            " ".join(r.gpu.name for r in cv.refused) or "-",
        )
    tables = [table]
    if refusals:
        refused = Table(title="refused GPU targets")
        for column in ("GPU", "arch", "reason", "variants"):
            refused.add_column(column, overflow="fold")
        for (gpu, arch, reason), names in refusals.items():
            every = len(names) == len(checked.variants)
            refused.add_row(gpu, arch, reason, "all" if every else " ".join(names))
        tables.append(refused)
    notes = [(cv.name, note) for cv in checked.variants for note in cv.kernel_notes]
    if notes:
        not_offered = Table(title="kernels not offered")
        for column in ("variant", "why"):
            not_offered.add_column(column, overflow="fold")
        for name, note in notes:
            not_offered.add_row(name, note)
        tables.append(not_offered)
    return tables


def results_table(result: BuildResult) -> Table:
    table = Table(title=f"{result.registry} @ {result.revision[:12]}{' (dirty)' if result.dirty else ''}")
    for column in ("variant", "status", "digest", "size", "seconds", "cached steps"):
        table.add_column(column, overflow="fold")
    for v in result.variants:
        colour = {
            "pushed": "green",
            "unchanged": "cyan",
            "built-earlier": "cyan",
            "refused": "red",
            "failed": "red",
        }[v.status]
        size = f"{v.compressed_size / 1e6:.1f} MB" if v.compressed_size else "-"
        table.add_row(
            v.variant,
            f"[{colour}]{v.status}[/{colour}]",
            (v.digest or "-")[:19],
            size,
            f"{v.build_seconds:.1f}",
            f"{v.cached_steps}/{v.steps}" if v.steps else "-",
        )
    return table


FINISHED = frozenset({"done", "unchanged", "built-earlier", "refused", "failed"})
LINE_WIDTH = 80  # a progress line of a CI log


class BuildDisplay:
    """Progress per variant: a live table on a terminal; in a CI log, a line per phase change and,
    while anything runs, a line per running variant at least every `heartbeat` seconds (what it is
    doing: the step, the bytes pushed and their rate), each within 80 columns."""

    def __init__(self, console: Console, heartbeat: float = 30.0) -> None:
        self.console = console
        self.heartbeat = heartbeat
        self.lock = threading.Lock()
        self.rows: dict[str, BuildEvent] = {}
        self.since: dict[str, float] = {}  # variant -> when its phase began
        self.live: Live | None = None
        self.printed = time.monotonic()  # the last line of the log
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def __enter__(self) -> BuildDisplay:
        if self.console.is_terminal:
            from rich.live import Live

            self.live = Live(self._table(), console=self.console, refresh_per_second=4, transient=True)
            self.live.__enter__()
        else:
            self._beat = threading.Thread(target=self._beat_loop, name="build-progress", daemon=True)
            self._beat.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
        if self.live is not None:
            self.live.__exit__(None, None, None)

    def event(self, event: BuildEvent) -> None:
        with self.lock:
            previous = self.rows.get(event.variant)
            self.rows[event.variant] = event
            if previous is None or previous.phase != event.phase:
                self.since[event.variant] = time.monotonic()
            if self.live is not None:
                self.live.update(self._table())
            elif previous is None or previous.phase != event.phase:
                self._print(f"{event.variant}: {event.phase} {event.detail}".rstrip())

    def _print(self, line: str) -> None:
        self.console.print(line, markup=False, highlight=False)
        self.printed = time.monotonic()

    def _beat_loop(self) -> None:
        while not self._stop.wait(min(self.heartbeat, 1.0)):
            with self.lock:
                now = time.monotonic()
                if now - self.printed < self.heartbeat:
                    continue
                for name, e in self.rows.items():
                    if e.phase not in FINISHED:
                        self._print(progress_line(name, e, now - self.since.get(name, now)))
                self.printed = now  # also when nothing runs: the next beat is a heartbeat away

    def _table(self) -> Table:
        table = Table(box=None)
        for column in ("variant", "phase", "steps", "now"):
            table.add_column(column, overflow="ellipsis", no_wrap=True)
        for name, e in self.rows.items():
            p = e.progress
            steps = f"{p.steps_done}/{p.steps_total} ({p.cached} cached)" if p else ""
            table.add_row(name, e.phase, steps, escape(e.detail[-60:]))
        return table


def progress_line(variant: str, event: BuildEvent, seconds: float) -> str:
    """'<variant>: <phase> <minutes>m<seconds>s <steps> <what now>', cut to LINE_WIDTH columns (the
    variant name stays whole: a log reader greps for it)."""
    p = event.progress
    steps = f"{p.steps_done}/{p.steps_total} " if p and p.steps_total and event.phase == "building" else ""
    now = (p.current if p and event.phase == "building" else event.detail) or ""
    elapsed = f"{int(seconds) // 60}m{int(seconds) % 60:02d}s"
    line = f"{variant}: {event.phase} {elapsed} {steps}{' '.join(now.split())}"
    return line if len(line) <= LINE_WIDTH else line[: max(LINE_WIDTH - 3, len(variant) + 2)] + "..."
