"""The smoke suite inside a real image built by buildtool on the runpod/pytorch stand-in (CPU):
every check passes on a good image, and each failure mode makes its check fail."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import api_contract
import pytest
from conftest import REPO, TEST_LABEL, RegistryUnderTest, committed_copy, git, running_registry

from buildtool import api
from buildtool.config.options import Options
from buildtool.locks import deps
from buildtool.smoke_runner import BuiltImage, SmokeOutcome, run_in_image
from smoke.selection import ENVIRONMENT

pytestmark = [pytest.mark.container, pytest.mark.torch_base]
KERNELS = REPO / "tests" / "kernels"
VARIANT = "probe-runpod-torch211-cu130"


@dataclass
class Probe:
    root: Path
    image: BuiltImage


@pytest.fixture(scope="module")
def registry_module() -> Iterator[RegistryUnderTest]:
    with running_registry() as running:
        yield running


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory, registry_module: RegistryUnderTest) -> Probe:
    root = committed_copy(
        REPO / "tests" / "projects" / "smoked", tmp_path_factory.mktemp("smoked") / "checkout"
    )
    options = Options.for_matrix(  # kernels from this machine: a -dirty build
        root / "matrix.yaml", registry=registry_module.address, kernels_local=KERNELS, allow_dirty=True
    )
    result = api.build(options)
    assert result.ok, [v.error for v in result.variants]
    entry = result.variants[0]
    assert entry.digest is not None
    return Probe(root, BuiltImage(entry.variant, entry.immutable_tag, entry.digest))


ENVIRONMENT_ONLY = ("--only", "environment")  # a test about some checks runs only those (--only)
KERNEL_AND_MATH = ("--only", "attention.kernel,attention.sdpa.math")


def run(probe: Probe, tmp_path: Path, *args: str, **env: str) -> tuple[SmokeOutcome, dict]:  # type: ignore[type-arg]
    outcome = run_in_image(probe.image, tmp_path, gpu=False, env=env, extra_args=("--quick", *args))
    assert outcome.json_path is not None, outcome.error
    return outcome, json.loads(outcome.json_path.read_text())


def check(document: dict, name: str) -> dict:  # type: ignore[type-arg]
    return next(c for c in document["checks"] if c["name"] == name)


def test_every_check_passes_on_a_good_image(probe: Probe, tmp_path: Path) -> None:
    outcome, document = run(probe, tmp_path)
    assert outcome.passed, outcome.failed_checks
    assert document["schema"] == "runpod-images/smoke-result" and document["schema_version"] == 1
    assert document["image"] == {"tag": probe.image.tag, "digest": probe.image.digest}
    statuses = {c["name"]: c["status"] for c in document["checks"]}
    for name in (
        "environment.torch-version",
        "environment.cuda-version",
        "environment.cudnn-version",
        "model.serve",
        "model.load",
        "model.handler",
        "attention.sdpa.math",
        "attention.sdpa.flash",
        "attention.sdpa.default",
        "attention.kernel.sdpa-attention",
        "attention.expected-backend",
    ):
        assert statuses[name] == "pass", (name, check(document, name)["message"])
    # Which backend each case ran is observed and recorded: forced ones ran what was forced.
    for backend in ("math", "flash"):
        cases = check(document, f"attention.sdpa.{backend}")["data"]["cases"]
        assert cases and all(c["dispatch"] == [backend] for c in cases), cases
    assert check(document, "attention.expected-backend")["data"]["observed"] == ["flash"]
    # No driver here: each environment check reports on its own, pass or skipped naming why.
    environment = [c for c in document["checks"] if c["name"].startswith("environment.")]
    assert [c["name"] for c in environment] == list(ENVIRONMENT)
    for entry in environment:
        assert entry["status"] == "pass" or entry["message"].startswith("no driver"), entry
    assert check(document, "model.load")["data"]["load_seconds"] > 0
    # The worker's real entry: `python handler.py --rp_serve_api`, /runsync and /run + /status.
    serve = check(document, "model.serve")["data"]
    assert serve["async_route"] == "status" and serve["startup_seconds"] > 0
    junit = ET.parse(outcome.xml_path).getroot().find("testsuite")
    assert junit is not None and int(junit.get("tests", 0)) == len(document["checks"])
    assert junit.get("failures") == "0"


def test_a_wrong_torch_version_fails(probe: Probe, tmp_path: Path) -> None:
    outcome, document = run(probe, tmp_path, *ENVIRONMENT_ONLY, SMOKE_TORCH="2.10.0+cu130")
    assert not outcome.passed and "environment.torch-version" in outcome.failed_checks
    assert (
        "torch is 2.11.0+cu130, the image declares 2.10.0+cu130"
        in check(document, "environment.torch-version")["message"]
    )


def test_a_planted_nan_in_an_attention_output_fails(probe: Probe, tmp_path: Path) -> None:
    outcome, document = run(probe, tmp_path, *KERNEL_AND_MATH, SDPA_ATTENTION_PLANT_NAN="1")
    assert not outcome.passed
    assert "attention.kernel.sdpa-attention" in outcome.failed_checks
    assert "with NaN or inf" in check(document, "attention.kernel.sdpa-attention")["message"]
    assert check(document, "attention.sdpa.math")["status"] == "pass"  # only the bad kernel fails


def test_a_single_wrong_row_fails_and_is_named(probe: Probe, tmp_path: Path) -> None:
    outcome, document = run(probe, tmp_path, "--only", "attention.kernel", SDPA_ATTENTION_PLANT_ROW="1")
    assert outcome.failed_checks == ("attention.kernel.sdpa-attention",), outcome.failed_checks
    message = check(document, "attention.kernel.sdpa-attention")["message"]
    assert "1 row(s) over the bound, worst at (batch, head, query) (0, 0, " in message, message


def test_a_kernel_that_kills_its_process_fails_only_its_own_check(probe: Probe, tmp_path: Path) -> None:
    outcome, document = run(probe, tmp_path, *KERNEL_AND_MATH, SDPA_ATTENTION_PLANT_FAULT="1")
    assert "attention.kernel.sdpa-attention" in outcome.failed_checks
    assert "its process died (signal 11)" in check(document, "attention.kernel.sdpa-attention")["message"]
    assert check(document, "attention.sdpa.math")["status"] == "pass"  # its process was not touched


def test_out_of_memory_at_a_shape_is_unsupported_there_not_a_failure(probe: Probe, tmp_path: Path) -> None:
    outcome, document = run(probe, tmp_path, "--only", "attention.kernel", SDPA_ATTENTION_PLANT_OOM="200")
    assert outcome.passed, outcome.failed_checks
    kernel = check(document, "attention.kernel.sdpa-attention")
    assert kernel["status"] == "pass", kernel["message"]
    assert "shapes out of memory" in kernel["message"]
    out_of_memory = kernel["data"]["out_of_memory"]
    assert out_of_memory and all(o["case"].startswith("q1-k383") for o in out_of_memory), out_of_memory
    assert "Tried to allocate" in out_of_memory[0]["error"]


def test_only_runs_the_selected_checks_and_the_result_says_so(probe: Probe, tmp_path: Path) -> None:
    outcome, document = run(probe, tmp_path, "--only", "attention.sdpa.math,environment.torch-version")
    assert outcome.passed, outcome.failed_checks
    assert [c["name"] for c in document["checks"]] == ["environment.torch-version", "attention.sdpa.math"]
    assert document["only"] == ["attention.sdpa.math", "environment.torch-version"]
    junit = ET.parse(outcome.xml_path).getroot().find("testsuite")
    assert junit is not None and junit.get("tests") == "2"
    # The expected-backend verdict needs the backends it judges: they run, and only it is reported.
    outcome, document = run(probe, tmp_path / "judged", "--only", "attention.expected-backend")
    assert [c["name"] for c in document["checks"]] == ["attention.expected-backend"]
    assert check(document, "attention.expected-backend")["status"] == "pass"


def hub_repository(root: Path) -> Path:
    """The test kernel as the Hub holds a real kernel: a README and builds for other torch versions
    beside the variant this image loads, so that the bake's snapshot is incomplete."""
    repo = root / "sdpa-attention"
    shutil.copytree(KERNELS / "sdpa-attention", repo)
    (repo / "README.md").write_text("# sdpa-attention\n")
    other = repo / "build" / "torch27-cxx11-cu126-x86_64-linux"
    shutil.copytree(repo / "build" / "torch-universal", other)
    metadata = json.loads((other / "metadata.json").read_text())
    (other / "metadata.json").write_text(
        json.dumps({**metadata, "backend": {"type": "cuda", "archs": ["9.0"]}})
    )
    return repo


