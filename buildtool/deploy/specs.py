"""The deployment stage: RunPod API v2 request bodies for a built image, from what the pipeline knows.

Per variant, a template (`POST /v2/templates`) and a serverless endpoint (`POST /v2/serverless`) for a
worker, or a template and a pod (`POST /v2/pods`) for a runtime image. The image is named by the
digest the build pushed; the container disk is sized from the image's measured unpacked size; the
host CUDA floor comes from the base; GPU types and serverless pools from the variant's targets, in
the matrix's order; secrets are RunPod secret references, never values. The bodies follow the
vendored OpenAPI description (schema/runpod-api-v2.openapi.json), and tests validate them against it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from buildtool import facts
from buildtool.config.model import NO_DEPLOY
from buildtool.errors import DeploySpecError, Location, Problem
from buildtool.files import write_atomically
from buildtool.plan import Variant

RUNPOD_API = "https://api.runpod.io"
POD_PORTS = ("8888/http", "22/tcp")  # Jupyter and SSH, as RunPod's own pod templates expose
SERVERLESS_VOLUME = "/runpod-volume"  # where RunPod mounts an endpoint's network volume
POD_VOLUME = "/workspace"  # where a pod's network volume goes unless the model says otherwise
SPEC_SCHEMA = 1


@dataclass(frozen=True)
class PushedImage:
    """A variant's image as the registry holds it."""

    variant: str
    reference: str  # <repository>@sha256:...
    unpacked_size: int | None  # bytes on the container disk


@dataclass(frozen=True)
class ApiRequest:
    operation: str  # the OpenAPI operationId
    method: str
    path: str
    body: dict[str, Any]


@dataclass(frozen=True)
class DiskSize:
    gb: int  # what the spec asks for
    required_gb: int | None  # unpacked image + headroom + margin; None when the size is unknown
    declared: bool
    unpacked_bytes: int | None
    headroom_gb: float
    margin: float


@dataclass(frozen=True)
class DeploySpec:
    variant: str
    image: str
    disk: DiskSize
    floor: facts.HostFloor
    requests: tuple[ApiRequest, ...]
    notes: tuple[str, ...]

    def document(self) -> dict[str, Any]:
        return {
            "schema": SPEC_SCHEMA,
            "variant": self.variant,
            "image": self.image,
            "api": RUNPOD_API,
            "disk": {
                "container_disk_gb": self.disk.gb,
                "required_gb": self.disk.required_gb,
                "declared": self.disk.declared,
                "unpacked_bytes": self.disk.unpacked_bytes,
                "download_headroom_gb": self.disk.headroom_gb,
                "margin": self.disk.margin,
            },
            "host": {"cuda": self.floor.cuda, "driver_floor": self.floor.driver},
            "requests": [
                {"operation": r.operation, "method": r.method, "path": r.path, "body": r.body}
                for r in self.requests
            ],
            "notes": list(self.notes),
        }


def size_disk(variant: Variant, unpacked: int | None, margin: float) -> DiskSize:
    """The container disk: the declared one, checked, or the unpacked image plus the download
    headroom and `margin` (the container-disk rule's option, policy.option)."""
    deploy = variant.image.deploy or NO_DEPLOY
    required = deploy.required_disk_gb(unpacked, margin) if unpacked is not None else None
    if deploy.container_disk_gb is not None:
        if required is not None and deploy.container_disk_gb < required:
            # The build refuses this before moving tags; an image built before the rule still gets here.
            raise DeploySpecError(
                Problem(
                    f"container_disk_gb {deploy.container_disk_gb} cannot hold the image: it unpacks to "
                    f"{unpacked / 1e9:.2f} GB and needs {required} GB"  # type: ignore[operator]
                    f" with {deploy.download_headroom_gb:g} GB of headroom and a {margin:.0%} margin",
                    deploy.location,
                    variant=variant.name,
                    hint=f"set container_disk_gb: {required}, or leave it out to use the computed size",
                )
            )
        return DiskSize(
            deploy.container_disk_gb, required, True, unpacked, deploy.download_headroom_gb, margin
        )
    if required is None:
        raise DeploySpecError(
            Problem(
                "the image's unpacked size is not known, so its container disk cannot be sized",
                variant=variant.name,
                hint="run buildtool build for it (the build measures it), or set deploy.container_disk_gb",
            )
        )
    return DiskSize(required, required, False, unpacked, deploy.download_headroom_gb, margin)


def environment(variant: Variant) -> dict[str, str]:
    """Plain settings, and each secret as a RunPod secret reference: the value never leaves RunPod."""
    deploy = variant.image.deploy or NO_DEPLOY
    env = dict(deploy.env)
    for name in variant.image.secrets:
        if name in env:
            raise DeploySpecError(
                Problem(
                    f"{name} is both a secret and a plain deploy.env setting",
                    deploy.location,
                    variant=variant.name,
                    hint=f"remove {name} from deploy.env: the secret is passed as a RunPod secret",
                )
            )
        env[name] = "{{ RUNPOD_SECRET_" + name + " }}"
    return dict(sorted(env.items()))


def gpu_pools(variant: Variant) -> tuple[list[str], list[str], list[str]]:
    """(pools in preference order, types in them that are not targets, notes)."""
    pools: list[str] = []
    notes = []
    wanted = {g.runpod_id for g in variant.targets}
    for gpu in variant.targets:
        pool = facts.serverless_pool(gpu.runpod_id)
        if pool is None:
            notes.append(f"{gpu.name} ({gpu.runpod_id}) is in no serverless pool facts.py knows: left out")
        elif pool not in pools:
            pools.append(pool)
    excluded = sorted(t for pool in pools for t in facts.SERVERLESS_POOLS[pool] if t not in wanted)
    return pools, excluded, notes


