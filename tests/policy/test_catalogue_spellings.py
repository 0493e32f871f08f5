"""Spellings a hostile edit of the catalogue could use to get past two rules: the refused repository
(nvidia/cuda behind any registry host, port, Docker Hub alias or mirror) and the tag cross-check
(a base's `cuda:` against every way a tag writes a CUDA version)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import REPO, Project

from buildtool import refs
from buildtool.config.matrix import load_matrix
from buildtool.errors import Location
from buildtool.plan import make_plan
from buildtool.policy import check_dockerfile, check_plan
from buildtool.policy.catalogue import cuda_agrees, cuda_in_tag, refusal_for, tag_facts

BASE_REF = "ref: runpod/pytorch:2.11.0-cuda13.0-cudnn9-devel"  # runpod-torch211-cu130, cuda: "13.0"
CUDA_TAG = "13.0.0-devel-ubuntu22.04"
DIGEST = "sha256:" + "ab" * 32


def errors_of(project: Project, rule: str) -> list[str]:
    findings = check_plan(make_plan(load_matrix(project.matrix))).errors
    return [f.problem.render() for f in findings if f.problem and f.rule == rule]


# --- the refused repository, on any host ---

REFUSED_SPELLINGS = [
    f"registry.example.com:5000/nvidia/cuda:{CUDA_TAG}",
    f"registry.example.com/nvidia/cuda:{CUDA_TAG}",
    f"localhost:5000/nvidia/cuda:{CUDA_TAG}",
    f"localhost/nvidia/cuda:{CUDA_TAG}",
    f"127.0.0.1:5000/nvidia/cuda:{CUDA_TAG}",
    f"[::1]:5000/nvidia/cuda:{CUDA_TAG}",
    f"docker.io:443/nvidia/cuda:{CUDA_TAG}",
    f"index.docker.io:443/nvidia/cuda:{CUDA_TAG}",
    f"registry-1.docker.io:443/nvidia/cuda:{CUDA_TAG}",
    f"index.docker.io/nvidia/cuda:{CUDA_TAG}",
    f"nvcr.io/nvidia/cuda:{CUDA_TAG}",
    f"nvcr.io:443/nvidia/cuda:{CUDA_TAG}",
    f"mirror.gcr.io/nvidia/cuda:{CUDA_TAG}",
    f"public.ecr.aws/nvidia/cuda:{CUDA_TAG}",
    # Pull-through proxies that put the upstream path under a project of their own.
    f"harbor.example.com/dockerhub-proxy/nvidia/cuda:{CUDA_TAG}",
    f"ghcr.io/acme/mirror/nvidia/cuda:{CUDA_TAG}",
    f"registry.example.com:5000/nvidia/cuda@{DIGEST}",
    f"registry.example.com:5000/nvidia/cuda:{CUDA_TAG}@{DIGEST}",
]


@pytest.mark.parametrize("ref", REFUSED_SPELLINGS)
def test_nvidia_cuda_on_any_registry_host_is_refused_naming_its_line(cli, project: Project, ref: str) -> None:  # type: ignore[no-untyped-def]
    project.edit(BASE_REF, f'ref: "{ref}"')
    line = project.line_of(ref)
    errors = errors_of(project, "refused-repository")
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"{project.matrix}:{line}: base 'runpod-torch211-cu130' uses {ref}")
    assert "which is nvidia/cuda" in errors[0] and "not cached by RunPod" in errors[0]
    result = cli("check", "--matrix", str(project.matrix))
    assert result.code == 2
    assert f"{project.matrix}:{line}:" in result.err and "Traceback" not in result.err


@pytest.mark.parametrize(
    "ref",
    [
        f"Registry.Example.com:5000/nvidia/cuda:{CUDA_TAG}",
        f"REGISTRY.EXAMPLE.COM:5000/nvidia/cuda:{CUDA_TAG}",
        f"Docker.io:443/nvidia/cuda:{CUDA_TAG}",
        f"registry.example.com:5000/NVIDIA/cuda:{CUDA_TAG}",
        f"registry.example.com:5000/nvidia/CUDA:{CUDA_TAG}",
    ],
)
def test_upper_case_spellings_of_it_are_refused_naming_its_line(cli, project: Project, ref: str) -> None:  # type: ignore[no-untyped-def]
    project.edit(BASE_REF, f'ref: "{ref}"')
    result = cli("check", "--matrix", str(project.matrix))
    assert result.code == 2
    assert f"{project.matrix}:{project.line_of(ref)}:" in result.err
    assert "lower case" in result.err and "Traceback" not in result.err


MATRIX = load_matrix(REPO / "matrix.yaml")


@pytest.mark.parametrize("ref", REFUSED_SPELLINGS)
def test_nvidia_cuda_on_any_registry_host_is_refused_in_a_dockerfile(ref: str) -> None:
    findings = check_dockerfile(f"FROM {ref}\n", Path("build/v/Dockerfile"), "v", {}, MATRIX)
    assert [f.rule for f in findings] == ["refused-repository"]
    assert findings[0].problem.location == Location(Path("build/v/Dockerfile"), 1)


@pytest.mark.parametrize(
    "ref",
    [
        "runpod/pytorch:2.11.0-cuda13.0-cudnn9-devel",
        "registry.example.com:5000/runpod/pytorch:2.11.0-cuda13.0-cudnn9-devel",
        "ghcr.io/acme/cuda:13.0",
        "ghcr.io/nvidia/cuda-quantum:0.7.0",
        "nvcr.io/nvidia/pytorch:24.05-py3",
        "registry.example.com/acme/nvidia-cuda:13.0",
        "python:3.11-slim",
    ],
)
def test_other_repositories_are_not_the_refused_one(ref: str) -> None:
    assert refusal_for(refs.parse(ref), MATRIX.policy) is None


# --- what CUDA a tag says ---

# (ref, the CUDA versions its tag says): real tags of RunPod, PyTorch and NVIDIA, then spellings.
TAG_CUDA = [
    ("runpod/pytorch:2.11.0-cuda13.0-cudnn9-devel", [(13, 0)]),
    ("runpod/pytorch:2.4.0-py3.11-cuda12.4.1-devel-ubuntu22.04", [(12, 4, 1)]),
    ("runpod/pytorch:2.1.0-py3.10-cuda11.8.0-devel-ubuntu22.04", [(11, 8, 0)]),
    ("runpod/pytorch:2.8.0-py3.11-cuda12.8.1-cudnn-devel-ubuntu22.04", [(12, 8, 1)]),
    ("runpod/pytorch:1.0.2-cu1300-torch291-ubuntu2404", [(13, 0, 0)]),
    ("runpod/pytorch:1.0.2-cu1281-torch280-ubuntu2204", [(12, 8, 1)]),
    ("runpod/base:0.6.3-cuda12.8.1", [(12, 8, 1)]),
    ("runpod/worker-comfyui:5.5.0-base", []),
    ("runpod/worker-v1-vllm:v2.4.0stable-cuda12.1.0", [(12, 1, 0)]),
    ("pytorch/pytorch:2.11.0-cuda13.0-cudnn9-devel", [(13, 0)]),
    ("pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime", [(12, 4)]),
    ("pytorch/pytorch:1.13.1-cuda11.6-cudnn8-devel", [(11, 6)]),
    ("ghcr.io/pytorch/pytorch-nightly:2.6.0.dev20241112-cuda12.4-cudnn9-devel", [(12, 4)]),
    ("nvidia/cuda:13.0.0-devel-ubuntu22.04", [(13, 0, 0)]),
    ("nvidia/cuda:12.8.1-base-ubuntu22.04", [(12, 8, 1)]),
    ("nvidia/cuda:12.8.1-cudnn-devel-ubuntu22.04", [(12, 8, 1)]),
    ("nvidia/cuda:11.8.0-cudnn8-runtime-ubuntu22.04", [(11, 8, 0)]),
    ("nvcr.io/nvidia/cuda:13.0.0-cudnn-runtime-ubuntu24.04", [(13, 0, 0)]),
    ("nvcr.io/nvidia/pytorch:24.05-py3", []),  # an NGC release (YY.MM), not a CUDA
    ("ghcr.io/nvidia/cuda-quantum:0.7.0", []),
    ("python:3.11-slim", []),
    ("ubuntu:22.04", []),
    ("ghcr.io/acme/app:1.2.3-runtime", []),
    (f"nvidia/cuda@{DIGEST}", []),
    # Spellings: separators, case, compact digits, a CUDA-leading tag on a mirror.
    ("ghcr.io/acme/torch:2.8.0-cu128", [(12, 8)]),
    ("ghcr.io/acme/torch:2.8.0-cu12.8", [(12, 8)]),
    ("ghcr.io/acme/torch:2.8.0-CUDA12.8", [(12, 8)]),
    ("ghcr.io/acme/torch:2.8.0-CU128", [(12, 8)]),
    ("ghcr.io/acme/torch:2.8.0-cuda-12.8", [(12, 8)]),
    ("ghcr.io/acme/torch:2.8.0-cuda_12.8", [(12, 8)]),
    ("ghcr.io/acme/torch:cuda12.8.1", [(12, 8, 1)]),
    ("ghcr.io/acme/torch:1.0-cu1280-torch280", [(12, 8, 0)]),
    ("ghcr.io/acme/torch:cu12-torch280", [(12,)]),
    ("ghcr.io/acme/torch:py3.11_cu118", [(11, 8)]),
    ("ghcr.io/acme/torch:cu92", [(9, 2)]),
    ("ghcr.io/acme/torch:12.8.1-cudnn-devel-ubuntu22.04", [(12, 8, 1)]),
    ("registry.example.com:5000/nvidia/cuda:12.8.1-devel-ubuntu22.04", [(12, 8, 1)]),
    ("ghcr.io/acme/torch:cu128-cuda13.0", [(12, 8), (13, 0)]),
    ("ghcr.io/acme/torch:cudnn9-ubuntu22.04", []),
    ("ghcr.io/acme/pycuda:2024.1", []),
    ("ghcr.io/acme/torch:cu12345", []),
]


@pytest.mark.parametrize(("ref", "says"), TAG_CUDA)
def test_what_cuda_a_tag_says(ref: str, says: list[tuple[int, ...]]) -> None:
    assert list(cuda_in_tag(ref)) == says
    assert tag_facts(ref).get("cuda") == (".".join(map(str, says[0][:2])) if says else None)


@pytest.mark.parametrize(
    ("declared", "said", "agrees"),
    [
        ("13.0", (13, 0, 0), True),
        ("13.0", (13, 0), True),
        ("12.8", (12, 8, 1), True),
        ("12.8", (12,), True),
        ("13.0", (12,), False),
        ("13.0", (12, 8, 1), False),
        ("12.4", (12, 8), False),
        (None, (12, 8), False),
    ],
)
def test_a_declared_cuda_agrees_to_the_precision_of_the_tag(
    declared: str | None, said: tuple[int, ...], agrees: bool
) -> None:
    assert cuda_agrees(declared, said) is agrees


CONTRADICTING = [  # each says CUDA 12.8 (or 12) on a base declared cuda: "13.0"
    "runpod/pytorch:2.8.0-py3.11-cuda12.8.1-cudnn-devel-ubuntu22.04",
    "runpod/pytorch:1.0.2-cu1281-torch280-ubuntu2204",
    "runpod/pytorch:1.0.2-cu1280-torch280-ubuntu2204",
    "ghcr.io/acme/torch:2.11.0-cu128",
    "ghcr.io/acme/torch:2.11.0-cu12.8",
    "ghcr.io/acme/torch:2.11.0-CUDA12.8",
    "ghcr.io/acme/torch:2.11.0-CU128",
    "ghcr.io/acme/torch:2.11.0-cuda-12.8",
    "ghcr.io/acme/torch:2.11.0-cuda_12.8",
    "ghcr.io/acme/torch:2.11.0-cuda12.8.1",
    "ghcr.io/acme/torch:2.11.0-cu12",
    "ghcr.io/acme/torch:12.8.1-cudnn-devel-ubuntu22.04",
    "ghcr.io/acme/torch:2.11.0-cuda13.0-cu128",  # one agreeing spelling does not hide another
    "nvidia/cuda:12.8.1-cudnn-devel-ubuntu22.04",
]


@pytest.mark.parametrize("ref", CONTRADICTING)
def test_a_tag_that_says_another_cuda_is_refused(project: Project, ref: str) -> None:
    project.edit(BASE_REF, f'ref: "{ref}"')
    errors = [e for e in errors_of(project, "tag") if "torch211-cu130' declares cuda" in e]
    assert len(errors) == 1, errors
    line = project.line_of('cuda: "13.0"')
    assert errors[0].startswith(f"{project.matrix}:{line}: base 'runpod-torch211-cu130' declares cuda 13.0")
    assert "says 12" in errors[0]


def test_the_reviewed_example_is_refused_through_the_cli(cli, project: Project) -> None:  # type: ignore[no-untyped-def]
    ref = "runpod/pytorch:2.8.0-py3.11-cuda12.8.1-cudnn-devel-ubuntu22.04"
    project.edit(BASE_REF, f'ref: "{ref}"')
    result = cli("check", "--matrix", str(project.matrix))
    assert result.code == 2
    assert "declares cuda 13.0 but its tag '2.8.0-py3.11-cuda12.8.1-cudnn-devel-ubuntu22.04' says 12.8" in (
        result.err
    )


def test_a_cpu_only_base_whose_tag_says_cuda_is_refused(project: Project) -> None:
    project.edit(
        '    ref: runpod/base:0.6.3-cuda12.8.1\n    tier: 1\n    cuda: "12.8"\n',
        "    ref: runpod/base:0.6.3-cu128\n    tier: 1\n",
    )
    errors = errors_of(project, "tag")
    assert any("'runpod-base-cu128' declares no CUDA" in e and "says 12.8" in e for e in errors), errors


@pytest.mark.parametrize(
    "matrix", [REPO / "matrix.yaml", *sorted((REPO / "tests" / "projects").glob("*/matrix.yaml"))]
)
def test_every_real_tag_agrees_with_its_base(matrix: Path) -> None:
    bases = yaml.safe_load(matrix.read_text())["bases"]
    assert bases
    for base in bases:
        for said in cuda_in_tag(base["ref"]):
            assert cuda_agrees(base.get("cuda"), said), base
    findings = check_plan(make_plan(load_matrix(matrix))).findings
    assert [f.problem.render() for f in findings if f.rule == "tag"] == []
