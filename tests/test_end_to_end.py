"""The main job end to end: the repository's default worker variant, built on the
runpod/pytorch:2.11.0-cuda13.0-cudnn9-devel stand-in and pushed to the embedded registry."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO, Project, RegistryUnderTest, committed_copy, docker_ok
from runpod_schema import request_errors

from buildtool.localregistry import CONTAINER, VOLUME, answers
from buildtool.naming import EMBEDDED_REGISTRY

pytestmark = [pytest.mark.container, pytest.mark.slow, pytest.mark.torch_base]


@pytest.fixture
def embedded_registry() -> Iterator[RegistryUnderTest]:
    """The embedded registry as `buildtool build` starts it; removed afterwards if this test made it."""
    docker_ok()
    was_running = answers(EMBEDDED_REGISTRY)
    yield RegistryUnderTest(container=None, address=EMBEDDED_REGISTRY)
    if not was_running:
        subprocess.run(["docker", "rm", "-f", CONTAINER], capture_output=True, check=False)
        subprocess.run(["docker", "volume", "rm", VOLUME], capture_output=True, check=False)


@pytest.fixture
def repository_copy(tmp_path: Path) -> Iterator[Project]:
    project = Project(committed_copy(REPO, tmp_path / "checkout"))
    yield project
    manifest = project.root / "build" / "manifest.json"
    if manifest.is_file():  # the images the smoke run pulled into the engine, by digest
        references = [v["image"] for v in json.loads(manifest.read_text())["variants"].values()]
        subprocess.run(["docker", "rmi", "--force", *references], capture_output=True, check=False)


def buildtool(root: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The command as a user runs it, in the checkout."""
    return subprocess.run(
        ["buildtool", *args], cwd=root, capture_output=True, text=True, check=False, timeout=1800, env=env
    )


def test_default_worker_variant_builds_pushes_and_passes_smoke(
    repository_copy: Project, embedded_registry: RegistryUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REGISTRY", raising=False)
    done = buildtool(repository_copy.root, "build", "--default")
    assert done.returncode == 0, done.stdout + done.stderr
    assert (
        f"embedded registry registry:2 on {EMBEDDED_REGISTRY}" in done.stdout
        or "registry that answers" in done.stdout
    )
    manifest = json.loads((repository_copy.root / "build" / "manifest.json").read_text())
    assert list(manifest["variants"]) == ["worker-embed-runpod-torch211-cu130"]
    entry_name = "worker-embed-runpod-torch211-cu130"
    entry = manifest["variants"][entry_name]
    repository, tag = entry["tags"]["immutable"].split("/", 1)[1].split(":")
    assert embedded_registry.digest(repository, tag) == entry["digest"]
    assert embedded_registry.digest(repository, "latest") == entry["digest"]
    assert entry["base"]["ref"] == "runpod/pytorch:2.11.0-cuda13.0-cudnn9-devel"

    # The smoke suite inside that image (CPU here): the worker's model loads and answers.
    # As a user runs it: none of the TESTCONTAINERS_* settings the test process made for itself.
    user_env = {k: v for k, v in os.environ.items() if not k.startswith("TESTCONTAINERS_")}
    smoked = buildtool(repository_copy.root, "smoke", env=user_env)
    assert smoked.returncode == 0, smoked.stdout + smoked.stderr
    result = json.loads((repository_copy.root / "build" / "smoke" / f"{entry_name}.json").read_text())
    assert result["passed"] and result["image"]["digest"] == entry["digest"]
    statuses = {c["name"]: c["status"] for c in result["checks"]}
    assert statuses["model.load"] == statuses["model.handler"] == "pass"
    assert statuses["attention.expected-backend"] == "pass"
    # The build measured the image against its base (in the engine): a host that caches the Tier-1
    # base pulls only the layers above it. The smoke result carries the figures to the report.
    assert 0 < entry["base_layers"] < entry["layers"]
    assert 0 < entry["above_base_size"] < entry["compressed_size"] < entry["unpacked_size"]
    assert result["image"]["above_base_size"] == entry["above_base_size"]

    # The deploy spec of what was pushed: RunPod's schema holds, the image is the pushed digest,
    # and the container disk is the measured image plus headroom and margin.
    spec_done = buildtool(repository_copy.root, "deploy-spec", "--select", entry_name)
    assert spec_done.returncode == 0, spec_done.stdout + spec_done.stderr
    spec = json.loads((repository_copy.root / "build" / "deploy" / f"{entry_name}.json").read_text())
    bodies = {r["operation"]: r["body"] for r in spec["requests"]}
    assert set(bodies) == {"createTemplate", "createEndpoint"}
    for operation, body in bodies.items():
        assert request_errors(operation, body) == []
        assert body["image"] == entry["image"] and body["image"].endswith("@" + entry["digest"])
    headroom = spec["disk"]["download_headroom_gb"]
    assert bodies["createEndpoint"]["disk"] == math.ceil((entry["unpacked_size"] / 1e9 + headroom) * 1.2)

    # The runtime image, its FlashAttention kernels baked from a local context (no Hub here): it
    # builds into the same registry (the base's layers are there already) and passes its suite.
    kernels = repository_copy.root.parent / "kernels-local"
    for name in ("flash-attn3", "flash-attn2"):
        shutil.copytree(REPO / "tests" / "kernels" / "sdpa-attention", kernels / name)
    runtime = "pytorch-runtime-runpod-torch211-cu130"
    built = buildtool(repository_copy.root, "build", "--select", runtime, "--kernels-local", str(kernels))
    assert built.returncode == 0, built.stdout + built.stderr
    smoked = buildtool(repository_copy.root, "smoke", "--select", runtime, env=user_env)
    assert smoked.returncode == 0, smoked.stdout + smoked.stderr
    result = json.loads((repository_copy.root / "build" / "smoke" / f"{runtime}.json").read_text())
    checks = {c["name"]: c for c in result["checks"]}
    assert result["passed"], [c["message"] for c in checks.values() if c["status"] == "fail"]
    for name in ("attention.kernel.flash-attn3", "attention.kernel.flash-attn2"):
        assert checks[name]["status"] == "skipped" and "this device is a CPU" in checks[name]["message"]
    # Each case names the backend it ran: forced ones what was forced, the default what torch chose.
    default_cases = checks["attention.sdpa.default"]["data"]["cases"]
    assert default_cases and all(case["dispatch"] for case in default_cases)
    assert {b for case in checks["attention.sdpa.math"]["data"]["cases"] for b in case["dispatch"]} == {
        "math"
    }
    assert checks["attention.expected-backend"]["status"] == "pass"
