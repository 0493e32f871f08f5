"""The attention benchmark (`python -m smoke --bench`): the paper's shapes and FLOP count, the
memory estimate, the published figures, the floors; and, on the torch stand-in, the bare-host runner
end to end: a checkout, torch, no image and no Docker inside, its JSON rendered by the report in
Chromium."""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from browser import dom_of
from conftest import REPO, docker_ok

from buildtool import api, facts
from buildtool.config.options import Options
from buildtool.report import benchmark
from smoke import published
from smoke.bench import MEMORY_HEADROOM
from smoke.bench_shapes import PAPER, Shape, memory_needed, shapes
from smoke.machine import nvidia_smi, parse_nvidia_smi, smi_ids

TORCH_STAND_IN = "runpod/pytorch:2.11.0-cuda13.0-cudnn9-devel"


def test_the_paper_grid_holds_16k_tokens_and_hidden_2048() -> None:
    grid = shapes(quick=False)
    assert len(grid) == 2 * 3 * 2 * 6  # dtypes x head dims x masks x sequence lengths
    assert {s.seqlen for s in grid} == {512, 1024, 2048, 4096, 8192, 16384}
    assert all(s.batch * s.seqlen == 16384 and s.heads * s.head_dim == 2048 for s in grid)
    assert {(s.dtype, s.head_dim, s.causal) for s in grid} == {
        (d, h, c) for d in ("bfloat16", "float16") for h in (64, 128, 256) for c in (False, True)
    }
    quick = shapes(quick=True)
    assert quick and all(s.seqlen <= 256 for s in quick)


def test_flops_are_counted_as_the_paper_counts_them() -> None:
    full = Shape(batch=1, heads=16, seqlen=16384, head_dim=128, causal=False, dtype="float16")
    assert full.flops == 4 * 1 * 16 * 16384**2 * 128
    assert replace(full, causal=True).flops == full.flops / 2


def test_the_memory_estimate_keeps_the_math_backend_off_16k_on_an_80_gb_card() -> None:
    longest = Shape(batch=1, heads=32, seqlen=16384, head_dim=64, causal=False, dtype="bfloat16")
    assert memory_needed(longest, materialises_scores=True) > MEMORY_HEADROOM * 80 * 2**30
    assert memory_needed(longest, materialises_scores=False) == 4 * 16384 * 2048 * 2  # q, k, v, out


def test_published_figures_are_looked_up_per_shape_and_backend() -> None:
    assert published.published(published.FA3, 128, False, 16384) == 648
    assert published.published(published.FA2, 256, True, 512) == 208
    assert published.published(published.STANDARD, 64, False, 16384) is None  # the paper's OOM
    assert published.published(published.FA3, 128, False, 256) is None  # not a paper shape
    assert published.series_for("kernel.flash-attn3", 3) == published.FA3
    assert published.series_for("sdpa.flash") == published.FA2  # torch's flash backend is FA2's kernel
    assert published.series_for("sdpa.efficient") is None
    for panel in published.FIGURES.values():
        assert all(len(values) == len(published.SEQLENS) for values in panel.values())
    assert PAPER.seqlens == published.SEQLENS


def test_nvidia_smi_fields_are_read_and_unsupported_ones_dropped() -> None:
    parsed = parse_nvidia_smi("580.95.05, 1755, 1980, 2619, 2619, 700.00, 700.00, P0, [N/A]\n")
    assert parsed == {
        "driver": "580.95.05",
        "sm_clock_mhz": 1755.0,
        "sm_clock_max_mhz": 1980.0,
        "memory_clock_mhz": 2619.0,
        "memory_clock_max_mhz": 2619.0,
        "power_limit_w": 700.0,
        "power_max_limit_w": 700.0,
        "pstate": "P0",
    }


UUID = "6e2f0b1c-93a4-4d7e-8f21-0c5d9a7b3e41"
# nvidia-smi as a host with two GPUs answers --query-gpu: by index in PCI order, or by UUID; a MIG
# instance's UUID only with the MIG- prefix (the stand-in's rule: enough to tell which id was used).
FAKE_SMI = f"""#!/bin/sh
for arg; do case "$arg" in --id=*) id="${{arg#--id=}}";; esac; done
case "$id" in
  0) echo "580.95.05, 345, 1980, 1593, 2619, 350.00, 700.00, P8, 31";;
  GPU-{UUID}|1) echo "580.95.05, 1755, 1980, 2619, 2619, 700.00, 700.00, P0, 45";;
  MIG-*) echo "580.95.05, 1410, 1980, 2619, 2619, 700.00, 700.00, P0, 40";;
  *) echo "No devices were found" >&2; exit 6;;
esac
"""


