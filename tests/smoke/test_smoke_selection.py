"""`--only PATTERN` (python -m smoke, buildtool smoke): which checks a pattern selects, the refusal
of a pattern that selects nothing (before anything runs), and the report's note on a limited run.
The in-image runs are in test_smoke.py."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from buildtool import api, smoke_runner
from buildtool.config.options import Options
from smoke.checks.attention import SDPA_BACKENDS
from smoke.selection import SDPA, Selection, catalogue, split_patterns

GOLDEN_RESULTS = sorted((REPO / "tests" / "golden" / "smoke-results").glob("*.json"))


def selected(*patterns: str, kernels: tuple[str, ...] = ("flash-attn3",), bench: bool = True) -> list[str]:
    only = Selection(split_patterns(patterns))
    return [n for n in catalogue(kernels, bench=bench) if only.selects(n)]


def test_a_pattern_selects_by_name_or_by_group() -> None:
    assert selected("attention.sdpa.math") == ["attention.sdpa.math"]
    assert selected("attention.sdpa") == [f"attention.sdpa.{b}" for b in SDPA]
    assert selected("*.kernel.*") == ["attention.kernel.flash-attn3", "bench.kernel.flash-attn3"]
    assert selected("environment.driver,model.serve") == ["environment.driver", "model.serve"]
    assert selected("bench") == [f"bench.sdpa.{b}" for b in SDPA_BACKENDS] + ["bench.kernel.flash-attn3"]
    # A group is matched at a dot, not as a prefix of a name: 'attention.sdpa.flash' is not 'flash*'.
    assert selected("attention.sdpa.f") == []
    assert selected() == list(catalogue(("flash-attn3",), bench=True))  # no pattern: every check


def test_a_pattern_that_selects_nothing_is_refused_with_what_was_meant() -> None:
    names = catalogue(("flash-attn3",))
    ((what, fix),) = Selection(("atention.sdpa",)).unmatched(names)
    assert what == "--only 'atention.sdpa' selects no check of this run"
    assert "Perhaps you meant 'attention.sdpa'?" in fix and "environment, model, attention" in fix
    # Benchmark checks exist only in a --bench run.
    assert Selection(("bench.sdpa.math",)).unmatched(names)
    assert not Selection(("bench.sdpa.math",)).unmatched(catalogue(bench=True))
    # Where kernel names are not known yet (buildtool, before each image), any kernel name may be one.
    assert Selection(("attention.kernel.flash-attn3",)).unmatched(catalogue())
    open_groups = ("attention.kernel", "bench.kernel")
    for pattern in ("attention.kernel.flash-attn3", "attention.kernel", "*.kernel.*", "att*", "*"):
        assert not Selection((pattern,)).unmatched(catalogue(), open_groups), pattern
    assert Selection(("attention.kernelx",)).unmatched(catalogue(), open_groups)


def test_the_catalogue_names_every_check_a_real_run_reported() -> None:
    assert (*SDPA_BACKENDS, "default") == SDPA
    for path in GOLDEN_RESULTS:
        document = json.loads(path.read_text())
        reported = {c["name"] for c in document["checks"]}
        assert reported <= set(catalogue(("sdpa-attention",), bench=True)), (path.name, reported)


def smoke_module(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """python -m smoke as a user runs it; --list and refusals need no torch (this venv has none)."""
    return subprocess.run(
        [sys.executable, "-m", "smoke", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        timeout=60,
        check=False,
    )


def test_python_m_smoke_lists_the_selected_checks_with_the_images_kernels(tmp_path: Path) -> None:
    lock = tmp_path / "kernels.lock.json"
    entry = {"name": "flash-attn3", "repo_id": "kernels-community/flash-attn3", "revision": "v1"}
    lock.write_text(json.dumps({"kernels": [{**entry, "function": "flash_attn_func", "archs": ["sm_90"]}]}))
    only = ("--only", "attention.kernel", "--only", "environment.driver,bench")
    done = smoke_module("--list", *only, "--bench", env={"SMOKE_KERNELS_LOCK": str(lock)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [
        "environment.driver",
        "attention.kernel.flash-attn3",
        *(f"bench.sdpa.{b}" for b in SDPA_BACKENDS),
        "bench.kernel.flash-attn3",
    ]


def test_python_m_smoke_refuses_a_pattern_that_selects_nothing_before_running(tmp_path: Path) -> None:
    done = smoke_module("--only", "atention", "--out", str(tmp_path / "out"))
    assert done.returncode == 2
    assert done.stderr.startswith("error: --only 'atention' selects no check of this run\n  fix: Perhaps ")
    assert "Traceback" not in done.stderr and not (tmp_path / "out").exists()
    # A group that --skip-attention leaves out selects nothing either.
    done = smoke_module("--only", "attention.sdpa", "--skip-attention", "--list")
    assert done.returncode == 2 and "selects no check" in done.stderr


def test_a_kernels_lock_that_does_not_read_leaves_kernel_names_open_not_refused(tmp_path: Path) -> None:
    """The lock is the image's: a broken one is a failed attention check (test_smoke.py), not a bad
    option that would leave no result at all."""
    broken = tmp_path / "kernels.lock.json"
    broken.write_text("{not json")
    done = smoke_module("--list", "--only", "attention.kernel.flash-attn3,environment.driver",
                        env={"SMOKE_KERNELS_LOCK": str(broken)})  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["environment.driver"]  # the kernels' names are not known


def test_the_smoke_worker_fails_a_job_with_a_bad_only_and_runs_nothing() -> None:
    from smoke import worker

    answer = worker.handler({"id": "j", "input": {"only": 5}})
    assert answer == {"error": '"only" must be a list of check patterns or a comma-separated string, not 5'}
    answer = worker.handler({"id": "j", "input": {"only": ["attention.sdpa", "atention"]}})
    assert answer["error"].startswith("--only 'atention' selects no check of this run (Perhaps you meant")


def test_buildtool_smoke_refuses_a_typo_before_any_image(
    monkeypatch: pytest.MonkeyPatch,
    cli,  # type: ignore[no-untyped-def]
) -> None:
    looked: list[Path] = []
    monkeypatch.setattr(
        smoke_runner, "built_images", lambda build_dir, select: looked.append(build_dir) or []
    )
    result = cli("smoke", "--matrix", str(REPO / "matrix.yaml"), "--only", "atention.sdpa")
    assert result.code == 2 and not looked  # refused before looking for images
    assert "--only 'atention.sdpa' selects no check" in result.err
    assert "fix: Perhaps you meant 'attention.sdpa'?" in result.err and "Traceback" not in result.err
    assert cli("smoke", "--matrix", str(REPO / "matrix.yaml"), "--only", "attention.kernel.fa3").code == 0
    assert len(looked) == 1  # a kernel name is each image's own: let through


def test_a_run_limited_by_only_says_so_in_its_report_cell(tmp_path: Path) -> None:
    document = json.loads(GOLDEN_RESULTS[-1].read_text())
    document["checks"] = [c for c in document["checks"] if c["name"] == "attention.sdpa.math"]
    document["only"] = ["attention.sdpa.math"]
    limited = tmp_path / "limited.json"
    limited.write_text(json.dumps(document))
    options = Options.for_matrix(REPO / "matrix.yaml", tmp_path / "no-build", results=(limited,))
    built, _ = api.report(options, tmp_path / "out")
    cell = {r.gpu: r for r in built.rows}["CPU"].cells[document["variant"]]
    assert cell.provenance is not None
    assert cell.provenance.limits == ("limited to --only attention.sdpa.math",)
    markdown = (tmp_path / "out" / "compat.md").read_text()
    assert "limited to --only attention.sdpa.math" in markdown


CHECK_NAME = re.compile(r"(environment|model|attention|bench)\.[a-z][a-z0-9-]*(\.[a-z0-9-]+)?")


def test_the_catalogue_names_exactly_the_checks_the_check_modules_report() -> None:
    """The names --only knows are a table: read from the check modules' own string constants (not
    their docstrings), every fixed name they report is in it, and every fixed name in it is theirs."""
    reported: set[str] = set()
    for module in sorted((REPO / "smoke" / "checks").glob("*.py")):
        tree = ast.parse(module.read_text())
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.FunctionDef | ast.ClassDef)
            and node.body
            and isinstance(node.body[0], ast.Expr)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                reported.update(m.group(0) for m in [CHECK_NAME.fullmatch(node.value)] if m)
    fixed = {n for n in catalogue(()) if not n.startswith("attention.sdpa.")}  # SDPA: tested above
    assert reported - set(catalogue(())) == set()
    assert fixed - reported == set()
    assert {"model.imports", "model.cuda", "model.attention-backend"} <= reported  # in no golden result
