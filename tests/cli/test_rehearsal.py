"""The workflows rehearsed end to end (tests/rehearsal.py): ci.yml's plan -> build (one variant) ->
smoke -> report on a push to main, then release.yml on the tag v0.0.1, against the local engine and a
registry:2 standing in for GHCR. Then the same rehearsal with one name broken at a time, which must
fail, saying where."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REPO, Project, RegistryUnderTest, git, running_registry
from rehearsal import Event, JobRun, Rehearsal, RehearsalError

from buildtool.report.results import run_limits

pytestmark = [pytest.mark.container, pytest.mark.slow, pytest.mark.torch_base]
PUSH = Event("push", "refs/heads/main")
TAG = Event("push", "refs/tags/v0.0.1")
VARIANT = "worker-embed-runpod-torch211-cu130"
OWNER = "runpod-images"  # the repository owner, lower-cased as the workflow does


def repository_at_one_commit(destination: Path) -> Project:
    """The repository as a clone would have it (tracked and untracked-but-not-ignored files), with its
    matrix narrowed to one variant on one GPU, committed and tagged v0.0.1."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    project = Project(destination)
    project.edit(
        "  image: [pytorch-runtime, worker-embed, worker-diffusion, worker-vllm]\n"
        "  base: [runpod-torch211-cu130, runpod-torch240-cu124, runpod-torch291-cu130-noble, "
        "pytorch-torch211-cu130]\n"
        "  gpus: all\n",
        "  image: [worker-embed]\n  base: [runpod-torch211-cu130]\n  gpus: [H100]\n",
    )
    git(destination, "init", "-q", "-b", "main")
    git(destination, "add", "-A")
    git(destination, "commit", "-q", "-m", "the commit under rehearsal")
    git(destination, "tag", "v0.0.1")
    return project


@dataclass
class CiRun:
    rehearsal: Rehearsal
    jobs: dict[str, list[JobRun]]

    def one(self, job: str) -> JobRun:
        [run] = self.jobs[job]
        return run


def assert_ok(run: JobRun) -> None:
    assert run.result == "success", f"{run.workflow} {run.job} {run.matrix or ''}: {run.result}\n{run.log}"


def rehearse_ci(rehearsal: Rehearsal, rerun_smoke: bool = False) -> CiRun:
    ci = rehearsal.workflow("ci.yml")
    done: dict[str, list[JobRun]] = {}
    # lint-and-tests and end-to-end run the test suite itself: this rehearsal is part of it.
    done["lint-and-tests"] = [JobRun("ci.yml", "lint-and-tests", None, "success", {})]
    done["plan"] = [rehearsal.job(ci, "plan", PUSH)]
    assert_ok(done["plan"][0])
    for job in ("build", "smoke", "report"):
        needs = {n: done[n][0] for n in ci["jobs"][job]["needs"]}
        entries = rehearsal.matrix_entries(ci, job, needs, PUSH) or [None]
        done[job] = [rehearsal.job(ci, job, PUSH, needs, entry) for entry in entries]
        if job == "smoke" and rerun_smoke:  # "Re-run failed jobs": the same names upload again
            done[job] = [rehearsal.job(ci, job, PUSH, needs, entry) for entry in entries]
        for run in done[job]:
            assert_ok(run)
        # The result of a matrix job, as `needs` sees it: failure if any entry failed.
        if any(r.result == "failure" for r in done[job]):
            break
    return CiRun(rehearsal, done)


@pytest.fixture(scope="module")
def registry_module() -> Iterator[RegistryUnderTest]:
    with running_registry() as running:
        yield running


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Project:
    return repository_at_one_commit(tmp_path_factory.mktemp("repository"))


@pytest.fixture(scope="module")
def rehearsed(
    tmp_path_factory: pytest.TempPathFactory, checkout: Project, registry_module: RegistryUnderTest
) -> CiRun:
    rehearsal = Rehearsal(tmp_path_factory.mktemp("rehearsal"), checkout.root, registry_module.address)
    try:
        return rehearse_ci(rehearsal, rerun_smoke=True)
    finally:
        subprocess.run(["docker", "image", "prune", "--force"], capture_output=True, check=False)


