"""The compatibility report: golden Markdown and JSON from real smoke results (run on the CPU in
the runpod/pytorch stand-in), and the HTML page rendered in headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import REPO

from buildtool import api
from buildtool.options import Options

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
    assert list(rows)[:6] == ["A100", "H100", "H200", "A40", "RTX4090", "B200"]
    b200 = rows["B200"]["cells"]
    assert all(c["status"] == "refused" and "sm_100" in c["reason"] for c in b200.values())
    assert rows["H100"]["cells"]["worker-embed-runpod-torch211-cu130"] == {"status": "not run"}
    cpu = rows["CPU"]["cells"]
    assert cpu["worker-embed-runpod-torch211-cu130"]["status"] == "pass"
    assert cpu["worker-embed-runpod-torch211-cu130"]["backend"] == "sdpa.math"
    assert cpu["worker-embed-runpod-torch211-cu130"]["best_tflops"] > 0
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
    summary = tmp_path / "summary.md"
    summary.write_text("earlier\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    api.report(
        Options.for_matrix(REPO / "matrix.yaml", tmp_path / "no-build", results=RESULTS), tmp_path / "out"
    )
    assert summary.read_text().startswith("earlier\n# Compatibility report")


def test_the_html_page_renders_its_table_and_plot_in_chromium(reports: Path, tmp_path: Path) -> None:
    chromium = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    assert chromium, "Debian's chromium package is needed (apt-get install chromium; .ci/run installs it)"
    flags = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'p'}",
    ]
    page = (reports / "compat.html").as_uri()
    dom = subprocess.run(
        [*flags, "--dump-dom", page], capture_output=True, text=True, timeout=120, check=True
    )
    compat = dom.stdout.split('<table id="compat">')[1].split("</table>")[0]
    assert compat.count("<tr>") == 1 + 7  # header, 6 GPUs, CPU
    assert 'id="plot"' in dom.stdout and "data:image/png;base64," in dom.stdout
    assert '<table id="pull">' in dom.stdout and "0.25 GB (base cached)" in dom.stdout
    shot = tmp_path / "page.png"
    subprocess.run(
        [*flags, f"--screenshot={shot}", "--window-size=1400,1200", page],
        capture_output=True,
        timeout=120,
        check=True,
    )
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)[..., :3]
    coloured = ((pixels.max(axis=2) - pixels.min(axis=2)) > 0.2).mean()
    assert coloured > 0.01, "the page renders no coloured plot bars or cells"
