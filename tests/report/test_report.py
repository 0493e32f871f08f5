"""The compatibility report: golden Markdown and JSON from real smoke results (run on the CPU in
the runpod/pytorch stand-in), and the HTML page rendered in headless Chromium."""

from __future__ import annotations

import html
import json
import os
import re
from pathlib import Path

import pytest
from browser import dom_of
from conftest import REPO

from buildtool import api
from buildtool.config.matrix import load_matrix
from buildtool.config.options import Options

GOLDEN = REPO / "tests" / "golden"
RESULTS = tuple(sorted((GOLDEN / "smoke-results").glob("*.json")))


def assert_golden(name: str, actual: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.write_text(actual)
    assert actual == path.read_text(), f"{name} differs from its golden file (UPDATE_GOLDEN=1 to accept)"


# build/manifest.json entries: the default worker as built on the Tier-1 torch 2.11 stand-in
# (2026-11-22), and the same worker on the Tier-2 pytorch/pytorch base (the same stand-in layers).
MEASURED = {
    "worker-embed-runpod-torch211-cu130": {
        "compressed_size": 3_091_386_781,
        "layers": 7,
        "base_layers": 2,
        "above_base_size": 254_272_000,
    },
    "worker-embed-pytorch-torch211-cu130": {
        "compressed_size": 3_091_386_781,
        "layers": 7,
        "base_layers": 2,
        "above_base_size": 254_272_000,
    },
}


@pytest.fixture
def reports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    build_dir = tmp_path / "build"
    build_dir.mkdir()
    (build_dir / "manifest.json").write_text(json.dumps({"variants": MEASURED}))
    api.report(Options.for_matrix(REPO / "matrix.yaml", build_dir, results=RESULTS), tmp_path)
    return tmp_path


def test_golden_markdown(reports: Path) -> None:
    assert_golden("compat.md", (reports / "compat.md").read_text())


def test_golden_json(reports: Path) -> None:
    assert_golden("compat.json", (reports / "compat.json").read_text())


def test_every_gpu_is_a_row_with_refusals_and_not_run(reports: Path) -> None:
    document = json.loads((reports / "compat.json").read_text())
    assert document["schema"] == "runpod-images/compat-report" and document["schema_version"] == 1
    rows = {r["gpu"]: r for r in document["rows"]}
    gpus = [g.name for g in load_matrix(REPO / "matrix.yaml").gpus]
    assert list(rows)[: len(gpus)] == gpus and "B200" in gpus  # the matrix's order
    b200 = rows["B200"]["cells"]
    assert all(c["status"] == "refused" and "sm_100" in c["reason"] for v, c in b200.items() if v != "host")
    assert b200["host"] == {"status": "not run"}  # a bare host is no variant: nothing refuses it
    assert rows["H100"]["cells"]["worker-embed-runpod-torch211-cu130"] == {"status": "not run"}
    cpu = rows["CPU"]["cells"]
    assert cpu["worker-embed-runpod-torch211-cu130"]["status"] == "pass"
    assert cpu["worker-embed-runpod-torch211-cu130"]["backend"] == "sdpa.math"
    provenance = cpu["worker-embed-runpod-torch211-cu130"]["provenance"]
    assert provenance["source"].endswith("worker-embed-runpod-torch211-cu130.json") and provenance["started"]
    assert cpu["pytorch-runtime-runpod-torch211-cu130"]["failed_checks"] == ["environment.torch-version"]


def test_pull_time_moves_only_the_layers_above_a_tier_1_base(reports: Path) -> None:
    pulls = {p["variant"]: p for p in json.loads((reports / "compat.json").read_text())["pull"]}
    assert set(pulls) == set(MEASURED)  # only what a build measured
    tier1 = pulls["worker-embed-runpod-torch211-cu130"]
    assert tier1["tier"] == 1 and tier1["moved"] == 254_272_000  # the base is cached on the host
    assert tier1["seconds"] == [round(254_272_000 / 333e6, 1), round(254_272_000 / 250e6, 1)]
    tier2 = pulls["worker-embed-pytorch-torch211-cu130"]
    assert tier2["tier"] == 2 and tier2["moved"] == 3_091_386_781  # the whole image moves
    markdown = (reports / "compat.md").read_text()
    assert (
        "| worker-embed-runpod-torch211-cu130 | 1 | 3.09 GB | 7 | 0.25 GB | 0.25 GB (base cached) | 0.8-1 s |"
        in markdown
    )


def test_pull_time_comes_from_the_results_without_a_build_here(tmp_path: Path) -> None:
    document = json.loads(RESULTS[-1].read_text())
    document["image"] = {"digest": "sha256:" + "c" * 64, **MEASURED["worker-embed-runpod-torch211-cu130"]}
    document["variant"] = "worker-embed-runpod-torch211-cu130"
    stamped = tmp_path / "stamped.json"
    stamped.write_text(json.dumps(document))
    options = Options.for_matrix(REPO / "matrix.yaml", tmp_path / "no-build", results=(stamped,))
    built, _ = api.report(options, tmp_path / "out")
    assert [(p.variant, p.moved) for p in built.pulls] == [
        ("worker-embed-runpod-torch211-cu130", 254_272_000)
    ]


def test_a_gpu_result_lands_on_its_gpu_row(tmp_path: Path) -> None:
    document = json.loads(RESULTS[-1].read_text())
    document["host"] = {**document["host"], "device": "NVIDIA H100 80GB HBM3", "arch": "sm_90"}
    moved = tmp_path / "gpu.json"
    moved.write_text(json.dumps(document))
    options = Options.for_matrix(REPO / "matrix.yaml", tmp_path / "no-build", results=(moved,))
    built, _ = api.report(options, tmp_path / "out")
    rows = {r.gpu: r for r in built.rows}
    assert rows["H100"].cells[document["variant"]].status == "pass"
    assert rows["H200"].cells[document["variant"]].status == "not run"


def test_markdown_goes_to_the_step_summary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`buildtool report` in a GitHub Actions step appends the report to the job summary; the
    library's api.report writes only its files."""
    from buildtool.cli.main import main

    summary = tmp_path / "summary.md"
    summary.write_text("earlier\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    api.report(
        Options.for_matrix(REPO / "matrix.yaml", tmp_path / "no-build", results=RESULTS), tmp_path / "lib"
    )
    assert summary.read_text() == "earlier\n"
    given = ["--results", *map(str, RESULTS)]
    command = ["report", "--matrix", str(REPO / "matrix.yaml"), "--build-dir", str(tmp_path / "no-build")]
    assert main([*command, *given, "--out", str(tmp_path / "out")]) == 0
    assert summary.read_text().startswith("earlier\n# Compatibility report")


def test_the_html_page_renders_in_chromium_with_provenance_checks_and_the_benchmark(
    reports: Path, tmp_path: Path
) -> None:
    dom = dom_of(reports / "compat.html", tmp_path)
    compat = dom.split('<table id="compat">')[1].split("</table>")[0]
    gpus = load_matrix(REPO / "matrix.yaml").gpus
    assert len(re.findall(r"<tr><th>[^<]+</th><td>", compat)) == len(gpus) + 1  # and the CPU
    # A cell names its image, commit, date and machine, and opens to its checks with their reasons.
    first = json.loads((GOLDEN / "smoke-results" / "pytorch-runtime-runpod-torch211-cu130.json").read_text())
    cell = compat.split("<details>")[1].split("</details>")[0]  # the CPU row's first result, in column order
    assert first["started"] in cell and first["host"]["hostname"] in cell
    assert cell.count('<tr class="') == len(first["checks"])
    assert all(html.escape(c["message"]) in cell for c in first["checks"])
    # The B200 refusal: one cell across the variants it refuses, its reason once under the table.
    variants = json.loads((reports / "compat.json").read_text())["variants"]
    b200 = compat.split("<th>B200</th>")[1].split("</tr>")[0]
    assert f'colspan="{len([v for v in variants if v != "host"])}"' in b200
    assert b200.count("refused [1]") == 1 and dom.count("Blackwell data-center GPUs") == 1
    # The benchmark: a table and a plot for the CPU run.
    assert '<table class="bench" id="bench-0">' in dom and 'id="bench-plot-0"' in dom
    assert '<table id="pull">' in dom and "0.25 GB (base cached)" in dom


def _edited(document: dict[str, object], path: str, value: object) -> dict[str, object]:
    """`document` with the field at `path` (dotted; [i] for list items) set to `value`."""
    edited = json.loads(json.dumps(document))
    keys = [int(k) if k.isdigit() else k for k in re.findall(r"[^.\[\]]+", path)]
    *parents, last = keys
    node = edited
    for key in parents:
        node = node[key]
    node[last] = value
    return edited


@pytest.mark.parametrize(
    ("path", "value", "says"),
    [
        ("checks", {"a": 1}, 'checks: expected a list, found {"a": 1}'),
        ("checks[0]", "environment.torch", "checks[0]: expected an object"),
        ("checks[1].name", 7, "checks[1].name: expected a string, found 7"),
        ("checks[2].status", "ok", 'checks[2].status: expected one of pass, fail, skipped, found "ok"'),
        ("passed", "yes", "passed: expected true/false"),
        ("host", [], "host: expected an object"),
        ("host", {"commit": True}, "host.commit: expected a string or null, found true"),  # found by fuzzing
        ("image", {"digest": 5}, "image.digest: expected a string or null"),
        ("budget", True, "budget: expected a number or null, found true"),
        ("benchmark", {"timing": {"min_timed_seconds": "0.1"}}, "benchmark.timing.min_timed_seconds"),
    ],
)
def test_a_hand_edited_result_is_one_clear_error_naming_the_file_and_field(
    cli,  # type: ignore[no-untyped-def]
    tmp_path: Path,
    path: str,
    value: object,
    says: str,
) -> None:
    source = json.loads((GOLDEN / "smoke-results" / "worker-embed-runpod-torch211-cu130.json").read_text())
    bad = tmp_path / "edited.json"
    bad.write_text(json.dumps(_edited(source, path, value)))
    out = tmp_path / "out"
    result = cli("report", "--matrix", str(REPO / "matrix.yaml"), "--results", str(bad), "--out", str(out))
    assert result.code == 2, result.err
    assert f"{bad}: malformed smoke result: {says}" in result.err, result.err
    assert "Traceback" not in result.err and not out.exists()


def test_a_hand_edited_benchmark_case_is_one_clear_error(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    source = json.loads((GOLDEN / "smoke-results" / "cpu-host.json").read_text())
    index = next(
        i for i, c in enumerate(source["checks"]) if c["name"].startswith("bench.") and c["data"]["cases"]
    )
    for field, value, says in (
        ("seqlen", "512", 'expected an integer, found "512"'),
        ("causal", 1, "expected true/false, found 1"),
        ("tflops_range", [1], "expected [slowest, fastest], found [1]"),
        ("tflops", None, "expected a number, found null"),
    ):
        bad = tmp_path / f"{field}.json"
        bad.write_text(json.dumps(_edited(source, f"checks[{index}].data.cases[0].{field}", value)))
        result = cli(
            "report",
            "--matrix",
            str(REPO / "matrix.yaml"),
            "--results",
            str(bad),
            "--out",
            str(tmp_path / "o"),
        )
        assert result.code == 2, result.err
        assert f"checks[{index}].data.cases[0].{field}: {says}" in result.err, result.err
    assert not (tmp_path / "o").exists()