def test_a_kernel_baked_from_the_hub_loads_offline_with_the_pinned_and_the_newest_huggingface_hub(
    probe: Probe, tmp_path: Path
) -> None:
    """The production path: bake.py fetches from a Hub (the stand-in, through kernels' and
    huggingface_hub's own download code, telemetry off), the Hub goes away, and the suite's loader
    runs offline in a fresh process, with the image's huggingface_hub, pip's newest, and the
    oldest that kernels accepts."""
    repo = hub_repository(tmp_path / "hub")
    out = tmp_path / "out"
    out.mkdir(mode=0o777)
    command = ["docker", "run", "--rm", "--label", f"{TEST_LABEL}=1", "-e", "HF_HUB_DISABLE_TELEMETRY=1"]
    command += ["-v", f"{REPO / 'tests'}:/t:ro", "-v", f"{repo}:/hubrepo:ro", "-v", f"{out}:/out"]
    command += [probe.image.reference, "python", "/t/offline_load.py", "--out", "/out/result.json"]
    command += ["--repo", "runpod-images/sdpa-attention=/hubrepo", "--function", "flash_attn_func"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((out / "result.json").read_text())
    assert result["bake"]["returncode"] == 0, result["bake"]["output"]
    assert "GET /api/kernels/runpod-images/sdpa-attention/revision/v1" in result["requests"]
    lock = result["lock"]
    assert re.fullmatch(r"[0-9a-f]{40}", lock["commit"]) and lock["local_path"].endswith("/torch-universal")
    snapshot = Path(lock["local_path"]).parents[1]
    fetched = [r for r in result["requests"] if r.startswith("GET /kernels/")]
    assert not any("README.md" in r or "torch27" in r for r in fetched), fetched  # incomplete snapshot
    assert snapshot.name == lock["commit"]
    loads = {load["asked"]: load for load in result["loads"]}
    assert set(loads) == {"installed", "newest", "oldest"}
    for asked, load in loads.items():
        assert load["loaded"] and load["function"], (asked, load)
    assert loads["oldest"]["huggingface_hub"] != loads["installed"]["huggingface_hub"]


def test_a_handler_that_loads_its_model_per_request_fails(probe: Probe, tmp_path: Path) -> None:
    outcome, document = run(probe, tmp_path, "--skip-attention", SMOKE_HANDLER="/app/per_request_handler.py")
    assert outcome.failed_checks == ("model.handler",)
    message = check(document, "model.handler")["message"]
    assert "loads its model per request" in message and "/app/model.pt" in message


def test_a_missing_kernel_fails_and_says_how_to_bake_it(probe: Probe, tmp_path: Path) -> None:
    outcome, document = run(
        probe, tmp_path, "--only", "attention.kernel", SMOKE_KERNELS_LOCK="/app/missing-kernel.lock.json"
    )
    assert "attention.kernel.never-baked" in outcome.failed_checks
    message = check(document, "attention.kernel.never-baked")["message"]
    assert "is not baked into the image" in message and "kernels-local" in message


def test_a_kernels_lock_that_does_not_read_is_a_failed_check_with_a_result(
    probe: Probe, tmp_path: Path
) -> None:
    outcome, document = run(
        probe, tmp_path, "--only", "attention.kernel", SMOKE_KERNELS_LOCK="/app/per_request_handler.py"
    )
    assert outcome.failed_checks == ("attention.crashed",), outcome.failed_checks
    assert "JSONDecodeError" in check(document, "attention.crashed")["message"]


def test_buildtool_smoke_runs_every_built_variant(probe: Probe, cli) -> None:  # type: ignore[no-untyped-def]
    result = cli("smoke", "--matrix", str(probe.root / "matrix.yaml"), "--quick")
    assert result.code == 0, result.out + result.err
    assert VARIANT in result.out and "pass" in result.out
    assert (probe.root / "build" / "smoke" / f"{VARIANT}.json").is_file()
    assert (probe.root / "build" / "smoke" / f"{VARIANT}.xml").is_file()


def test_the_kernel_bake_without_the_hub_or_a_local_context_fails_clearly(
    probe: Probe,
    registry_module: RegistryUnderTest,
    cli,  # type: ignore[no-untyped-def]
) -> None:
    lock = probe.root / "images" / "probe" / "requirements.lock"
    lock.write_text(lock.read_text() + "# a new commit, and a layer before the bake step changes\n")
    git(probe.root, "commit", "-qam", "rebuild")
    result = cli("build", "--matrix", str(probe.root / "matrix.yaml"), "--registry", registry_module.address)
    assert result.code == 1
    log = (probe.root / "build" / "logs" / f"{VARIANT}.log").read_text()
    assert "cannot bake runpod-images/sdpa-attention@v1" in log and "kernels-local" in log


def test_the_suite_runs_as_a_runpod_worker(probe: Probe) -> None:
    """The runpod SDK's local API server: POST /runsync runs the suite and returns its result."""
    from testcontainers.core.container import DockerContainer

    container = (
        DockerContainer(probe.image.reference)
        .with_command(
            [
                "python3",
                "-m",
                "smoke.worker",
                "--rp_serve_api",
                "--rp_api_host",
                "0.0.0.0",
                "--rp_api_port",
                "8000",
            ]
        )
        .with_env("PYTHONPATH", "/opt/smoke")
        .with_exposed_ports(8000)
    )
    container.start()
    try:
        url = f"http://localhost:{container.get_exposed_port(8000)}/runsync"

        def runsync(job_input: dict) -> dict:  # type: ignore[type-arg]
            body = json.dumps({"input": job_input}).encode()
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    request = urllib.request.Request(
                        url, data=body, headers={"Content-Type": "application/json"}
                    )
                    with urllib.request.urlopen(request, timeout=300) as response:
                        return json.load(response)  # type: ignore[no-any-return]
                except OSError:
                    time.sleep(1)
            raise AssertionError(container.get_logs())

        answer = runsync({"quick": True, "only": ["model.handler", "attention.sdpa.math"]})
        assert answer["status"] == "COMPLETED", answer
        assert answer["output"]["passed"] is True
        assert [c["name"] for c in answer["output"]["checks"]] == ["model.handler", "attention.sdpa.math"]
        answer = runsync({"only": "atention"})  # a typo fails the job, and says what was meant
        assert answer["status"] == "FAILED" and "Perhaps you meant 'attention'?" in answer["error"], answer
    finally:
        container.stop()


@pytest.mark.parametrize(
    ("env", "failing", "words"),
    [
        (
            {"SMOKE_CUDA": "12.8"},
            "environment.cuda-version",
            "torch was built for CUDA 13.0, the image declares 12.8",
        ),
        (
            {"SMOKE_CUDNN": "9.1"},
            "environment.cudnn-version",
            "built with cuDNN 9.19, the image declares 9.1",
        ),
        ({"SMOKE_OUTPUT_SHAPE": "2,4"}, "model.serve", "/runsync: output shape (2, 3), expected (2, 4)"),
    ],
    ids=["cuda", "cudnn", "output-shape"],
)
def test_declarations_the_image_does_not_meet_fail(
    probe: Probe, tmp_path: Path, env: dict[str, str], failing: str, words: str
) -> None:
    skip = ("--skip-attention",) if failing.startswith("model.") else ENVIRONMENT_ONLY
    outcome, document = run(probe, tmp_path, *skip, **env)
    # The output shape fails both ways the worker is called: its real entry, and in-process.
    assert outcome.failed_checks == ((failing, "model.handler") if failing == "model.serve" else (failing,))
    assert words in check(document, failing)["message"]


def test_an_image_that_cannot_start_is_one_clear_failure(tmp_path: Path) -> None:
    image = BuiltImage("ghost", "localhost:1/ghost:missing", "sha256:" + "0" * 64)
    outcome = run_in_image(image, tmp_path, gpu=False)
    assert not outcome.passed and outcome.error is not None
    assert outcome.error.startswith(f"cannot start localhost:1/ghost@sha256:{'0' * 64}")  # by digest


def test_smoke_runs_the_built_digest_even_if_the_tag_moved(
    probe: Probe, registry_module: RegistryUnderTest, tmp_path: Path
) -> None:
    """A tag can be moved in the registry; the smoke run (and so a release) names the digest that
    ran, because it runs repository@digest. Last in this module: it overwrites the probe's tag."""
    import subprocess

    subprocess.run(["docker", "tag", "python:3.11-slim", probe.image.tag], check=True)
    subprocess.run(["docker", "push", "-q", probe.image.tag], check=True, capture_output=True)
    subprocess.run(["docker", "rmi", probe.image.tag], check=True, capture_output=True)
    # python:3.11-slim has no smoke suite: it would fail
    outcome, document = run(probe, tmp_path, *ENVIRONMENT_ONLY)
    assert outcome.passed, outcome.error
    assert document["image"]["digest"] == probe.image.digest
    assert probe.image.reference.endswith(f"@{probe.image.digest}")


def test_every_api_the_suite_and_the_bake_step_call_exists_in_the_pinned_packages(probe: Probe) -> None:
    """The contract, resolved in an image with the pinned torch 2.11.0+cu130, kernels 0.17.2,
    huggingface_hub and runpod (the probe's lock pins the images' versions): every attribute path
    the smoke package uses on them, collected from its source, exists. The control is the function
    the driver check called and torch 2.11 does not have: it must be reported missing."""
    used = api_contract.paths_in(sorted((REPO / "smoke").rglob("*.py")))
    assert {"torch.nn.attention.sdpa_kernel", "kernels.install_kernel", "runpod.serverless.start"} <= set(
        used
    )
    control = "torch._C._cuda_getDriverVersion"
    command = ["docker", "run", "--rm", "--label", f"{TEST_LABEL}=1", "-v", f"{REPO / 'tests'}:/t:ro"]
    command += [probe.image.reference, "python3", "/t/api_contract.py", *used, control]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    missing = json.loads(done.stdout.strip().splitlines()[-1])
    assert missing == [control], {path: used.get(path) for path in missing}


def test_the_probe_pins_the_versions_the_images_install() -> None:
    """The contract above is only as good as the probe's versions: the images' own."""

    def pinned(lock: Path) -> dict[str, str]:
        return {p.name: p.version for p in deps.parse_lock(lock.read_text())}

    probe = pinned(REPO / "tests" / "projects" / "smoked" / "images" / "probe" / "requirements.lock")
    for image, names in (
        ("pytorch-runtime", ("kernels", "huggingface-hub")),
        ("worker-embed", ("runpod", "huggingface-hub")),
        ("worker-diffusion", ("runpod", "huggingface-hub")),
    ):
        locked = pinned(REPO / "images" / image / "requirements.lock")
        assert {n: probe[n] for n in names} == {n: locked[n] for n in names}, image
