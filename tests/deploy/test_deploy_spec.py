"""buildtool deploy-spec and deploy: RunPod API v2 request bodies, validated against RunPod's vendored
OpenAPI description; the sender against a local HTTP server that records what it is sent."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from conftest import Project
from runpod_schema import operation, request_errors, response_errors

from buildtool import facts

WORKER = "worker-embed-runpod-torch211-cu130"
RUNTIME = "pytorch-runtime-runpod-torch211-cu130"
DIGEST = "sha256:" + "ab" * 32
UNPACKED = 5_688_887_296  # the default worker as built on the torch 2.11 stand-in (2026-11-22): 5.69 GB
EMBED_DEPLOY = (  # worker-embed's deploy section in matrix.yaml
    "    deploy:\n      download_headroom_gb: 1\n      workers_min: 0\n      workers_max: 3\n"
    "      idle_timeout_s: 5\n"
)


def write_manifest(project: Project, sizes: dict[str, int | None]) -> dict[str, str]:
    """build/manifest.json as the build writes it, for `sizes` (variant -> unpacked bytes)."""
    images = {v: f"localhost:5000/{v.split('-runpod')[0]}@{DIGEST}" for v in sizes}
    variants = {v: {"digest": DIGEST, "image": images[v], "unpacked_size": s} for v, s in sizes.items()}
    path = project.root / "build" / "manifest.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"schema": 1, "variants": variants, "failed": {}}))
    return images


def spec_of(project: Project, variant: str) -> dict[str, Any]:
    return json.loads((project.root / "build" / "deploy" / f"{variant}.json").read_text())  # type: ignore[no-any-return]


def bodies(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["operation"]: r["body"] for r in spec["requests"]}


def assert_valid(spec: dict[str, Any]) -> None:
    for request in spec["requests"]:
        assert (request["method"], request["path"]) == operation(request["operation"])
        assert request_errors(request["operation"], request["body"]) == []


def test_the_default_worker_gets_a_template_and_endpoint_runpod_accepts(cli, project: Project) -> None:  # type: ignore[no-untyped-def]
    images = write_manifest(project, {WORKER: UNPACKED})
    result = cli("deploy-spec", "--matrix", str(project.matrix), "--select", WORKER)
    assert result.code == 0, result.out + result.err
    spec = spec_of(project, WORKER)
    assert_valid(spec)
    template, endpoint = bodies(spec)["createTemplate"], bodies(spec)["createEndpoint"]
    # The image by the digest the build pushed, never a moving tag.
    assert template["image"] == endpoint["image"] == images[WORKER]
    # The container disk from the measured size: image + declared headroom, plus the 20% margin.
    headroom = spec["disk"]["download_headroom_gb"]
    assert endpoint["disk"] == template["disk"] == math.ceil((UNPACKED / 1e9 + headroom) * 1.2)
    assert spec["disk"]["declared"] is False and spec["disk"]["unpacked_bytes"] == UNPACKED
    # CUDA 13.0 base: hosts whose driver reports at least 13.0 (driver 580).
    assert endpoint["gpu"]["minCudaVersion"] == "13.0" and template["allowedCudaVersions"] == ["13.0"]
    assert spec["host"] == {"cuda": "13.0", "driver_floor": "580.65"}
    # The matrix's GPU targets in its order, as serverless pools; pool-mates not tested are excluded;
    # B200 is refused by policy and appears nowhere.
    assert endpoint["gpu"]["pools"] == ["AMPERE_80", "ADA_80_PRO", "HOPPER_141", "AMPERE_48", "ADA_24"]
    assert "NVIDIA A100-SXM4-80GB" in endpoint["gpu"]["excludedTypes"]
    assert "NVIDIA H100 80GB HBM3" not in endpoint["gpu"]["excludedTypes"]
    assert "B200" not in json.dumps(spec)
    assert endpoint["flashboot"] == "FLASHBOOT" and endpoint["type"] == "QUEUE"
    assert endpoint["scaling"] == {"type": "QUEUE_DELAY", "queueDelay": 4.0}
    assert template["serverless"] is True and template["startSsh"] is False
    assert "5.69 GB" in result.out and f"{endpoint['disk']} GB" in result.out


def test_the_runtime_image_gets_a_pod_on_its_first_gpu(cli, project: Project) -> None:  # type: ignore[no-untyped-def]
    write_manifest(project, {RUNTIME: 7_000_000_000})
    assert cli("deploy-spec", "--matrix", str(project.matrix), "--select", RUNTIME).code == 0
    spec = spec_of(project, RUNTIME)
    assert_valid(spec)
    pod = bodies(spec)["createPod"]
    assert pod["gpu"] == {"id": "NVIDIA A100 80GB PCIe", "count": 1, "minCudaVersion": "13.0"}
    assert pod["ports"] == ["8888/http", "22/tcp"] and pod["cloud"] == "SECURE"
    assert any("others in preference order: H100" in note for note in spec["notes"])


def test_settings_secrets_and_volume_come_from_matrix_yaml(cli, project: Project, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    planted = "hf_" + "Q" * 34
    monkeypatch.setenv("HF_TOKEN", planted)
    project.edit("    handler: app/handler.py\n", "    handler: app/handler.py\n    secrets: [HF_TOKEN]\n")
    project.edit(
        EMBED_DEPLOY,
        "    deploy:\n"
        "      container_disk_gb: 40\n"
        "      workers_min: 1\n"
        "      workers_max: 6\n"
        "      idle_timeout_s: 30\n"
        "      queue_delay_s: 2\n"
        "      network_volume: vol_abc123\n"
        "      env: {LOG_LEVEL: debug}\n",
    )
    write_manifest(project, {WORKER: UNPACKED})
    result = cli("deploy-spec", "--matrix", str(project.matrix), "--select", WORKER)
    assert result.code == 0, result.out + result.err
    spec = spec_of(project, WORKER)
    assert_valid(spec)
    endpoint = bodies(spec)["createEndpoint"]
    assert endpoint["disk"] == 40 and spec["disk"]["declared"] is True
    assert endpoint["workers"] == {"min": 1, "max": 6, "idleTimeout": 30}
    assert endpoint["scaling"]["queueDelay"] == 2.0
    assert endpoint["networkVolumes"] == ["vol_abc123"]
    # The secret is a RunPod secret reference; its value is nowhere in what is written.
    assert endpoint["env"] == {"HF_TOKEN": "{{ RUNPOD_SECRET_HF_TOKEN }}", "LOG_LEVEL": "debug"}
    assert planted not in (project.root / "build" / "deploy" / f"{WORKER}.json").read_text()


def test_a_declared_disk_below_the_measured_image_is_refused(cli, project: Project) -> None:  # type: ignore[no-untyped-def]
    project.edit(EMBED_DEPLOY, "    deploy: {container_disk_gb: 5, download_headroom_gb: 0}\n")
    write_manifest(project, {WORKER: UNPACKED})
    result = cli("deploy-spec", "--matrix", str(project.matrix), "--select", WORKER)
    assert result.code == 2
    assert "container_disk_gb 5 cannot hold the image: it unpacks to 5.69 GB and needs 7 GB" in result.err
    assert "set container_disk_gb: 7" in result.err
    assert f"matrix.yaml:{project.line_of('deploy: {container_disk_gb: 5')}" in result.err
    assert not (project.root / "build" / "deploy").exists()


def test_without_a_build_there_is_no_spec(cli, project: Project) -> None:  # type: ignore[no-untyped-def]
    result = cli("deploy-spec", "--matrix", str(project.matrix))
    assert result.code == 2 and "no build/manifest.json" in result.err and "run buildtool build" in result.err
    write_manifest(project, {RUNTIME: 7_000_000_000})
    result = cli("deploy-spec", "--matrix", str(project.matrix), "--select", WORKER)
    assert result.code == 2 and f"no selected variant was built: {WORKER}" in result.err


def test_the_same_build_gives_byte_identical_specs(cli, project: Project) -> None:  # type: ignore[no-untyped-def]
    write_manifest(project, {WORKER: UNPACKED, RUNTIME: 7_000_000_000})
    assert cli("deploy-spec", "--matrix", str(project.matrix)).code == 0
    first = {p.name: p.read_bytes() for p in (project.root / "build" / "deploy").iterdir()}
    assert cli("deploy-spec", "--matrix", str(project.matrix)).code == 0
    assert {p.name: p.read_bytes() for p in (project.root / "build" / "deploy").iterdir()} == first
    assert set(first) == {f"{WORKER}.json", f"{RUNTIME}.json"}


@pytest.mark.parametrize(
    ("deploy", "message"),
    [
        ("{ports: [8888]}", "ports must be a string"),
        ("{ports: ['8888/https']}", "port '8888/https' is not port/protocol"),
        ("{workers_min: 4, workers_max: 2}", "workers_min (4) is above workers_max (2)"),
        ("{idle_timeout_s: 0}", "idle_timeout_s must be from 1 to 3600, not 0"),
        ("{queue_delay_s: 0.1}", "queue_delay_s must be at least 0.5"),
        ("{queue_delay_s: 0.1}", "fix: set queue_delay_s to 0.5 or more, or leave it out (4)"),
        ("{idle_timeout_s: 9000}", "fix: set idle_timeout_s to a value from 1 to 3600, or leave it out (5)"),
        ("{env: {1BAD: x}}", "'1BAD' is not of the allowed form"),
        ("{worker_max: 3}", "Perhaps you meant 'workers_max'?"),
    ],
)
def test_bad_deploy_settings_are_one_clear_error(cli, project: Project, deploy: str, message: str) -> None:  # type: ignore[no-untyped-def]
    project.edit(EMBED_DEPLOY, f"    deploy: {deploy}\n")
    result = cli("check", "--matrix", str(project.matrix))
    assert result.code == 2 and message in result.err, result.err
    assert f"matrix.yaml:{project.line_of('deploy: ')}" in result.err
    assert "Traceback" not in result.err


def gpu_type(type_id: str, pool: str | None) -> dict[str, Any]:
    """One entry of RunPod's GPU catalog, with the fields its OpenAPI description requires."""
    return {
        "id": type_id,
        "name": type_id.removeprefix("NVIDIA ").removeprefix("GeForce "),
        "pool": pool,
        "manufacturer": "NVIDIA",
        "memory": 80,
        "secure": True,
        "community": False,
        "price": {"secure": 2.69, "community": 0.0},
        "maxCount": {"secure": 8, "community": 0},
    }


