"""matrix.yaml's model: the frozen dataclasses the loader (matrix.py) builds and every stage reads."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from buildtool import refs
from buildtool.config.keys import ImageKind, ModelSource, default
from buildtool.errors import Location


@dataclass(frozen=True)
class Base:
    name: str
    ref: str
    tier: int
    cuda: str | None  # major.minor; None for CPU-only bases
    cudnn: int | None
    torch: str | None  # "2.11.0+cu130"; None when the base ships no torch
    python: str
    cuda_compat: bool  # ships /usr/local/cuda/compat (needs the LD_LIBRARY_PATH fix)
    built_on: str | None  # for Tier 3: the catalogue base it overlays
    location: Location = field(compare=False)
    field_lines: Mapping[str, int] = field(compare=False, default_factory=dict)

    @property
    def image(self) -> refs.ImageRef:
        return refs.parse(self.ref)  # validated when the matrix loaded

    @property
    def repository(self) -> str:
        return self.image.familiar

    @property
    def tag(self) -> str:
        return self.image.tag_or_latest

    def where(self, key: str) -> Location:
        return Location(self.location.file, self.field_lines.get(key, self.location.line))


@dataclass(frozen=True)
class Gpu:
    name: str
    runpod_id: str
    arch: str
    flash_attention: int | None
    location: Location = field(compare=False)


@dataclass(frozen=True)
class Model:
    name: str
    source: ModelSource
    size_gb: float
    volume_path: str | None
    location: Location = field(compare=False)
    files: str | None = None  # baked: where its files are in the image, a path pattern (fnmatch)


@dataclass(frozen=True)
class Deploy:
    """How the image is deployed on RunPod: its container disk, workers, scaler and storage."""

    container_disk_gb: int | None  # None: sized from the built image
    download_headroom_gb: float  # room for what the worker downloads to its disk at run time
    location: Location = field(compare=False)
    workers_min: int = default("deploy", "workers_min")
    workers_max: int = default("deploy", "workers_max")
    idle_timeout_s: int = default("deploy", "idle_timeout_s")
    queue_delay_s: float = default("deploy", "queue_delay_s")  # the QUEUE_DELAY scaler
    gpu_count: int = default("deploy", "gpu_count")
    network_volume: str | None = None  # a RunPod network volume id, mounted at the model's volume path
    ports: tuple[str, ...] = ()  # runtime pods: default 8888/http (Jupyter) and 22/tcp (SSH)
    env: tuple[tuple[str, str], ...] = ()  # plain settings; secrets go under the image's `secrets:`
    env_location: Location | None = field(default=None, compare=False)

    def required_disk_gb(self, unpacked: int, margin: float) -> int:
        """Whole GB of container disk for an image that unpacks to `unpacked` bytes: the image, the
        download headroom, and the margin on both."""
        return math.ceil((unpacked / 1e9 + self.download_headroom_gb) * (1 + margin))


NO_DEPLOY = Deploy(None, 0.0, Location(Path("matrix.yaml")))  # an image without a `deploy:` section


@dataclass(frozen=True)
class SmokeSettings:
    sample_input: str  # JSON text, passed to the handler as job["input"]
    output_shape: tuple[int, ...]  # embeddings: the array's shape; image: width, height; () none
    output: str = "embeddings"  # what the answer is: one of OUTPUT_KINDS (smoke/checks/outputs.py)
    model_dir: str | None = None  # a small model in the image that smoke copies onto the volume
    requires_gpu: bool = False  # the worker cannot serve on a CPU (vLLM): there, smoke stops at that
    imports: tuple[str, ...] = ()  # modules the image must import (checked on any device)


@dataclass(frozen=True)
class Image:
    name: str
    template: Path  # directory holding Dockerfile.j2 and the build context files
    kind: ImageKind
    version: str
    description: str
    args: tuple[tuple[str, str], ...]
    handler: str | None  # serverless workers: the handler module, relative to the template dir
    model: Model | None
    smoke: SmokeSettings | None
    needs_torch: bool  # False for images that use no torch from their base (CPU tools, tests)
    kernels: tuple[KernelSpec, ...]  # what the build bakes in; "flash-attention" expands per variant
    location: Location = field(compare=False)
    secrets: tuple[str, ...] = ()  # names of the secrets it needs: build-time mounts, RunPod secrets
    torch: str | None = None  # the torch wheel the image installs itself (2.11.0+cu130); None: the base's
    deploy: Deploy | None = None


@dataclass(frozen=True)
class KernelSpec:
    """One entry of an image's `kernels:`: the `flash-attention` shorthand, or a Hub kernel."""

    name: str
    repo_id: str | None = None  # None for the flash-attention shorthand
    revision: str | None = None
    function: str = default("kernel", "function")
    archs: tuple[str, ...] = ()


FLASH_ATTENTION_SHORTHAND = "flash-attention"


@dataclass(frozen=True)
class Combination:
    """One entry of matrix.include / matrix.exclude (GitHub Actions semantics)."""

    values: tuple[tuple[str, str], ...]
    gpus: tuple[str, ...] | None
    location: Location = field(compare=False)


@dataclass(frozen=True)
class MatrixAxes:
    image: tuple[str, ...]
    base: tuple[str, ...]
    gpus: tuple[str, ...] | None  # None: every GPU of the table
    include: tuple[Combination, ...]
    exclude: tuple[Combination, ...]
    location: Location = field(compare=False)
    gpus_location: Location | None = field(compare=False, default=None)


@dataclass(frozen=True)
class Refusal:
    what: str
    reason: str
    location: Location = field(compare=False)
    mirrors: tuple[str, ...] = ()  # refused repositories: other names that serve the same images


@dataclass(frozen=True)
class Policy:
    allowed_tiers: tuple[int, ...]
    tier3_registries: tuple[str, ...]
    refused_repositories: tuple[Refusal, ...]
    refused_archs: tuple[Refusal, ...]
    max_baked_model_gb: float
    model_loaders: tuple[str, ...]  # call names that load a model (handler AST check)
    model_servers: tuple[str, ...] = ()  # commands of processes that load a model (vllm serve)
    # Every other key of `policy:` is an option of a registered rule (key, plain value, where); the
    # policy stage checks names and types against its rules (policy/registry.py RuleOption).
    rule_options: tuple[tuple[str, Any, Location], ...] = field(default=(), compare=False)


@dataclass(frozen=True)
class Matrix:
    path: Path
    source_url: str
    registry: str | None  # None: the embedded local registry
    default_variant: str | None
    bases: tuple[Base, ...]
    gpus: tuple[Gpu, ...]
    images: tuple[Image, ...]
    axes: MatrixAxes
    policy: Policy
    cache_manifest: str = "auto"  # CACHE_MANIFESTS

    def base(self, name: str) -> Base:
        return next(b for b in self.bases if b.name == name)

    def image(self, name: str) -> Image:
        return next(i for i in self.images if i.name == name)

    def gpu(self, name: str) -> Gpu:
        return next(g for g in self.gpus if g.name == name)