def deploy_spec(
    variant: Variant, pushed: PushedImage, margin: float, endpoint_name: str | None = None
) -> DeploySpec:
    """The spec of one pushed variant; `margin` is the container disk's spare room (size_disk)."""
    deploy = variant.image.deploy or NO_DEPLOY
    disk = size_disk(variant, pushed.unpacked_size, margin)
    floor = facts.host_floor(variant.base.cuda)
    digest = pushed.reference.rpartition("@")[2]
    if not digest.startswith("sha256:"):
        raise DeploySpecError(
            Problem(f"{pushed.reference} is not a reference by digest", variant=variant.name)
        )
    if not variant.targets:
        raise DeploySpecError(
            Problem("the variant has no GPU target to deploy to", variant.gpus_location, variant=variant.name)
        )
    notes: list[str] = []
    container: dict[str, Any] = {"image": pushed.reference, "disk": disk.gb}
    env = environment(variant)
    if env:
        container["env"] = env
    ports = list(deploy.ports or (() if variant.is_worker else POD_PORTS))
    if ports:
        container["ports"] = ports
    template: dict[str, Any] = {
        "name": f"{variant.name}-{digest.removeprefix('sha256:')[:12]}",  # template names are unique
        **container,
        "category": "NVIDIA",
        "serverless": variant.is_worker,
        "startJupyter": not variant.is_worker,
        "startSsh": not variant.is_worker,
    }
    if floor.allowed_cuda_versions:
        template["allowedCudaVersions"] = list(floor.allowed_cuda_versions)
    requests = [ApiRequest("createTemplate", "POST", "/v2/templates", template)]
    model = variant.image.model
    if variant.is_worker:
        pools, excluded, pool_notes = gpu_pools(variant)
        notes += pool_notes
        if not pools:
            raise DeploySpecError(
                Problem(
                    "none of the variant's GPU targets is in a serverless pool",
                    variant.gpus_location,
                    variant=variant.name,
                    hint="target a GPU listed in facts.SERVERLESS_POOLS",
                )
            )
        gpu: dict[str, Any] = {"pools": pools, "count": deploy.gpu_count}
        if excluded:
            gpu["excludedTypes"] = excluded
        if floor.cuda:
            gpu["minCudaVersion"] = floor.cuda
        endpoint: dict[str, Any] = {
            "name": endpoint_name or variant.name,
            **container,
            "type": "QUEUE",
            "gpu": gpu,
            "scaling": {"type": "QUEUE_DELAY", "queueDelay": deploy.queue_delay_s},
            "workers": {
                "min": deploy.workers_min,
                "max": deploy.workers_max,
                "idleTimeout": deploy.idle_timeout_s,
            },
            "flashboot": "FLASHBOOT",
        }
        if deploy.network_volume:
            endpoint["networkVolumes"] = [deploy.network_volume]
            if model and model.volume_path and not model.volume_path.startswith(SERVERLESS_VOLUME + "/"):
                notes.append(
                    f"the model's volume_path {model.volume_path} is outside {SERVERLESS_VOLUME}, where "
                    "RunPod mounts an endpoint's network volume"
                )
        elif model and model.source == "volume":
            notes.append(
                "the model lives on a network volume but deploy.network_volume names none: "
                "the workers will not find it"
            )
        requests.append(ApiRequest("createEndpoint", "POST", "/v2/serverless", endpoint))
    else:
        first, *others = variant.targets
        if others:
            notes.append(
                f"a pod runs on one GPU type: {first.name}; the others in preference order: "
                + ", ".join(g.name for g in others)
            )
        pod_gpu: dict[str, Any] = {"id": first.runpod_id, "count": deploy.gpu_count}
        if floor.cuda:
            pod_gpu["minCudaVersion"] = floor.cuda
        pod: dict[str, Any] = {
            "name": endpoint_name or variant.name,
            **container,
            "gpu": pod_gpu,
            "cloud": "SECURE",
            "startJupyter": True,
            "startSsh": True,
        }
        if deploy.network_volume:
            path = model.volume_path if model and model.volume_path else POD_VOLUME
            pod["mounts"] = {"network": [{"volumeId": deploy.network_volume, "path": path}]}
        requests.append(ApiRequest("createPod", "POST", "/v2/pods", pod))
    return DeploySpec(variant.name, pushed.reference, disk, floor, tuple(requests), tuple(notes))


def pushed_images(build_dir: Path) -> dict[str, PushedImage]:
    """What build/manifest.json says the build pushed, by variant."""
    path = build_dir / "manifest.json"
    if not path.is_file():
        raise DeploySpecError(
            Problem("no build/manifest.json", Location(path), hint="run buildtool build first")
        )
    manifest = json.loads(path.read_text())
    return {
        name: PushedImage(name, str(entry["image"]), entry.get("unpacked_size"))
        for name, entry in manifest.get("variants", {}).items()
    }


def spec_path(deploy_dir: Path, variant: str) -> Path:
    return deploy_dir / f"{variant}.json"


def write_spec(deploy_dir: Path, spec: DeploySpec) -> Path:
    path = spec_path(deploy_dir, spec.variant)
    write_atomically(path, json.dumps(spec.document(), indent=2, sort_keys=True) + "\n")
    return path
