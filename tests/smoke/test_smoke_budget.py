"""`--budget SECONDS` (python -m smoke, buildtool smoke, the smoke worker): once it is spent nothing
more starts, what is left is reported skipped with the reason, and the result is still written;
the report says which checks the budget cut short. The benchmark is cut between shapes."""

from __future__ import annotations

import json
import math
import os
import subprocess
import textwrap
import time
from pathlib import Path

import pytest
from browser import dom_of
from conftest import REPO, docker_ok, run_module
from test_smoke_selection import smoke_module

from buildtool import api
from buildtool.config.options import Options
from buildtool.report.benchmark_html import NOTHING_MEASURED
from smoke import budget as budget_module
from smoke.budget import UNLIMITED, Budget
from smoke.checks.attention import isolated

TORCH_STAND_IN = "runpod/pytorch:2.11.0-cuda13.0-cudnn9-devel"


def test_a_budget_is_a_positive_number_of_seconds() -> None:
    for bad in (0.0, -5.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="positive number of seconds"):
            Budget.starting_now(bad)
    assert Budget.starting_now(None) is UNLIMITED and not UNLIMITED.spent()
    assert UNLIMITED.timeout(1800) == 1800  # no budget: a check process keeps its own limit
    soon = Budget.starting_now(10)
    assert 0 < soon.remaining() <= 10 and not soon.spent()
    assert soon.timeout(1800) <= 10 + budget_module.GRACE_SECONDS
    assert Budget.from_json(soon.to_json()) == soon  # as a check process receives it
    assert Budget(10, time.time() - 1).spent()


def test_python_m_smoke_refuses_a_bad_budget_and_writes_nothing(tmp_path: Path) -> None:
    done = smoke_module("--budget", "0", "--out", str(tmp_path / "out"))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr == "error: bad option: --budget must be a positive number of seconds, not 0.0\n"
    assert not (tmp_path / "out").exists()


def test_buildtool_smoke_refuses_a_bad_budget() -> None:
    result = run_module("smoke", "--matrix", str(REPO / "matrix.yaml"), "--budget", "-1")
    assert result.code == 2 and "Traceback" not in result.err
    assert "error: argument --budget: '-1' is not a positive number of seconds" in result.err


def _slow_check_module(tmp_path: Path) -> Path:
    """A check process that starts, leaves a mark, and then takes a minute."""
    (tmp_path / "slow_check.py").write_text(
        textwrap.dedent(
            """
            import json, sys, time
            from pathlib import Path
            Path(json.loads(sys.argv[1])["mark"]).write_text("started")
            time.sleep(60)
            """
        )
    )
    return tmp_path


def test_a_check_process_is_not_started_after_the_budget_and_is_stopped_when_it_outlives_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(_slow_check_module(tmp_path)))
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}:{REPO}")
    mark = tmp_path / "mark"
    spent = Budget(5, time.time() - 1)
    check = isolated("attention.sdpa.math", {"mark": str(mark)}, False, module="slow_check", budget=spent)
    assert (check.status, check.message) == ("skipped", "not run: the --budget of 5 s was spent")
    assert not mark.exists()  # never started

    monkeypatch.setattr(budget_module, "GRACE_SECONDS", 1.0)
    began = time.perf_counter()
    running = Budget(5, time.time() + 1)
    check = isolated("attention.sdpa.math", {"mark": str(mark)}, False, module="slow_check", budget=running)
    assert time.perf_counter() - began < 20  # not the child's 60 s, nor the check's own 1800 s limit
    assert mark.read_text() == "started"
    assert check.status == "skipped" and check.data == {"budget": True}
    assert check.message.startswith("stopped after 2 s: the --budget of 5 s ran out; not judged")


def test_the_smoke_worker_refuses_a_bad_budget_and_runs_nothing() -> None:
    from smoke import worker

    for bad in ("ten", True, -3, 0, [60]):
        answer = worker.handler({"id": "j", "input": {"budget": bad, "only": "atention"}})
        assert answer == {"error": f'"budget" must be a positive number of seconds, not {bad!r}'}


PARTIAL_BENCHMARK = """
import json, types
import smoke.budget
from smoke import bench
from smoke.budget import Budget
clock = [1000.0]
def tick():  # each look at the clock is a second later: the budget ends after the third shape starts
    clock[0] += 1.0
    return clock[0]
smoke.budget.time = types.SimpleNamespace(time=tick)
check = bench.run_backend("bench.sdpa.math", bench.sdpa("math"), "cpu", True, None, True, Budget(3.5, 1003.5))
print(json.dumps({"status": check.status, "message": check.message, "data": check.data}))
"""


@pytest.mark.container
@pytest.mark.torch_base
def test_a_budget_cuts_a_real_run_between_checks_and_the_report_says_so(tmp_path: Path) -> None:
    """In the torch stand-in: the benchmark stops between shapes, and a whole run under a budget
    smaller than its work writes its result on time, naming what was cut."""
    docker_ok()
    out = tmp_path / "out"
    out.mkdir()
    docker = ["docker", "run", "--rm", "--user", str(os.getuid()), "-e", "HOME=/tmp", "-w", "/checkout",
              "-v", f"{REPO}:/checkout:ro", "-v", f"{out}:/out", TORCH_STAND_IN]  # fmt: skip
    done = subprocess.run(
        [*docker, "python", "-c", PARTIAL_BENCHMARK], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    partial = json.loads(done.stdout.strip().splitlines()[-1])
    assert partial["status"] == "pass" and partial["data"]["budget"] is True
    assert len(partial["data"]["cases"]) == 3 and partial["message"].endswith("; 5 shapes skipped")
    assert {s["why"] for s in partial["data"]["skipped"]} == {"not run: the --budget of 3.5 s was spent"}

    done = subprocess.run(
        [*docker, "python", "-m", "smoke", "--quick", "--skip-model", "--bench", "--budget", "8",
         "--out", "/out", "--variant", "host"],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    document = json.loads((out / "host.json").read_text())
    checks = {c["name"]: c for c in document["checks"]}
    assert document["budget"] == 8 and document["passed"] is True
    assert checks["environment.cuda-version"]["status"] == "pass"  # work that started in time ran
    cut = [name for name, c in checks.items() if c.get("data", {}).get("budget")]
    # Ten check processes, each importing torch, are more than 8 s of work anywhere.
    assert {f"bench.sdpa.{b}" for b in ("math", "flash", "efficient", "cudnn")} <= set(cut)
    assert "attention.expected-backend" in cut  # its evidence was cut: not judged
    for name in cut:
        assert checks[name]["status"] == "skipped" and "--budget of 8 s" in checks[name]["message"]
    # Started work finishes, or is stopped at the end plus the grace; the whole run takes over a minute.
    assert document["seconds"] < 8 + budget_module.GRACE_SECONDS + 5

    options = Options.for_matrix(REPO / "matrix.yaml", tmp_path / "no-build", results=(out / "host.json",))
    api.report(options, tmp_path / "report")
    markdown = (tmp_path / "report" / "compat.md").read_text()
    assert f"--budget 8 s cut {len(cut)} check(s) short: " in markdown
    # Every benchmark backend was cut: the benchmark section says so, with no empty table or plot.
    assert NOTHING_MEASURED in markdown
    dom = dom_of(tmp_path / "report" / "compat.html", tmp_path)
    assert NOTHING_MEASURED in dom and 'id="bench-plot-0"' not in dom
    assert "not run: the --budget of 8 s was spent" in dom