def test_nvidia_smi_is_asked_about_the_gpu_torch_ran_on_by_its_uuid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under CUDA_VISIBLE_DEVICES=1 torch's device 0 is nvidia-smi's GPU 1: the UUID names it."""

    smi = tmp_path / "nvidia-smi"
    smi.write_text(FAKE_SMI)
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    on_gpu_1 = nvidia_smi(smi_ids(UUID))
    assert on_gpu_1["nvidia_smi_id"] == f"GPU-{UUID}" and on_gpu_1["sm_clock_mhz"] == 1755.0
    mig = "0f1e2d3c-4b5a-6978-8695-a4b3c2d1e0f9"
    assert nvidia_smi(smi_ids(mig))["nvidia_smi_id"] == f"MIG-{mig}"  # not a GPU UUID: the MIG form
    assert smi_ids(f"GPU-{UUID}") == smi_ids(UUID)  # with or without its prefix
    assert nvidia_smi(smi_ids(None)) == {
        "nvidia_smi": "not asked: torch gave no UUID or PCI address to name its device by"
    }
    smi.write_text(FAKE_SMI.replace("  MIG-*)", "  MIG-never)"))
    gone = nvidia_smi(smi_ids(mig))
    assert set(gone) == {"nvidia_smi"} and "No devices were found" in gone["nvidia_smi"]  # no clocks
    # A driver that knows no MIG- form: the instance's GPU by its PCI address (bus 0x18).
    smi.write_text(FAKE_SMI.replace("  MIG-*)", "  00000000:18:00.0)"))
    from types import SimpleNamespace

    from smoke.machine import _pci_address

    props = SimpleNamespace(uuid=mig, pci_domain_id=0, pci_bus_id=0x18, pci_device_id=0)  # torch's names
    by_bus = nvidia_smi(smi_ids(props.uuid, _pci_address(props)))
    assert by_bus["nvidia_smi_id"] == "00000000:18:00.0" and by_bus["sm_clock_mhz"] == 1410.0


def point(backend: str, seqlen: int, tflops: float, paper: float | None = None) -> benchmark.BenchPoint:
    return benchmark.BenchPoint(
        backend, "float16", 128, False, seqlen, 16384 // seqlen, 16, tflops, (tflops, tflops), 10,
        published.FA3 if paper else None, paper, round(100 * tflops / paper, 1) if paper else None,
    )  # fmt: skip


def run_with(
    *points: benchmark.BenchPoint, backends: tuple[tuple[str, str, str], ...] = ()
) -> benchmark.BenchRun:
    return benchmark.BenchRun(
        "H100", "h100.json", "host", "2026-11-23T00:00:00+00:00", None, "abc",
        {"gpu": "NVIDIA H100 80GB HBM3"}, False, 0.1, published.SOURCE, points, backends,
    )  # fmt: skip


def test_floors_pass_fail_and_name_the_worst_shape() -> None:
    paper_floor, ratio_floor = facts.BENCH_FLOORS[:2]
    good = run_with(
        point("kernel.flash-attn3", 512, 100, 467),  # launch-bound length: not held to the floor
        point("kernel.flash-attn3", 4096, 620, 638),
        point("kernel.flash-attn3", 16384, 640, 648),
        point("sdpa.flash", 4096, 360),
        point("sdpa.flash", 16384, 370),
    )
    verdicts = benchmark.floor_verdicts([good], (paper_floor, ratio_floor))
    assert [v.status for v in verdicts] == ["pass", "pass"]
    assert verdicts[0].detail == "worst 97% at s4096-d128-full-float16 over 2 shapes"
    slow = run_with(point("kernel.flash-attn3", 4096, 450, 638), point("sdpa.flash", 4096, 360))
    verdicts = benchmark.floor_verdicts([slow], (paper_floor, ratio_floor))
    assert [v.status for v in verdicts] == ["fail", "fail"]
    assert "worst 71% at s4096" in verdicts[0].detail and "worst 1.25x" in verdicts[1].detail


def test_a_floor_whose_kernel_did_not_run_says_why() -> None:
    missing = run_with(
        point("sdpa.flash", 4096, 360),
        backends=(
            ("kernel.flash-attn3", "skipped", "kernels-community/flash-attn3 cannot load here: no Hub"),
        ),
    )
    (verdict,) = benchmark.floor_verdicts([missing], facts.BENCH_FLOORS[:1])
    assert verdict.status == "not run" and "cannot load here: no Hub" in verdict.detail
    assert benchmark.floor_verdicts([replace(missing, machine={})]) == ()  # no floors for a CPU
    bare = run_with(point("sdpa.flash", 4096, 360))  # a bare host: no kernels lock, no kernel check
    (verdict,) = benchmark.floor_verdicts([bare], facts.BENCH_FLOORS[1:2])
    assert verdict.status == "not run" and "a bare host has none" in verdict.detail


def test_a_floor_over_a_quick_run_says_the_lengths_were_too_short() -> None:
    """A --quick run on a GPU measures only launch-bound lengths: the floor says so, and does not
    quote the backend's passing message as if it were the reason."""
    passed = ("kernel.flash-attn3", "pass", "8 shapes, best 300 TFLOP/s at s1024-d128")
    quick = run_with(
        point("kernel.flash-attn3", 1024, 300, 565), point("sdpa.flash", 1024, 250), backends=(passed,)
    )
    paper, versus = benchmark.floor_verdicts([quick], facts.BENCH_FLOORS[:2])
    for verdict in (paper, versus):
        assert verdict.status == "not run"
        assert "measured up to seqlen 1024 only" in verdict.detail and "from 2048" in verdict.detail
        assert "best 300" not in verdict.detail
    flash_skipped = run_with(
        point("kernel.flash-attn3", 4096, 620, 638),
        backends=(passed, ("sdpa.flash", "skipped", "not available on cuda: No viable backend")),
    )
    (verdict,) = benchmark.floor_verdicts([flash_skipped], facts.BENCH_FLOORS[1:2])
    assert verdict.detail == "sdpa.flash: not available on cuda: No viable backend"


