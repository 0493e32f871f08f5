"""The benchmark script keeps running (its figures are read by people, not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

pytestmark = [pytest.mark.container, pytest.mark.slow]


def test_render_benchmarks_run_and_report_ratios(tmp_path: Path) -> None:
    output = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "bench_pipeline.py"), "--skip-builds", "--output", str(output)],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    figures = json.loads(output.read_text())
    assert figures["render_1000"]["variants"] == 1000
    assert figures["render_repository"]["ratio"] > 0
