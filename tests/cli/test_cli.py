"""The acceptance list of the matrix/policy/render issue, through the real CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import REPO, Project, committed_copy, run_module
from rehearsal import parse_file_command

from buildtool import api
from buildtool.cli import github
from buildtool.config.options import Options
from buildtool.errors import ConfigError


def test_check_passes_on_the_repository_matrix_and_shows_b200_refused() -> None:
    result = run_module("check")
    assert result.code == 0, result.err
    assert "B200" in result.out and "sm_100" in result.out
    assert "refused GPU targets" in result.out
    assert "Blackwell" in result.out  # the reason, not only the name


def test_tables_in_a_ci_log_keep_a_row_per_variant() -> None:
    """A CI log is no terminal and has no $COLUMNS: rich alone would fold the plan's table into 80
    columns, each variant name over several lines, and a log reader could not grep for one."""
    result = run_module("plan", env={"COLUMNS": ""})
    assert result.code == 0, result.err
    names = [entry["variant"] for entry in json.loads(run_module("plan", "--json").out)["include"]]
    rows = [line for line in result.out.splitlines() if line.startswith("│")]
    for name in names:
        assert any(row.split("│")[1].strip() == name for row in rows), f"{name} folded:\n{result.out}"


def test_no_variant_targets_b200() -> None:
    result = run_module("plan", "--json")
    assert result.code == 0, result.err
    plan = json.loads(result.out)
    assert plan["include"], "the repository matrix plans no variant"
    for entry in plan["include"]:
        assert "B200" not in entry["gpus"]
        assert "sm_100" not in entry["archs"]
        assert [r["gpu"] for r in entry["refused_gpus"]] == ["B200"]


def test_raw_nvidia_cuda_base_exits_2_naming_file_and_line(project: Project) -> None:
    project.edit(
        "ref: runpod/pytorch:2.11.0-cuda13.0-cudnn9-devel", "ref: nvidia/cuda:13.0.0-devel-ubuntu22.04"
    )
    line = project.line_of("nvidia/cuda:13.0.0")
    result = run_module("check", "--matrix", str(project.matrix))
    assert result.code == 2
    assert f"matrix.yaml:{line}:" in result.err
    assert "nvidia/cuda" in result.err and "stuck" in result.err
    assert "Traceback" not in result.err


def test_torch_cu128_on_cuda_13_base_exits_2(project: Project) -> None:
    project.edit(
        'torch: 2.11.0+cu130\n    python: "3.11"\n    cuda_compat: true',
        'torch: 2.11.0+cu128\n    python: "3.11"\n    cuda_compat: true',
    )
    line = project.line_of("2.11.0+cu128")
    result = run_module("check", "--matrix", str(project.matrix))
    assert result.code == 2
    assert f"matrix.yaml:{line}:" in result.err
    assert "CUDA 12.8" in result.err and "CUDA 13.0" in result.err
    assert "fix:" in result.err


def test_variant_targeting_sm_100_exits_2_naming_the_variant(project: Project) -> None:
    project.edit("  gpus: all\n", "  gpus: [H100, B200]\n")
    line = project.line_of("gpus: [H100, B200]")
    result = run_module("check", "--matrix", str(project.matrix))
    assert result.code == 2
    assert "sm_100" in result.err
    assert "[worker-embed-runpod-torch211-cu130]" in result.err
    assert f"matrix.yaml:{line}:" in result.err


def test_render_twice_gives_byte_identical_files(project: Project) -> None:
    def snapshot() -> dict[str, bytes]:
        build = project.root / "build"
        return {str(p.relative_to(build)): p.read_bytes() for p in sorted(build.rglob("*")) if p.is_file()}

    assert run_module("render", "--matrix", str(project.matrix), "--commit", project.commit).code == 0
    first = snapshot()
    assert run_module("render", "--matrix", str(project.matrix), "--commit", project.commit).code == 0
    assert snapshot() == first
    assert "docker-bake.json" in first


def test_unknown_key_suggests_the_right_one(project: Project) -> None:
    project.edit("    cuda_compat: true", "    cuda_compatt: true")
    line = project.line_of("cuda_compatt")
    result = run_module("plan", "--matrix", str(project.matrix))
    assert result.code == 2
    assert f"matrix.yaml:{line}:" in result.err
    assert "Perhaps you meant 'cuda_compat'?" in result.err


def test_github_actions_annotations(project: Project) -> None:
    project.edit(
        "ref: runpod/pytorch:2.11.0-cuda13.0-cudnn9-devel", "ref: nvidia/cuda:13.0.0-devel-ubuntu22.04"
    )
    line = project.line_of("nvidia/cuda")
    result = run_module("check", "--matrix", str(project.matrix), env={"GITHUB_ACTIONS": "true"})
    assert result.code == 2
    assert f"::error file={project.matrix},line={line}::" in result.err  # stdout stays clean


def test_traceback_only_with_debug(project: Project) -> None:
    project.matrix.write_text("version: 1\nbases: [\n")
    plain = run_module("plan", "--matrix", str(project.matrix))
    assert plain.code == 2 and "Traceback" not in plain.err and "malformed YAML" in plain.err
    debug = run_module("plan", "--matrix", str(project.matrix), "--debug")
    assert "Traceback" in debug.err


def test_select_by_pattern() -> None:
    result = run_module("plan", "--json", "--select", "worker-*cu130*")
    assert result.code == 0, result.err
    names = [e["variant"] for e in json.loads(result.out)["include"]]
    assert names == [
        "worker-diffusion-runpod-torch211-cu130",
        "worker-embed-pytorch-torch211-cu130",
        "worker-embed-runpod-torch211-cu130",
        "worker-vllm-runpod-torch211-cu130",
    ]


def test_select_matching_nothing_exits_2_with_a_suggestion() -> None:
    result = run_module("plan", "--select", "worker-embed-runpod-torch211-cu13")
    assert result.code == 2
    assert "matches no variant" in result.err
    assert "Perhaps you meant 'worker-embed-runpod-torch211-cu130'?" in result.err


def test_console_script_runs_like_the_module() -> None:
    """`pip install .` puts a `buildtool` command on PATH (the README's usage)."""
    script = shutil.which("buildtool")
    assert script, "buildtool is not installed: pip install -e ."
    done = subprocess.run([script, "plan", "--json"], capture_output=True, text=True, cwd=REPO, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == json.loads(run_module("plan", "--json").out)


def test_report_names_a_result_file_it_cannot_read(project: Project, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    for results, words in (
        (bad, "not a smoke result"),
        (tmp_path / "nope.json", "cannot read the smoke result"),
    ):
        result = run_module(
            "report",
            "--matrix",
            str(project.matrix),
            "--results",
            str(results),
            "--out",
            str(tmp_path / "out"),
        )
        assert result.code == 2, result.err
        assert f"{results}:" in result.err and words in result.err and "internal error" not in result.err
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_render_refuses_a_kernels_local_that_is_no_directory(project: Project, tmp_path: Path) -> None:
    result = run_module(
        "render",
        "--matrix",
        str(project.matrix),
        "--commit",
        project.commit,
        "--kernels-local",
        str(tmp_path / "absent"),
    )
    assert result.code == 2 and "--kernels-local is not a directory" in result.err
    assert not (project.root / "build").exists()


def test_release_against_an_unreachable_registry_is_one_clear_failure(tmp_path: Path) -> None:
    checkout = committed_copy(REPO, tmp_path / "checkout")
    result = run_module("release", "v1.0.0", "--registry", "localhost:1", cwd=checkout)
    assert result.code == 1
    assert "registry localhost:1" in result.err and "docker login" in result.err
    assert "internal error" not in result.err and "Traceback" not in result.err


def test_plan_json_stays_one_json_document_on_a_github_runner() -> None:
    """The repository's matrix warns (a Tier-2 base); under GITHUB_ACTIONS=true the annotation goes
    to stderr and stdout, which the plan step writes to $GITHUB_OUTPUT, stays one JSON document."""
    result = run_module("plan", "--json", env={"GITHUB_ACTIONS": "true"})
    assert result.code == 0, result.err
    assert "::warning " in result.err
    assert "include" in json.loads(result.out)


def test_plan_github_output_writes_both_matrices_where_nothing_else_reaches(tmp_path: Path) -> None:
    output = tmp_path / "github_output"
    output.write_text("earlier=kept\n")
    env = {"GITHUB_ACTIONS": "true", "GITHUB_OUTPUT": str(output)}
    result = run_module("plan", "--github-output", env=env)
    assert result.code == 0, result.err
    assert result.out == ""  # the warnings' annotations go to stderr, the matrices to the file
    outputs = parse_file_command(output.read_text())
    assert outputs.pop("earlier") == "kept"
    assert sorted(outputs) == ["matrix", "smoke-matrix"]
    assert json.loads(outputs["matrix"]) == json.loads(run_module("plan", "--json").out)
    assert json.loads(outputs["smoke-matrix"]) == json.loads(run_module("plan", "--json", "--per-gpu").out)


def test_plan_github_output_outside_a_runner_says_what_to_use() -> None:
    result = run_module("plan", "--github-output", env={"GITHUB_OUTPUT": ""})
    assert result.code == 2 and "$GITHUB_OUTPUT is not set" in result.err and "plan --json" in result.err


def test_a_smoke_matrix_over_githubs_job_limit_is_refused_before_the_run(
    project: Project, tmp_path: Path
) -> None:
    """45 GPUs x 7 variants: GitHub would refuse the smoke job's matrix (256 at most) at run time."""
    rows = "".join(
        f"  - {{name: G{n}, runpod_id: NVIDIA G{n}, arch: sm_90, flash_attention: 3}}\n" for n in range(40)
    )
    project.edit("gpus:\n", "gpus:\n" + rows)
    output = tmp_path / "github_output"
    for args in (("--github-output",), ("--json", "--per-gpu")):
        result = run_module(
            "plan", "--matrix", str(project.matrix), *args, env={"GITHUB_OUTPUT": str(output)}
        )
        assert result.code == 2, result.err
        assert "smoke-matrix for GitHub Actions has" in result.err and "more than 256" in result.err
        assert "--select" in result.err and "Traceback" not in result.err
    assert not output.exists()  # nothing half-written
    assert run_module("plan", "--matrix", str(project.matrix), "--json").code == 0  # 7 build jobs are fine


def test_a_build_matrix_over_githubs_job_limit_names_the_matrix_file() -> None:
    checked = api.plan_and_check(Options.for_matrix(REPO / "matrix.yaml"))
    too_many = {"include": [{"variant": str(n)} for n in range(github.MAX_MATRIX_JOBS + 1)]}
    with pytest.raises(ConfigError) as raised:
        github.within_job_limit("matrix", too_many, checked)
    [problem] = raised.value.problems
    assert "has 257 jobs (one per variant)" in problem.message and problem.location is not None
    assert problem.location.file.name == "matrix.yaml"
