"""The GitHub Actions workflows: valid, pinned, least-privilege, injection-free, and fed by the CLI."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO, run_module
from expressions import Context, Evaluator, Missing
from rehearsal import parse_file_command, status_functions

WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))


def test_there_are_ci_and_release_workflows() -> None:
    assert [w.name for w in WORKFLOWS] == ["ci.yml", "fresh.yml", "release.yml", "vllm.yml"]


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda w: w.name)
def test_every_python_package_a_workflow_installs_comes_from_a_hashed_lock(workflow: Path) -> None:
    """A release published overnight must not change what a job runs: pip installs a lock exactly
    (--require-hashes --no-deps) or buildtool through install-tool.sh, which does the same."""
    for step in steps(workflow):
        for line in step.get("run", "").splitlines():
            if "pip install" in line:
                assert "--require-hashes --no-deps -r requirements/" in line, line
    script = (REPO / ".github" / "scripts" / "install-tool.sh").read_text()
    assert "--require-hashes --no-deps -r requirements/tool.txt" in script
    assert "--no-deps --no-build-isolation ." in script and "pip check" in script


def test_a_weekly_build_from_nothing_meets_what_a_new_user_meets() -> None:
    document = yaml.safe_load((REPO / ".github" / "workflows" / "fresh.yml").read_text())
    triggers = document[True]  # YAML 1.1 reads the key 'on' as true
    assert [entry["cron"] for entry in triggers["schedule"]] == ["17 5 * * 1"]
    job = document["jobs"]["from-nothing"]
    runs = "\n".join(step.get("run", "") for step in job["steps"])
    assert "nox -s build -- --default --cold" in runs
    setup = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/setup-python@"))
    assert "cache" not in setup["with"]  # no pip cache: a new user has none


def test_zizmor_reports_nothing() -> None:
    zizmor = shutil.which("zizmor")
    assert zizmor, "zizmor is not installed (pip install zizmor)"
    done = subprocess.run(
        [
            zizmor,
            "--offline",
            "--no-progress",
            "--pedantic",
            str(REPO / ".github" / "workflows"),
            str(REPO / ".github" / "dependabot.yml"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "No findings to report" in done.stdout + done.stderr


def test_workflows_validate_against_the_github_schema() -> None:
    checker = shutil.which("check-jsonschema")
    assert checker, "check-jsonschema is not installed"
    done = subprocess.run(
        [checker, "--builtin-schema", "vendor.github-workflows", *map(str, WORKFLOWS)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def steps(workflow: Path) -> list[dict]:  # type: ignore[type-arg]
    document = yaml.safe_load(workflow.read_text())
    return [step for job in document["jobs"].values() for step in job.get("steps", [])]


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda w: w.name)
def test_actions_are_pinned_and_run_scripts_expand_nothing(workflow: Path) -> None:
    for step in steps(workflow):
        if "uses" in step:
            assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", step["uses"]), step["uses"]
        if "run" in step:
            assert "${{" not in step["run"], f"an expression inside run: {step['run'][:80]}"


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda w: w.name)
def test_permissions_are_per_job_and_default_to_none(workflow: Path) -> None:
    document = yaml.safe_load(workflow.read_text())
    assert document["permissions"] == {}
    for name, job in document["jobs"].items():
        assert "permissions" in job, name
        assert "write-all" not in str(job["permissions"]), name


def test_the_plan_the_workflow_consumes_is_what_the_cli_prints(tmp_path: Path) -> None:
    """Run the plan job's own script, as the runner would, and read $GITHUB_OUTPUT back."""
    plan = yaml.safe_load((REPO / ".github" / "workflows" / "ci.yml").read_text())["jobs"]["plan"]
    script = next(s["run"] for s in plan["steps"] if s.get("id") == "plan")
    output = tmp_path / "github_output"
    output.touch()
    bin_dir = tmp_path / "bin"  # `python` as the runner's setup-python provides it
    bin_dir.mkdir()
    # A wrapper, not a symlink: a virtualenv's Python run through a symlink elsewhere looks for
    # pyvenv.cfg next to the link and loses the environment (virtualenv-made envs, without uv).
    wrapper = bin_dir / "python"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    env = {
        **os.environ,
        "GITHUB_ACTIONS": "true",
        "GITHUB_OUTPUT": str(output),
        "PYTHONPATH": str(REPO),
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
    }
    done = subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    outputs = parse_file_command(output.read_text())
    job_outputs = {
        name: re.fullmatch(r"\$\{\{ steps\.plan\.outputs\.([\w-]+) \}\}", value)
        for name, value in plan["outputs"].items()
    }
    assert all(job_outputs.values()) and {m.group(1) for m in job_outputs.values() if m} == set(outputs)
    assert json.loads(outputs["matrix"]) == json.loads(run_module("plan", "--json").out)
    assert json.loads(outputs["smoke-matrix"]) == json.loads(run_module("plan", "--json", "--per-gpu").out)
    for entry in json.loads(outputs["smoke-matrix"])["include"]:
        assert entry["runner"][:1] == ["self-hosted"] and entry["runner"][-1] == f"gpu-{entry['gpu'].lower()}"


