"""The main job end to end: the repository's default worker variant, built on the
runpod/pytorch:2.11.0-cuda13.0-cudnn9-devel stand-in and pushed to the embedded registry."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO, Project, RegistryUnderTest, committed_copy, docker_ok
from runpod_schema import request_errors

from buildtool.naming import EMBEDDED_REGISTRY
from buildtool.registry.local import CONTAINER, VOLUME, answers

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


def built_and_smoked(project: Project, variant: str) -> dict[str, dict]:  # type: ignore[type-arg]
    """`buildtool build` then `buildtool smoke` for one variant, as a user runs them (none of the
    test process's TESTCONTAINERS_* settings); its smoke checks by name."""
    built = buildtool(project.root, "build", "--select", variant)
    assert built.returncode == 0, built.stdout + built.stderr
    user_env = {k: v for k, v in os.environ.items() if not k.startswith("TESTCONTAINERS_")}
    smoked = buildtool(project.root, "smoke", "--select", variant, env=user_env)
    assert smoked.returncode == 0, smoked.stdout + smoked.stderr
    result = json.loads((project.root / "build" / "smoke" / f"{variant}.json").read_text())
    return {c["name"]: c for c in result["checks"]}


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

    # Hostile jobs get the worker's own error, never a traceback; a batch over MAX_TEXTS is refused
    # whole; a MAX_TEXTS that is no number stops the worker at start, saying so.
    hostile = subprocess.run(
        ["docker", "run", "--rm", "-e", "MAX_TEXTS=3", entry["image"], "python", "-c", HOSTILE_EMBED_JOBS],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert hostile.returncode == 0, hostile.stdout[-3000:] + hostile.stderr[-3000:]
    answers = [json.loads(line) for line in hostile.stdout.splitlines() if line.startswith("{")]
    not_an_object = 'input must be an object, such as {"texts": ["a sentence"]}'
    assert [a.get("error") for a in answers[:4]] == [not_an_object] * 3 + [
        "input.texts must be a non-empty list of strings"
    ]
    assert answers[4] == {"error": "input.texts holds 4 texts, over 3 a job (MAX_TEXTS)"}
    assert answers[5]["shape"] == [3, 384]
    misconfigured = subprocess.run(
        ["docker", "run", "--rm", "-e", "MAX_TEXTS=lots", entry["image"], "python", "-c", "import handler"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert misconfigured.returncode == 1
    assert "MAX_TEXTS must be a positive integer, not 'lots'" in misconfigured.stderr
    left_empty = subprocess.run(  # a RunPod template's env field left empty: the default
        ["docker", "run", "--rm", "-e", "MAX_TEXTS=", entry["image"], "python", "-c",
         "import handler; print(handler.MAX_TEXTS)"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert left_empty.returncode == 0 and left_empty.stdout.split()[-1] == "1024", left_empty.stderr[-2000:]

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
    # Kernels from this machine, not the commit's pins: a -dirty build (what an offline test is).
    built = buildtool(
        repository_copy.root, "build", "--select", runtime, "--kernels-local", str(kernels), "--allow-dirty"
    )
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


# In the embedding worker's image: its handler, as the SDK calls it, with jobs a client could send.
HOSTILE_EMBED_JOBS = r"""
import json, handler
for job in ({"input": "hello"}, {"input": ["a"]}, {"id": "no-input"}, {"input": {"texts": "abc"}},
            {"input": {"texts": ["a", "b", "c", "d"]}}, {"input": {"texts": ["a", "b", "c"]}}):
    print(json.dumps(handler.handler(job)))
"""


# In the diffusion image: a Hub (the stand-in) serving the image's tiny pipeline as org/tiny-sd, an
# empty volume, and the worker imported twice: the first provisions, the second reuses.
PROVISION = r"""
set -euo pipefail
python /t/hub_standin.py --repo org/tiny-sd=/opt/smoke-model/pipeline --branch main \
    --port-file /tmp/port --log /tmp/hub.log &
for _ in $(seq 100); do [ -s /tmp/port ] && break; sleep 0.1; done
export HF_ENDPOINT="http://127.0.0.1:$(cat /tmp/port)" MODEL_ID=org/tiny-sd HF_HUB_DISABLE_TELEMETRY=1
export MODEL_VOLUME_PATH=/runpod-volume/models/tiny-sd
job='{"id": "p", "input": {"prompt": "a lighthouse", "width": 32, "height": 32, "num_inference_steps": 2}}'
run='import json, sys; sys.path.insert(0, "/app"); import handler
print(len(handler.handler(json.loads(sys.argv[1]))["images"]), "image(s)")'
python -c "$run" "$job"
echo "sentinel: $(cat $MODEL_VOLUME_PATH/.models_provisioned)"
cat /tmp/hub.log; : > /tmp/hub.log
echo "--- again ---"
python -c "$run" "$job"
cat /tmp/hub.log; : > /tmp/hub.log
echo "--- three at once ---"
export MODEL_VOLUME_PATH=/runpod-volume/models/together
workers=()
for i in 1 2 3; do python -c "$run" "$job" > /tmp/worker$i.out 2>&1 & workers+=($!); done
for worker in "${workers[@]}"; do wait "$worker"; done  # not the Hub stand-in, which never exits
cat /tmp/worker*.out; cat /tmp/hub.log; : > /tmp/hub.log
echo "--- a dead worker's claim ---"
export MODEL_VOLUME_PATH=/runpod-volume/models/orphaned PROVISION_STALE_SECONDS=4
mkdir -p "$MODEL_VOLUME_PATH" && echo by-hand > "$MODEL_VOLUME_PATH/notes.txt"
echo "dead-host 1" > /runpod-volume/models/.orphaned.provisioning
touch -d '1 hour ago' /runpod-volume/models/.orphaned.provisioning
python -c "$run" "$job"
echo "left on the volume:"; ls -A /runpod-volume/models /runpod-volume/models/.orphaned.without-sentinel-*
echo "--- hostile jobs ---"
python - <<'JOBS'
import json, sys
sys.path.insert(0, "/app")
import handler
for settings in ("x", None, {"prompt": "p", "seed": 2**70}, {"prompt": "p", "seed": True},
                 {"prompt": "p", "guidance_scale": "high"}, {"prompt": "p", "guidance_scale": float("nan")},
                 {"prompt": "p", "negative_prompt": 5}, {"prompt": "p", "width": 12}):
    print(json.dumps(handler.handler({"id": "hostile", "input": settings})))
JOBS
"""


def test_the_diffusion_worker_serves_images_from_its_volume(
    repository_copy: Project, embedded_registry: RegistryUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """worker-diffusion on the torch stand-in: smoke mounts a volume the runner filled with the
    image's tiny pipeline (with the `.models_provisioned` sentinel), the worker loads from it, and
    answers through its real entry (`--rp_serve_api`: /runsync, /run + /status) with a PNG in
    worker-comfyui's shape."""
    monkeypatch.delenv("REGISTRY", raising=False)
    variant = "worker-diffusion-runpod-torch211-cu130"
    checks = built_and_smoked(repository_copy, variant)
    volume = "/runpod-volume/models/stable-diffusion-v1-5/"
    assert checks["model.load"]["status"] == "pass" and "from the volume" in checks["model.load"]["message"]
    assert all(p.startswith(volume) for p in checks["model.load"]["data"]["opened_from_volume"])
    assert f"{volume}unet/config.json" in checks["model.load"]["data"]["opened_from_volume"]
    serve = checks["model.serve"]
    assert serve["status"] == "pass" and "1 PNG image(s) 32x32, not constant" in serve["message"]
    assert serve["data"]["async_route"] == "status"
    assert checks["model.handler"]["data"]["sizes"] == [[32, 32]]
    # The runner's volume is gone afterwards.
    volumes = subprocess.run(
        ["docker", "volume", "ls", "-q", "--filter", "label=org.runpod-images.role=smoke"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert not [v for v in volumes.stdout.split() if v.startswith(f"smoke-{variant}-")]
    # An empty volume: the first worker downloads the model there (from a Hub: the stand-in, through
    # huggingface_hub's own code) and writes the sentinel last; the next finds it and asks nothing.
    image = json.loads((repository_copy.root / "build" / "manifest.json").read_text())["variants"][variant][
        "image"
    ]
    name = f"provision-{uuid.uuid4().hex[:12]}"
    try:
        provisioned = subprocess.run(
            ["docker", "run", "--rm", "--name", name, "-v", f"{REPO / 'tests'}:/t:ro", image, "bash", "-c",
             PROVISION],
            capture_output=True, text=True, timeout=900,
        )  # fmt: skip
    finally:  # a timeout kills the client, not the container
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)
    assert provisioned.returncode == 0, provisioned.stdout[-3000:] + provisioned.stderr[-3000:]
    first, rest = provisioned.stdout.split("--- again ---")
    second, rest = rest.split("--- three at once ---")
    together, rest = rest.split("--- a dead worker's claim ---")
    orphaned, hostile = rest.split("--- hostile jobs ---")
    # Each hostile job is the worker's own error, and none reached the pipeline.
    errors = [json.loads(line)["error"] for line in hostile.splitlines() if line.startswith("{")]
    seed = "input.seed must be an integer from 0 to 9223372036854775807"
    guidance = "input.guidance_scale must be a number from 0 to 50"
    assert [e.split(", not")[0] for e in errors] == [
        'input must be an object, such as {"prompt": "a lighthouse at dusk"}',
        'input must be an object, such as {"prompt": "a lighthouse at dusk"}',
        seed,
        seed,
        guidance,
        guidance,
        "input.negative_prompt must be a string",
        "input.width and input.height must be multiples of 8",
    ], hostile
    assert "GET /api/models/org/tiny-sd/revision/main" in first and "resolve/" in first
    assert "sentinel: org/tiny-sd" in first and "1 image(s)" in first
    assert "GET " not in second and "1 image(s)" in second  # reused: not one request to the Hub
    # Three workers on one empty volume: one downloads (each file fetched once), all three load it.
    assert together.count("1 image(s)") == 3, together[-3000:]
    fetched = [line for line in together.splitlines() if "GET " in line and "/resolve/" in line]
    assert len([line for line in fetched if line.rstrip().endswith("unet/config.json")]) == 1, fetched
    # A claim whose worker died is taken over; what was there without a sentinel is kept aside.
    assert "is stale" in orphaned and "1 image(s)" in orphaned, orphaned[-3000:]
    volume_listing = orphaned.split("left on the volume:")[1]
    assert ".provisioning" not in volume_listing and ".partial-" not in volume_listing
    assert "notes.txt" in volume_listing
    # Its deploy spec mounts nothing it was not told to: the volume id is the user's to give.
    spec_done = buildtool(repository_copy.root, "deploy-spec", "--select", variant)
    assert spec_done.returncode == 0, spec_done.stdout + spec_done.stderr
    spec = json.loads((repository_copy.root / "build" / "deploy" / f"{variant}.json").read_text())
    assert any("deploy.network_volume names none" in note for note in spec["notes"])
    assert all(request_errors(r["operation"], r["body"]) == [] for r in spec["requests"])


@pytest.mark.vllm
def test_the_vllm_worker_builds_and_goes_as_far_as_a_cpu_can(
    repository_copy: Project, embedded_registry: RegistryUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """worker-vllm on the torch stand-in: vllm 0.26.0 and its locked set install on the base's
    torch; on this CPU the suite proves the imports, starts the worker (`vllm serve` from the
    volume holding the image's tiny Llama), and reports the serving checks skipped where vLLM needs
    the GPU. On a GPU host the same run serves the model and judges the OpenAI answer."""
    monkeypatch.delenv("REGISTRY", raising=False)
    variant = "worker-vllm-runpod-torch211-cu130"
    checks = built_and_smoked(repository_copy, variant)
    assert checks["environment.torch-version"]["status"] == "pass"  # the image's torch: the base's
    assert checks["model.imports"]["status"] == "pass"
    assert set(checks["model.imports"]["data"]["seconds"]) == {"vllm", "httpx", "runpod"}
    for name in ("model.serve", "model.load", "model.handler"):
        assert checks[name]["status"] == "skipped", (name, checks[name]["message"])
        assert checks[name]["message"].startswith("needs a GPU (smoke.requires_gpu)"), checks[name]
    # The worker got as far as the server: `vllm serve` started on the volume's model, and stopped
    # where vLLM looks for a device.
    assert "vllm serve exited with 1 before serving" in checks["model.serve"]["message"]
    assert "Failed to infer device type" in checks["model.serve"]["message"]
