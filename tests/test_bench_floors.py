"""The benchmark's floors: data, judged on the figures of one run."""

from __future__ import annotations

import sys

import pytest
from conftest import REPO

sys.path.insert(0, str(REPO / "bench"))
import bench_pipeline


def test_each_floor_the_issue_names_is_data_with_its_limit() -> None:
    limits = {f.name: f.limit for f in bench_pipeline.FLOORS}
    assert limits == {"render": 0.5, "one-line change": 2.0, "cache only": 1.2, "cold": 1.3}


def test_a_floor_falls_short_above_its_limit_and_unmeasured_ones_are_skipped(
    capsys: pytest.CaptureFixture[str],
) -> None:
    builds = {"cold_vs_peer": 1.31, "one_line_change_vs_peer": 2.0}
    results = {"render_1000": {"ratio": 0.42}, "builds": builds}
    assert bench_pipeline.print_verdicts(results) is False
    printed = [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("  ")]
    lines = {words[1]: words[0] for words in printed}
    assert lines == {"render": "pass", "one-line": "pass", "cache": "skip", "cold": "FAIL"}
    assert bench_pipeline.print_verdicts({"render_1000": {"ratio": 0.5}}) is True


def test_the_floors_table_of_the_docs_is_the_floors_of_the_code() -> None:
    text = (REPO / "docs" / "benchmarks.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ") and line.rstrip().endswith("x |")]
    documented = [float(row.rsplit("|", 2)[1].strip().removesuffix("x")) for row in rows]
    assert documented == [f.limit for f in bench_pipeline.FLOORS]
