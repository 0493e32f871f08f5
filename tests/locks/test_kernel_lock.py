"""Kernels at commits: `buildtool lock` records the commit each kernel revision names on a Hub (the
stand-in, over real HTTP), builds bake that commit, and a lock entry naming a branch is refused."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO, Project
from hub_standin import Hub, Repo

FA = ("kernels-community/vllm-flash-attn3", "kernels-community/flash-attn2")


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Hub]:
    kernel = REPO / "tests" / "kernels" / "sdpa-attention"
    server = Hub(("127.0.0.1", 0), {r: Repo(r, kernel, ("v1", "main")) for r in FA}, tmp_path / "hub.log")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    yield server
    server.shutdown()
    server.server_close()


def rendered_kernels(project: Project, variant: str) -> list[dict]:  # type: ignore[type-arg]
    return json.loads((project.root / "build" / variant / "kernels.lock.json").read_text())["kernels"]


RUNTIME = "pytorch-runtime-runpod-torch211-cu130"


def test_lock_records_the_commit_each_revision_names_and_the_build_bakes_it(
    cli,  # type: ignore[no-untyped-def]
    project: Project,
    hub: Hub,
) -> None:
    result = cli("lock", "--matrix", str(project.matrix), "--kernels-only")
    assert result.code == 0, result.err
    commit = hub.repos[FA[0]].sha
    assert f"{FA[0]}@v1  {commit}" in result.out
    lock = json.loads((project.root / "matrix.lock").read_text())
    assert lock["kernels"] == {f"{r}@v1": {"commit": commit} for r in FA} and lock["bases"] == {}
    assert "GET /api/kernels/kernels-community/flash-attn2/revision/v1" in (hub.log or Path()).read_text()
    assert (
        cli("render", "--matrix", str(project.matrix), "--select", RUNTIME, "--commit", project.commit).code
        == 0
    )
    assert [(k["repo_id"], k["revision"]) for k in rendered_kernels(project, RUNTIME)] == [
        (r, commit) for r in FA
    ]


def test_without_a_lock_entry_the_build_bakes_the_branch(cli, project: Project) -> None:  # type: ignore[no-untyped-def]
    assert (
        cli("render", "--matrix", str(project.matrix), "--select", RUNTIME, "--commit", project.commit).code
        == 0
    )
    assert {k["revision"] for k in rendered_kernels(project, RUNTIME)} == {"v1"}


def test_a_lock_entry_naming_a_branch_is_refused(cli, project: Project) -> None:  # type: ignore[no-untyped-def]
    lock = {"version": 1, "bases": {}, "kernels": {f"{FA[1]}@v1": {"commit": "v1"}}}
    (project.root / "matrix.lock").write_text(json.dumps(lock))
    result = cli("check", "--matrix", str(project.matrix))
    assert result.code == 2
    assert f"matrix.lock: kernels entry '{FA[1]}@v1' records 'v1', which is not a commit" in result.err
    assert "buildtool lock" in result.err and "Traceback" not in result.err


def test_a_revision_the_hub_does_not_have_is_one_clear_error(cli, project: Project, hub: Hub) -> None:  # type: ignore[no-untyped-def]
    for repo in FA:
        hub.repos[repo] = Repo(repo, hub.repos[repo].root, ("main",))  # no v1 branch
    result = cli("lock", "--matrix", str(project.matrix), "--kernels-only")
    assert result.code == 1
    assert "the Hub refused kernels-community/flash-attn2@v1: RevisionNotFound" in result.err
    assert not (project.root / "matrix.lock").exists()  # nothing half-written


def test_an_unreachable_hub_says_where_and_what_to_do(
    cli,  # type: ignore[no-untyped-def]
    project: Project,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard: nothing listens
    result = cli("lock", "--matrix", str(project.matrix), "--kernels-only")
    assert result.code == 1
    assert "cannot reach the Hub at http://127.0.0.1:9" in result.err and "--bases-only" in result.err