def jobs(workflow: Path) -> dict[str, dict]:  # type: ignore[type-arg]
    return dict(yaml.safe_load(workflow.read_text())["jobs"])


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda w: w.name)
def test_every_job_has_a_timeout(workflow: Path) -> None:
    for name, job in jobs(workflow).items():
        assert 0 < int(job["timeout-minutes"]) <= 180, name


def test_only_pull_requests_cancel_their_previous_run() -> None:
    ci = yaml.safe_load((REPO / ".github" / "workflows" / "ci.yml").read_text())
    assert ci["concurrency"]["cancel-in-progress"] == "${{ github.event_name == 'pull_request' }}"
    assert "github.sha" in ci["concurrency"]["group"]  # a push to main: a group of its own
    release = yaml.safe_load((REPO / ".github" / "workflows" / "release.yml").read_text())
    assert release["concurrency"] == {"group": "release", "cancel-in-progress": False}


def test_gpu_jobs_run_for_pushes_only_and_after_a_partly_failed_build() -> None:
    smoke = jobs(REPO / ".github" / "workflows" / "ci.yml")["smoke"]
    assert smoke["runs-on"] == "${{ matrix.runner }}"
    assert "!cancelled()" in smoke["if"] and "github.event_name == 'push'" in smoke["if"]


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda w: w.name)
def test_hand_off_artifacts_fail_when_empty_and_survive_a_rerun(workflow: Path) -> None:
    for name, job in jobs(workflow).items():
        for step in job.get("steps", []):
            if step.get("uses", "").startswith("actions/upload-artifact@"):
                assert step["with"]["if-no-files-found"] == "error", name
                assert step["with"]["overwrite"] is True, name


def test_dependabot_updates_the_actions_and_the_python_dependencies() -> None:
    config = yaml.safe_load((REPO / ".github" / "dependabot.yml").read_text())
    assert {u["package-ecosystem"] for u in config["updates"]} == {"github-actions", "pip"}


def evaluate(text: str, failed: bool = False, **contexts: object) -> object:
    return Evaluator({k: Context(k, v) for k, v in contexts.items()}, status_functions(failed)).evaluate(text)


def test_the_rehearsals_expressions_follow_githubs_rules() -> None:
    github = {"event_name": "push", "ref": "refs/heads/main"}
    assert evaluate("github.event_name == 'PUSH'", github=github) is True  # case-insensitive
    assert evaluate("github.event_name == 'pull_request' && 'yes' || 'no'", github=github) == "no"
    assert evaluate("!cancelled() && github.event_name == 'push'", github=github) is True
    assert evaluate("success()", failed=True) is False and evaluate("always()", failed=True) is True
    assert evaluate("fromJSON('{\"include\": [1]}').include[0]") == 1
    assert evaluate("success() && steps.nope.outputs.x", failed=True) is False  # short-circuit
    with pytest.raises(Missing, match=r"steps\.plan\.outputs\.smoke is not set \(set: matrix\)"):
        evaluate(
            "steps.plan.outputs.smoke",
            steps={"plan": {"outputs": Context("steps.plan.outputs", {"matrix": ""})}},
        )
