"""What a CI log shows while a build runs: a line at least every heartbeat, within 80 columns."""

from __future__ import annotations

import io
import time

from rich.console import Console

from buildtool.build.engine import Progress
from buildtool.build.result import BuildEvent
from buildtool.build.stage import _PushMeter
from buildtool.cli.display import LINE_WIDTH, BuildDisplay

LONG = "worker-embed-runpod-torch211-cu130"


def test_a_silent_phase_still_prints_a_line_per_running_variant_every_heartbeat() -> None:
    log = io.StringIO()
    console = Console(file=log, force_terminal=False, width=160)
    step = "[stage-0 4/6] RUN --mount=type=bind,source=smoke/lockcheck.py python3 -m pip install " * 2
    with BuildDisplay(console, heartbeat=0.3) as display:
        display.event(BuildEvent(LONG, "building", "build/logs/x.log", Progress(3, 6, 2, step)))
        display.event(BuildEvent("tiny-slim", "building", "build/logs/y.log"))
        display.event(BuildEvent("tiny-slim", "done", "sha256:abc"))
        display.event(BuildEvent(LONG, "building", "", Progress(4, 6, 3, step)))  # same phase: no line
        time.sleep(1.0)
    lines = log.getvalue().splitlines()
    assert lines[:3] == [
        f"{LONG}: building build/logs/x.log",
        "tiny-slim: building build/logs/y.log",
        "tiny-slim: done sha256:abc",
    ]
    beats = lines[3:]
    assert len(beats) >= 2, lines  # 1 s of silence, a 0.3 s heartbeat
    assert all(b.startswith(f"{LONG}: building 0m0") and " 4/6 [stage-0 4/6] RUN" in b for b in beats)
    assert all(len(b) <= LINE_WIDTH for b in beats)
    assert not any(b.startswith("tiny-slim") for b in beats)  # done: nothing more to say


def test_a_push_tells_its_bytes_and_rate_at_most_once_a_second() -> None:
    told: list[str] = []
    meter = _PushMeter(told.append, every=0.05)
    meter.sent(1_500_000_000, 3_000_000_000)
    for n in range(1, 4):
        time.sleep(0.06)
        meter.sent(1_500_000_000 + n * 250_000_000, 3_000_000_000)
    meter.sent(3_000_000_000, 3_000_000_000)  # within the second: not told
    assert len(told) == 4
    assert told[0].startswith("1.50 GB of 3.00 GB sent, ") and told[0].endswith("/s")
    assert told[-1].startswith("2.25 GB of 3.00 GB sent, ")
