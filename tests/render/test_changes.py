"""plan --changed-since: the variants a change affects, each side rendered from its own commit."""

from __future__ import annotations

import json

from conftest import Project, git


def commit(project: Project, message: str) -> None:
    git(project.root, "add", "-A")
    git(project.root, "commit", "-q", "-m", message)


def affected(cli, project: Project, since: str = "HEAD~1") -> dict[str, str]:  # type: ignore[no-untyped-def]
    result = cli("plan", "--matrix", str(project.matrix), "--changed-since", since, "--json")
    assert result.code == 0, result.err
    names = {entry["variant"] for entry in json.loads(result.out)["include"]}
    why = dict(
        line.removeprefix("affected: ").split(": ", 1)
        for line in result.err.splitlines()
        if line.startswith("affected: ")
    )
    assert set(why) == names  # the matrix on stdout holds exactly the variants named on stderr
    return why


def variants_of(cli, project: Project, image: str = "") -> set[str]:  # type: ignore[no-untyped-def]
    """Every variant of the plan, or those of `image`."""
    result = cli("plan", "--matrix", str(project.matrix), "--json")
    names = {e["variant"] for e in json.loads(result.out)["include"]}
    return {n for n in names if n.startswith(f"{image}-")} if image else names


def test_a_handler_edit_affects_its_images_variants_alone(cli, project: Project) -> None:  # type: ignore[no-untyped-def]
    handler = project.root / "images" / "worker-embed" / "app" / "handler.py"
    handler.write_text(handler.read_text() + "# a comment\n")
    commit(project, "handler")
    why = affected(cli, project)
    assert set(why) == variants_of(cli, project, "worker-embed")
    assert all(w.endswith("/handler.py differs") for w in why.values())


def test_a_matrix_edit_affects_what_it_renders_differently(cli, project: Project) -> None:  # type: ignore[no-untyped-def]
    project.edit("    version: 0.1.0", "    version: 0.1.1")  # pytorch-runtime's: an OCI label
    commit(project, "version")
    why = affected(cli, project)
    assert set(why) == variants_of(cli, project, "pytorch-runtime") and why
    assert set(why.values()) == {"its image labels differ"}


def test_files_no_build_context_holds_affect_nothing_and_the_tool_everything(cli, project: Project) -> None:  # type: ignore[no-untyped-def]
    (project.root / "README.md").write_text("docs\n")
    commit(project, "docs")
    assert affected(cli, project) == {}
    (project.root / "buildtool").mkdir()
    (project.root / "buildtool" / "stage.py").write_text("x = 1\n")
    commit(project, "tool")
    why = affected(cli, project)
    assert set(why) == variants_of(cli, project)
    assert set(why.values()) == {"the tool changed (buildtool/stage.py)"}
    assert affected(cli, project, "HEAD~2") == why  # since before the docs change too


def test_a_selection_only_the_new_commit_has_is_new_variants(cli, project: Project) -> None:  # type: ignore[no-untyped-def]
    full = "image: [pytorch-runtime, worker-embed, worker-diffusion, worker-vllm]"
    project.edit(full, "image: [pytorch-runtime, worker-embed, worker-diffusion]")
    commit(project, "without vllm")
    project.edit("image: [pytorch-runtime, worker-embed, worker-diffusion]", full)
    commit(project, "with vllm")
    result = cli(
        "plan",
        "--matrix",
        str(project.matrix),
        "--changed-since",
        "HEAD~1",
        "--select",
        "worker-vllm-*",
        "--json",
    )
    assert result.code == 0, result.err
    names = {e["variant"] for e in json.loads(result.out)["include"]}
    assert names == variants_of(cli, project, "worker-vllm") and names
    assert "a new variant (none at " in result.err


def test_an_unknown_commit_is_one_clear_error(cli, project: Project) -> None:  # type: ignore[no-untyped-def]
    result = cli("plan", "--matrix", str(project.matrix), "--changed-since", "no-such-rev")
    assert result.code == 2 and "--changed-since no-such-rev: no such commit" in result.err
    assert "Traceback" not in result.err