def test_plan_hands_both_matrices_to_the_jobs(rehearsed: CiRun) -> None:
    plan = rehearsed.one("plan")
    assert [e["variant"] for e in json.loads(plan.outputs["matrix"])["include"]] == [VARIANT]
    [smoke] = json.loads(plan.outputs["smoke-matrix"])["include"]
    assert (smoke["variant"], smoke["gpu"], smoke["runner"][0]) == (VARIANT, "H100", "self-hosted")


def test_build_pushes_to_the_registry_and_hands_its_manifest_on(
    rehearsed: CiRun, registry_module: RegistryUnderTest
) -> None:
    manifest = json.loads((rehearsed.rehearsal.artifacts / f"build-{VARIANT}" / "manifest.json").read_text())
    digest = manifest["variants"][VARIANT]["digest"]
    tag = f"runpod-torch211-cu130-{rehearsed.rehearsal.sha}"
    assert registry_module.digest(f"{OWNER}/worker-embed", tag) == digest
    # The job summary GitHub shows: the variant's row, as buildtool build appended it.
    summary = "".join(step.summary for step in rehearsed.one("build").steps)
    row = next(line for line in summary.splitlines() if line.startswith(f"| {VARIANT} |"))
    assert f"| pushed | {digest[:19]} |" in row
    # The runner's daemon.json kept its settings and gained the containerd image store.
    config = json.loads(rehearsed.rehearsal.daemon_config.read_text())
    assert config["cgroup-parent"] == "/actions_job" and config["features"]["containerd-snapshotter"] is True
    assert "systemctl restart docker" in rehearsed.rehearsal.log.read_text()


def test_smoke_runs_in_its_own_environment_names_results_by_gpu_and_cleans_up(rehearsed: CiRun) -> None:
    [smoke] = rehearsed.jobs["smoke"]
    results = rehearsed.rehearsal.artifacts / f"smoke-{VARIANT}-H100"
    assert sorted(p.name for p in results.iterdir()) == [f"{VARIANT}-H100.json", f"{VARIANT}-H100.xml"]
    document = json.loads((results / f"{VARIANT}-H100.json").read_text())
    assert document["budget"] == 1800 and run_limits(document) == ()  # under its budget, and whole
    assert "removed " in smoke.steps[-1].log  # the image it pulled is gone from the host
    manifest = json.loads((rehearsed.rehearsal.artifacts / f"build-{VARIANT}" / "manifest.json").read_text())
    image = manifest["variants"][VARIANT]["image"]
    assert subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode != 0


def test_report_merges_the_smoke_results(rehearsed: CiRun) -> None:
    report = json.loads((rehearsed.rehearsal.artifacts / "compat-report" / "compat.json").read_text())
    assert VARIANT in json.dumps(report)


def test_release_refuses_a_commit_without_a_successful_ci_run(rehearsed: CiRun) -> None:
    rehearsal = rehearsed.rehearsal
    rehearsal.runs.clear()
    rehearsal.record_run("ci.yml", PUSH, "in_progress")
    run = rehearsal.job(rehearsal.workflow("release.yml"), "release", TAG)
    assert run.result == "failure"
    failed = next(s for s in run.steps if s.outcome == "failure")
    assert f"no CI run of {rehearsal.sha}" in failed.log and "in_progress" in failed.log, failed.log
    rehearsal.runs.clear()