def test_a_gpu_new_to_the_matrix_gets_its_archs_floor_and_no_other_cards() -> None:
    """An L40S (sm_89) is no SKU of facts.GPU_SKUS: its FA2 run is held to the FA2-vs-torch floor of
    its arch, never to the H100's paper figures; a card whose arch has no floor says so."""
    l40s = replace(
        run_with(point("kernel.flash-attn2", 4096, 150), point("sdpa.flash", 4096, 160)),
        gpu="L40S",
        machine={"gpu": "NVIDIA L40S", "arch": "sm_89"},
    )
    (verdict,) = benchmark.floor_verdicts([l40s])
    assert verdict.floor.startswith("kernel.flash-attn2 >= 0.9x sdpa.flash") and verdict.status == "pass"
    assert "worst 0.94x" in verdict.detail
    turing = replace(l40s, gpu="T4", machine={"gpu": "Tesla T4", "arch": "sm_75"})
    (verdict,) = benchmark.floor_verdicts([turing])
    assert verdict.status == "no floor" and "a card facts.GPU_SKUS does not know" in verdict.detail


@pytest.mark.container
@pytest.mark.torch_base
def test_the_bare_host_runner_benchmarks_and_the_report_renders_it(tmp_path: Path) -> None:
    """What a lent GPU machine does, on the CPU: tools/gpu-host-smoke.sh (`python -m smoke --bench`)
    from a checkout in a Python that has torch (the stand-in base, nothing of ours installed), then
    the report."""
    docker_ok()
    out = tmp_path / "out"
    out.mkdir()
    done = subprocess.run(
        ["docker", "run", "--rm", "--user", f"{_uid()}", "-e", "HOME=/tmp", "-v", f"{REPO}:/checkout:ro",
         "-v", f"{out}:/out", "-w", "/checkout", TORCH_STAND_IN,
         "bash", "tools/gpu-host-smoke.sh", "/out", "--quick", "--skip-model", "--skip-attention"],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "wrote /out/cpu-host.json" in done.stdout
    document = json.loads((out / "cpu-host.json").read_text())
    assert document["variant"] == "host"
    # The skip flags are in the result, and the report counts the run as limited by them.
    assert document["options"] == {"skip_model": True, "skip_attention": True, "quick": True, "bench": True}
    declared = {c["name"]: c for c in document["checks"]}
    assert declared["environment.torch-version"]["status"] == "pass"  # --torch 2.11.0+cu130, held to it
    assert declared["environment.cuda-version"]["status"] == "pass"
    assert declared["environment.driver"]["message"].startswith("no driver")
    head = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    )
    assert document["host"]["commit"] == head.stdout.strip()  # no git in the image: read from .git
    checks = {c["name"]: c for c in document["checks"]}
    assert document["benchmark"]["quick"] is True
    assert document["benchmark"]["machine"]["torch"] == "2.11.0+cu130"
    assert document["benchmark"]["published"]["url"] == "https://arxiv.org/abs/2407.08608"
    for backend in ("bench.sdpa.math", "bench.sdpa.flash"):
        assert checks[backend]["status"] == "pass", checks[backend]["message"]
        cases = checks[backend]["data"]["cases"]
        assert len(cases) == len(shapes(quick=True))
        for case in cases:
            assert case["seconds"]["repetitions"] >= 5 and case["seconds"]["timed_seconds"] >= 0.1
            assert case["seconds"]["min"] <= case["seconds"]["median"] <= case["seconds"]["max"]
            assert case["tflops_range"][0] <= case["tflops"] <= case["tflops_range"][1]
        assert all(j["passed"] for j in checks[backend]["data"]["correctness"])
    for backend in ("bench.sdpa.efficient", "bench.sdpa.cudnn"):  # GPU-only backends: skipped, saying why
        assert checks[backend]["status"] == "skipped" and "No viable backend" in checks[backend]["message"]

    options = Options.for_matrix(
        REPO / "matrix.yaml", tmp_path / "no-build", results=(out / "cpu-host.json",)
    )
    built, _ = api.report(options, tmp_path / "report")
    (run,) = built.benchmarks
    assert run.gpu == "CPU" and run.quick and set(run.backend_names()) == {"sdpa.flash", "sdpa.math"}
    assert "host" in built.variants and {r.gpu: r for r in built.rows}["CPU"].cells["host"].status == "pass"
    markdown = (tmp_path / "report" / "compat.md").read_text()
    assert "## Attention benchmark" in markdown and "| sdpa.flash | bfloat16 | 64 | full |" in markdown
    dom = dom_of(tmp_path / "report" / "compat.html", tmp_path)
    table = dom.split('<table class="bench" id="bench-0">')[1].split("</table>")[0]
    assert table.count("<tr>") == 1 + 2 * 2 * 2  # header, 2 backends x 2 head dims x 2 masks
    assert 'id="bench-plot-0"' in dom and "data:image/png;base64," in dom


