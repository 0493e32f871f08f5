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

WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))


def test_there_are_ci_and_release_workflows() -> None:
    assert [w.name for w in WORKFLOWS] == ["ci.yml", "release.yml"]


def test_zizmor_reports_nothing() -> None:
    zizmor = shutil.which("zizmor")
    assert zizmor, "zizmor is not installed (pip install zizmor)"
    done = subprocess.run(
        [zizmor, "--offline", "--no-progress", str(REPO / ".github" / "workflows")],
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
    bin_dir = tmp_path / "bin"  # `python` as the runner's setup-python provides it
    bin_dir.mkdir()
    # A wrapper, not a symlink: a virtualenv's Python run through a symlink elsewhere looks for
    # pyvenv.cfg next to the link and loses the environment (virtualenv-made envs, without uv).
    wrapper = bin_dir / "python"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    env = {
        **os.environ,
        "GITHUB_OUTPUT": str(output),
        "PYTHONPATH": str(REPO),
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
    }
    subprocess.run(["bash", "-e", "-c", script], cwd=REPO, env=env, check=True, capture_output=True)
    outputs = dict(re.findall(r"^([\w-]+)<<PLAN_EOF\n(.*?)\nPLAN_EOF$", output.read_text(), re.S | re.M))
    assert json.loads(outputs["matrix"]) == json.loads(run_module("plan", "--json").out)
    assert json.loads(outputs["smoke-matrix"]) == json.loads(run_module("plan", "--json", "--per-gpu").out)
    for entry in json.loads(outputs["smoke-matrix"])["include"]:
        assert entry["runner"][:1] == ["self-hosted"] and entry["runner"][-1] == f"gpu-{entry['gpu'].lower()}"