def test_release_promotes_the_tested_digest(rehearsed: CiRun, registry_module: RegistryUnderTest) -> None:
    rehearsal = rehearsed.rehearsal
    rehearsal.record_run("ci.yml", PUSH, "failure")  # an earlier attempt, and then the one that passed
    rehearsal.record_run("ci.yml", PUSH, "success")
    release = rehearsal.workflow("release.yml")
    run = rehearsal.job(release, "release", TAG)
    assert_ok(run)
    manifest = json.loads((rehearsal.artifacts / f"build-{VARIANT}" / "manifest.json").read_text())
    digest = manifest["variants"][VARIANT]["digest"]
    for version in ("0.0.1", "0.0", "0"):  # the default variant also gets the plain version tags
        for tag in (f"runpod-torch211-cu130-{version}", version):
            assert registry_module.digest(f"{OWNER}/worker-embed", tag) == digest, tag
    assets = sorted(p.name for p in (rehearsal.releases / "v0.0.1").iterdir())
    assert assets == ["NOTES", "compat.html", "compat.json", "compat.md", "release.json", f"{VARIANT}.json"]
    # The deploy spec of the promoted digest: the release job has no build here, so the container
    # disk comes from the pushed image's layers in the registry.
    spec = json.loads((rehearsal.releases / "v0.0.1" / f"{VARIANT}.json").read_text())
    assert spec["image"].endswith("@" + digest)
    assert spec["disk"]["unpacked_bytes"] == manifest["variants"][VARIANT]["unpacked_size"]
    # A re-run of the release job: the tags are in place, the assets replaced, not an error.
    assert_ok(rehearsal.job(release, "release", TAG))


# --- broken names: each must make the rehearsal fail, saying where ------------------------------


def broken(checkout: Project, tmp: Path, workflow: str, old: str, new: str) -> Rehearsal:
    """A rehearsal of a copy of the checkout in which one workflow has `old` replaced by `new`."""
    copy = tmp / "repository"
    shutil.copytree(checkout.root, copy)
    path = copy / ".github" / "workflows" / workflow
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new))
    git(copy, "commit", "-q", "-am", f"break {workflow}")
    return Rehearsal(tmp / "rehearsal", copy, "localhost:1")


def test_a_wrong_output_name_fails_the_plan_job(checkout: Project, tmp_path: Path) -> None:
    rehearsal = broken(
        checkout,
        tmp_path,
        "ci.yml",
        "${{ steps.plan.outputs.smoke-matrix }}",
        "${{ steps.plan.outputs.smoke }}",
    )
    with pytest.raises(RehearsalError, match=r"output smoke-matrix: steps\.plan\.outputs\.smoke is not set"):
        rehearse_ci(rehearsal)


def rehearse_smoke(rehearsal: Rehearsal, built: CiRun) -> None:
    """plan, then the smoke jobs on what the good rehearsal built (its artifacts and registry)."""
    shutil.rmtree(rehearsal.artifacts)
    shutil.copytree(built.rehearsal.artifacts, rehearsal.artifacts)
    rehearsal.registry_host = built.rehearsal.registry_host
    ci = rehearsal.workflow("ci.yml")
    plan = rehearsal.job(ci, "plan", PUSH)
    assert_ok(plan)
    needs = {"plan": plan, "build": built.one("build")}
    for entry in rehearsal.matrix_entries(ci, "smoke", needs, PUSH):
        assert_ok(rehearsal.job(ci, "smoke", PUSH, needs, entry))


SMOKE_DOWNLOAD = "name: build-${{ matrix.variant }}\n          path: build\n"


@pytest.mark.parametrize(
    ("broken_download", "message"),
    [
        (  # the artifact's name as the smoke job asks for it
            "name: manifest-${{ matrix.variant }}\n          path: build\n",
            f"Artifact not found for name: manifest-{VARIANT}",
        ),
        (  # where it puts it
            "name: build-${{ matrix.variant }}\n          path: builds\n",
            r"build/manifest\.json: No such file",
        ),
    ],
    ids=["artifact-name", "artifact-path"],
)
def test_a_wrong_artifact_name_or_path_fails_the_smoke_job(
    checkout: Project, tmp_path: Path, rehearsed: CiRun, broken_download: str, message: str
) -> None:
    rehearsal = broken(checkout, tmp_path, "ci.yml", SMOKE_DOWNLOAD, broken_download)
    with pytest.raises(AssertionError, match=message):
        rehearse_smoke(rehearsal, rehearsed)