def _uid() -> int:
    import os

    return os.getuid()


def test_buildtool_smoke_passes_bench_quick_only_and_budget_to_every_image(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from buildtool import smoke_runner

    image = smoke_runner.BuiltImage("v", "localhost:5000/v:t", "sha256:" + "a" * 64)
    seen: list[tuple[tuple[str, ...], float]] = []
    monkeypatch.setattr(smoke_runner, "built_images", lambda build_dir, select: [image])
    monkeypatch.setattr(smoke_runner, "host_has_gpu", lambda: False)
    monkeypatch.setattr(
        smoke_runner,
        "run_in_image",
        lambda image, out, gpu, timeout, extra_args: seen.append((extra_args, timeout)),
    )
    smoke_runner.smoke(tmp_path, bench=True, quick=True)
    smoke_runner.smoke(tmp_path)
    smoke_runner.smoke(tmp_path, only=("attention.kernel.flash-attn3", "environment"))
    smoke_runner.smoke(tmp_path, bench=True, budget=480)
    smoke_runner.smoke(tmp_path, budget=7200.5)
    assert seen == [
        (("--quick", "--bench"), 1800),
        ((), 1800),
        (("--only", "attention.kernel.flash-attn3", "--only", "environment"), 1800),
        (("--bench", "--budget", "480"), 1800),
        # A budget past the container's own limit raises that limit: the run gets to write its result.
        (("--budget", "7200.5"), 7200.5 + smoke_runner.BUDGET_OVERRUN),
    ]


def test_a_run_names_the_kernels_it_benchmarked_and_where_it_ran() -> None:
    from buildtool.report.benchmark_html import provenance

    case = {"dtype": "float16", "head_dim": 128, "causal": False, "seqlen": 4096, "batch": 4, "heads": 16,
            "tflops": 600.0, "tflops_range": [590.0, 610.0], "seconds": {"repetitions": 40},
            "paper_tflops": 638.0, "percent_of_paper": 94.0}  # fmt: skip
    kernel = {"repo_id": "kernels-community/flash-attn3", "revision": "v1", "commit": "c0ffee"}
    document = {
        "variant": "worker-embed-runpod-torch211-cu130",
        "started": "2026-11-23T03:00:00+00:00",
        "image": {"digest": "sha256:" + "b" * 64, "revision": "6167c4a"},
        "host": {"hostname": "gpu-1"},
        "benchmark": {"machine": {"gpu": "NVIDIA H100 80GB HBM3", "sm_count": 132, "power_limit_w": 700.0,
                                  "driver": "580.95.05", "torch": "2.11.0+cu130", "cuda": "13.0",
                                  "cudnn": 91900, "hostname": "gpu-1"},
                      "quick": False, "timing": {"min_timed_seconds": 0.1}, "published": published.SOURCE},
        "checks": [{"name": "bench.kernel.flash-attn3", "status": "pass", "message": "",
                    "data": {"cases": [case], "kernel": kernel, "paper_series": published.FA3}}],
    }  # fmt: skip
    run = benchmark.bench_run("H100", "samples/h100.json", document)
    assert run is not None and run.kernels == ("kernels-community/flash-attn3@v1 (commit c0ffee)",)
    assert [p.percent_of_paper for p in run.points] == [94.0]
    text = provenance(run)
    for expected in ("NVIDIA H100 80GB HBM3", "132 SMs", "700 W power limit", "driver 580.95.05",
                     "kernel kernels-community/flash-attn3@v1", "commit 6167c4a", "sha256:bbbb"):  # fmt: skip
        assert expected in text
    assert benchmark.bench_run("CPU", "x.json", {**document, "benchmark": None}) is None
    # nvidia-smi's words where it gave no number (machine.py keeps them): shown, not a crash.
    document["benchmark"]["machine"]["power_limit_w"] = "Unknown Error"
    unreadable = benchmark.bench_run("H100", "samples/h100.json", document)
    assert unreadable is not None and "power limit: Unknown Error" in provenance(unreadable)


def test_the_commit_is_read_from_git_files_where_no_git_is_installed(tmp_path: Path) -> None:
    from smoke.suite import _head_from_files

    git_dir = tmp_path / ".git"
    (git_dir / "refs" / "heads").mkdir(parents=True)
    (git_dir / "HEAD").write_text("ref: refs/heads/main\n")
    (git_dir / "packed-refs").write_text(
        "# pack-refs with: peeled fully-peeled sorted\n" + "a" * 40 + " refs/heads/main\n"
    )
    assert _head_from_files(git_dir) == "a" * 40  # a fresh clone keeps its branch in packed-refs
    (git_dir / "refs" / "heads" / "main").write_text("b" * 40 + "\n")
    assert _head_from_files(git_dir) == "b" * 40
    (git_dir / "HEAD").write_text("c" * 40 + "\n")  # detached, as CI checks out
    assert _head_from_files(git_dir) == "c" * 40


# How torch names each SKU's device (torch.cuda.get_device_name), as RunPod's cards report it.
DEVICE_NAMES = {
    "H100 SXM5": "NVIDIA H100 80GB HBM3",
    "H100 PCIe": "NVIDIA H100 PCIe",
    "H100 NVL": "NVIDIA H100 NVL",
    "H200 SXM": "NVIDIA H200",
    "H200 NVL": "NVIDIA H200 NVL",
    "A100 SXM4": "NVIDIA A100-SXM4-80GB",
    "A100 PCIe": "NVIDIA A100 80GB PCIe",
    "A40": "NVIDIA A40",
    "RTX 4090": "NVIDIA GeForce RTX 4090",
}


def paper_run(device: str) -> benchmark.BenchRun:
    """The paper's own figures as a run on `device`: its FA3 as the FA3 kernel, its FA2 as torch's
    flash backend and as the FA2 kernel (the same algorithm), at every shape it has a figure for."""
    points = []
    for (head_dim, causal), series in published.FIGURES.items():
        for index, seqlen in enumerate(published.SEQLENS):
            for backend, name in (
                ("kernel.flash-attn3", published.FA3),
                ("sdpa.flash", published.FA2),
                ("kernel.flash-attn2", published.FA2),
            ):
                value = series.get(name, (None,) * len(published.SEQLENS))[index]
                if value is None:
                    continue
                points.append(
                    benchmark.BenchPoint(
                        backend, "float16", head_dim, causal, seqlen, 16384 // seqlen, 2048 // head_dim,
                        float(value), (float(value), float(value)), 10, name, float(value), 100.0,
                    )
                )  # fmt: skip
    return replace(run_with(*points), machine={"gpu": device})


def test_every_floor_passes_on_the_papers_own_figures() -> None:
    """A floor the reference misses measures nothing: the paper's FA3 against its own FA2 (and its
    figures against themselves) passes every floor, on every SKU that has one."""
    floored = {sku for floor in facts.BENCH_FLOORS for sku in floor.skus}
    assert floored <= {sku for sku, _ in facts.GPU_SKUS}  # every floor names a SKU the table knows
    for sku in sorted(floored):
        assert facts.gpu_sku(DEVICE_NAMES[sku]) == sku
        verdicts = benchmark.floor_verdicts([paper_run(DEVICE_NAMES[sku])])
        assert verdicts and all(v.status == "pass" for v in verdicts), (sku, verdicts)
    ratios = [
        fa3 / fa2
        for series in published.FIGURES.values()
        for seqlen, fa3, fa2 in zip(
            published.SEQLENS, series[published.FA3], series[published.FA2], strict=True
        )
        if seqlen >= 2048 and fa3 and fa2
    ]
    ratio_floor = next(
        f for f in facts.BENCH_FLOORS if f.backend == "kernel.flash-attn3" and f.versus != "paper"
    )
    assert round(min(ratios), 2) == 1.42 and ratio_floor.minimum <= min(ratios)


def test_floors_are_per_exact_sku_and_a_card_without_one_says_so() -> None:
    """The paper's figures are an H100 SXM5's: an H100 PCIe is held to FA3's ratio over FA2 but not
    to them; a card the table does not know gets 'no floor', not the nearest name's."""
    pcie = benchmark.floor_verdicts([paper_run("NVIDIA H100 PCIe")])
    assert [v.floor for v in pcie] == ["kernel.flash-attn3 >= 1.3x sdpa.flash (seqlen >= 2048)"]
    (unknown,) = benchmark.floor_verdicts([paper_run("NVIDIA L40S")])
    assert (
        unknown.status == "no floor"
        and "NVIDIA L40S is a card facts.GPU_SKUS does not know" in unknown.detail
    )
    cpu = replace(paper_run("x"), machine={"cpu": "AMD EPYC"})
    assert benchmark.floor_verdicts([cpu]) == ()  # a CPU run: the floors are about GPUs
    assert facts.gpu_sku("NVIDIA H100 80GB HBM3") == "H100 SXM5" and facts.gpu_sku("NVIDIA H100") is None


def test_the_host_script_holds_the_host_to_the_default_variants_base_and_its_driver_floor() -> None:
    script = (REPO / "tools" / "gpu-host-smoke.sh").read_text()
    defaults = dict(re.findall(r"\$\{(SMOKE_TORCH|SMOKE_CUDA|SMOKE_DRIVER_FLOOR|BUDGET):-([^}]+)\}", script))
    checked = api.plan_and_check(Options.for_matrix(REPO / "matrix.yaml"))
    default = next(v for v in checked.variants if v.name == checked.plan.default_variant)
    assert defaults["SMOKE_TORCH"] == default.base.torch and defaults["SMOKE_CUDA"] == default.base.cuda
    assert defaults["SMOKE_DRIVER_FLOOR"] == facts.DRIVER_FLOOR_BY_CUDA[default.base.cuda]
    assert 0 < float(defaults["BUDGET"]) <= 7 * 60 - 30  # the suite and the benchmark inside 7 minutes
    for flag in ("--torch", "--cuda", "--driver-floor", "--budget", "--bench"):
        assert flag in script