def catalog_as_facts_say() -> list[dict[str, Any]]:
    """The catalog as facts.SERVERLESS_POOLS says it is, and a card in no pool."""
    gpus = [gpu_type(t, pool) for pool, types in facts.SERVERLESS_POOLS.items() for t in types]
    return [*gpus, gpu_type("NVIDIA B200", None)]


class RecordingApi(BaseHTTPRequestHandler):
    """RunPod's API as the sender sees it: records each request, answers `status` with an id; the
    GPU catalog from `gpus`."""

    records: list[dict[str, Any]]
    status: int
    gpus: list[dict[str, Any]]

    def do_GET(self) -> None:
        self.records.append({"path": self.path, "auth": self.headers["Authorization"], "body": None})
        assert self.path == "/v2/catalog/gpus", self.path
        answer = {"gpus": self.gpus}
        assert response_errors("listGpuTypes", answer) == []
        self._answer(200, answer)

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.records.append({"path": self.path, "auth": self.headers["Authorization"], "body": body})
        if self.status >= 400:
            answer = {"title": "Unprocessable Entity", "detail": "gpu.pools[0]: unknown pool", "status": 422}
        else:
            answer = {"id": f"id-{len(self.records)}", **body}
        self._answer(self.status, answer)

    def _answer(self, status: int, answer: object) -> None:
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def runpod_api() -> Iterator[tuple[str, type[RecordingApi]]]:
    handler = type("Handler", (RecordingApi,), {"records": [], "status": 201, "gpus": catalog_as_facts_say()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()


def test_deploy_sends_the_spec_with_the_key(cli, project: Project, runpod_api, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    url, api = runpod_api
    key = "rpa_" + "K" * 40
    monkeypatch.setenv("RUNPOD_API_KEY", key)
    write_manifest(project, {WORKER: UNPACKED})
    result = cli("deploy", "--matrix", str(project.matrix), "--endpoint", "embed-prod", "--api-url", url)
    assert result.code == 0, result.out + result.err
    # RunPod's GPU catalog first, then the spec's requests in order
    assert [r["path"] for r in api.records] == ["/v2/catalog/gpus", "/v2/templates", "/v2/serverless"]
    assert {r["auth"] for r in api.records} == {f"Bearer {key}"}
    assert api.records[2]["body"]["name"] == "embed-prod"  # the default variant, under the given name
    for record, op in zip(api.records[1:], ("createTemplate", "createEndpoint"), strict=True):
        assert request_errors(op, record["body"]) == []
    assert "createEndpoint: created id-3" in result.out
    assert key not in result.out + result.err


def test_deploy_without_a_key_prints_and_sends_nothing(
    cli, project: Project, runpod_api, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    url, api = runpod_api
    monkeypatch.delenv("RUNPOD_API_KEY", raising=False)
    write_manifest(project, {WORKER: UNPACKED})
    result = cli("deploy", "--matrix", str(project.matrix), "--endpoint", "embed", "--api-url", url)
    assert result.code == 0, result.err
    assert api.records == []
    assert "RUNPOD_API_KEY is not set: nothing sent" in result.out
    assert f"GET {url}/v2/catalog/gpus  (checked against the spec first)" in result.out
    assert f"POST {url}/v2/serverless" in result.out and '"flashboot": "FLASHBOOT"' in result.out


def test_a_refusal_from_runpod_is_one_clear_error(cli, project: Project, runpod_api, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    url, api = runpod_api
    api.status = 422
    monkeypatch.setenv("RUNPOD_API_KEY", "rpa_test")
    write_manifest(project, {WORKER: UNPACKED})
    result = cli("deploy", "--matrix", str(project.matrix), "--endpoint", "embed", "--api-url", url)
    assert result.code == 1
    assert (
        "createTemplate (POST" in result.err
        and "422 Unprocessable Entity; gpu.pools[0]: unknown pool" in result.err
    )
    assert len(api.records) == 2  # the catalog, the refused request, and nothing after it
    assert "Traceback" not in result.err


H100 = "NVIDIA H100 80GB HBM3"


@pytest.mark.parametrize(
    ("change", "says"),
    [
        # RunPod put a new card into a pool the endpoint selects: excludedTypes does not name it
        (
            lambda gpus: [*gpus, gpu_type("NVIDIA H100 SXM5 144GB", "ADA_80_PRO")],
            "RunPod's pool ADA_80_PRO also holds NVIDIA H100 SXM5 144GB, which the variant does not target "
            "and the spec does not exclude: workers could start there",
        ),
        # a target moved to a pool of its own: the endpoint would never get it
        (
            lambda gpus: [{**g, "pool": "HOPPER_80"} if g["id"] == H100 else g for g in gpus],
            f"RunPod's GPU catalog has H100 ({H100}) in pool HOPPER_80, not ADA_80_PRO as "
            "facts.SERVERLESS_POOLS says",
        ),
        # moved into a pool the endpoint selects anyway (H200's): reached, but the table is stale
        (
            lambda gpus: [{**g, "pool": "HOPPER_141"} if g["id"] == H100 else g for g in gpus],
            f"RunPod's GPU catalog has H100 ({H100}) in pool HOPPER_141, not ADA_80_PRO as "
            "facts.SERVERLESS_POOLS says: the spec was made from a stale table",
        ),
        # a type id RunPod no longer knows
        (
            lambda gpus: [g for g in gpus if g["id"] != H100],
            f"RunPod's GPU catalog has no type '{H100}' (GPU H100)",
        ),
    ],
)
def test_a_catalog_that_disagrees_with_the_spec_refuses_before_anything_is_created(  # type: ignore[no-untyped-def]
    cli, project: Project, runpod_api, monkeypatch, change, says: str
) -> None:
    url, api = runpod_api
    api.gpus = change(api.gpus)
    monkeypatch.setenv("RUNPOD_API_KEY", "rpa_test")
    write_manifest(project, {WORKER: UNPACKED})
    result = cli("deploy", "--matrix", str(project.matrix), "--endpoint", "embed", "--api-url", url)
    assert result.code == 1, result.out + result.err
    assert says in result.err, result.err
    assert "facts.SERVERLESS_POOLS" in result.err or "runpod_id" in result.err  # what to change
    assert [r["path"] for r in api.records] == ["/v2/catalog/gpus"]  # no template, no endpoint
    assert "Traceback" not in result.err


def test_a_pod_on_a_type_runpod_does_not_know_names_its_matrix_line(  # type: ignore[no-untyped-def]
    cli, project: Project, runpod_api, monkeypatch
) -> None:
    url, api = runpod_api
    api.gpus = [g for g in api.gpus if not g["id"].startswith("NVIDIA A100")]
    api.gpus.append(gpu_type("NVIDIA A100 80GB PCIe ", "AMPERE_80"))  # the id as a catalog may spell it
    monkeypatch.setenv("RUNPOD_API_KEY", "rpa_test")
    write_manifest(project, {RUNTIME: UNPACKED})
    result = cli(
        "deploy", "--matrix", str(project.matrix), "--select", RUNTIME, "--endpoint", "pod", "--api-url", url
    )
    assert result.code == 1, result.out + result.err
    assert "RunPod's GPU catalog has no type 'NVIDIA A100 80GB PCIe' (GPU A100)" in result.err
    assert f"matrix.yaml:{project.line_of('{name: A100,')}" in result.err
    assert "Perhaps you meant 'NVIDIA A100 80GB PCIe '?" in result.err
    assert [r["path"] for r in api.records] == ["/v2/catalog/gpus"]


def test_a_catalog_answer_that_is_no_gpu_list_is_one_clear_error(  # type: ignore[no-untyped-def]
    cli, project: Project, runpod_api, monkeypatch
) -> None:
    url, api = runpod_api
    api.do_GET = lambda self: self._answer(200, {"data": []})  # a proxy, another API version
    monkeypatch.setenv("RUNPOD_API_KEY", "rpa_test")
    write_manifest(project, {WORKER: UNPACKED})
    result = cli("deploy", "--matrix", str(project.matrix), "--endpoint", "embed", "--api-url", url)
    assert result.code == 1 and "is not a list of GPU types" in result.err, result.err
    assert "--api-url" in result.err and "Traceback" not in result.err


def test_deploy_takes_one_variant(cli, project: Project, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("RUNPOD_API_KEY", raising=False)
    write_manifest(project, {WORKER: UNPACKED, RUNTIME: 1})
    result = cli("deploy", "--matrix", str(project.matrix), "--endpoint", "x", "--select", "*cu130")
    assert result.code == 2 and "deploy sends one variant" in result.err


def test_an_unreachable_registry_is_said_as_such_not_as_an_unknown_size(cli, project: Project) -> None:  # type: ignore[no-untyped-def]
    """A manifest without the unpacked size (built earlier elsewhere) sends deploy-spec to the
    registry; when that cannot answer, the error names the registry, and nothing is written."""
    path = project.root / "build" / "manifest.json"
    path.parent.mkdir(parents=True)
    image = f"127.0.0.1:1/worker-embed@{DIGEST}"
    path.write_text(json.dumps({"variants": {WORKER: {"image": image, "unpacked_size": None}}}))
    result = cli("deploy-spec", "--matrix", str(project.matrix), "--select", WORKER)
    assert result.code == 1, result.err
    assert f"cannot measure {image} (build/manifest.json has no unpacked size for it)" in result.err
    assert "Connection refused" in result.err and "docker login" in result.err
    assert "Traceback" not in result.err and not (project.root / "build" / "deploy").exists()
