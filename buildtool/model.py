"""matrix.yaml's model: the frozen dataclasses the loader (matrix.py) builds and every stage reads."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from buildtool import refs
from buildtool.errors import Location

NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")  # bake target names allow no dots
SECRET_NAME_PATTERN = "^[A-Z][A-Z0-9_]*$"  # as RunPod secrets and environment variables are named
SCHEMA_VERSION = 1
ImageKind = Literal["runtime", "serverless-worker"]
IMAGE_KINDS: tuple[str, ...] = ("runtime", "serverless-worker")
ModelSource = Literal["baked", "volume"]
MODEL_SOURCES: tuple[str, ...] = ("baked", "volume")
TIERS: tuple[int, ...] = (1, 2, 3)
FLASH_ATTENTION_VERSIONS: tuple[int, ...] = (2, 3)


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


@dataclass(frozen=True)
class Deploy:
    """How the image is deployed on RunPod: what its container disk must hold."""

    container_disk_gb: int | None  # None: sized from the built image
    download_headroom_gb: float  # room for what the worker downloads to its disk at run time
    location: Location = field(compare=False)


@dataclass(frozen=True)
class SmokeSettings:
    sample_input: str  # JSON text, passed to the handler as job["input"]
    output_shape: tuple[int, ...]


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
    deploy: Deploy | None = None


@dataclass(frozen=True)
class KernelSpec:
    """One entry of an image's `kernels:`: the `flash-attention` shorthand, or a Hub kernel."""

    name: str
    repo_id: str | None = None  # None for the flash-attention shorthand
    revision: str | None = None
    function: str = "flash_attn_func"
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

    def base(self, name: str) -> Base:
        return next(b for b in self.bases if b.name == name)

    def image(self, name: str) -> Image:
        return next(i for i in self.images if i.name == name)

    def gpu(self, name: str) -> Gpu:
        return next(g for g in self.gpus if g.name == name)


# --- the shape of matrix.yaml: every mapping's keys, with the JSON Schema of each value ----------
# The loader (matrix.py) takes its allowed and required keys from here, and schema.py generates the
# shipped JSON Schema (editor completion) from the same table: a key is written down once.


@dataclass(frozen=True)
class Key:
    schema: Mapping[str, Any]  # JSON Schema of the value; {"$ref": "<section>"} for a nested mapping
    doc: str
    required: bool = False


def _string(doc: str, required: bool = False, **more: Any) -> Key:
    return Key({"type": "string", **more}, doc, required)


def _strings(doc: str, required: bool = False) -> Key:
    return Key({"type": "array", "items": {"type": "string"}}, doc, required)


def _list_of(section: str, doc: str, required: bool = False) -> Key:
    return Key({"type": "array", "items": {"$ref": section}}, doc, required)


_NAME = {"pattern": NAME.pattern}
SECTIONS: dict[str, dict[str, Key]] = {
    "matrix file": {
        "version": Key({"const": SCHEMA_VERSION}, "the matrix format version", True),
        "source": _string("the repository URL (the images' org.opencontainers.image.source)", True),
        "registry": _string("where images and their build cache go (--registry and $REGISTRY win)"),
        "default_variant": _string("what `buildtool build --default` and `nox -s build` build"),
        "bases": _list_of("base", "the base-image catalogue", True),
        "gpus": _list_of("gpu", "the GPUs RunPod offers, by RunPod GPU type id", True),
        "images": _list_of("image", "the images: each a template directory", True),
        "matrix": Key({"$ref": "axes"}, "which images build on which bases", True),
        "policy": Key({"$ref": "policy"}, "what is refused; rule options too", True),
    },
    "base": {
        "name": _string("the base's name in variant names", True, **_NAME),
        "ref": _string("the image reference, as docker pull takes it", True),
        "tier": Key({"enum": list(TIERS)}, "1: cached on RunPod hosts, 2: popular, 3: custom", True),
        "python": _string("the Python the base ships, major.minor", True),
        "cuda": _string("CUDA major.minor; absent for a CPU-only base"),
        "cudnn": Key({"type": "integer"}, "cuDNN major version"),
        "torch": _string("the torch wheel's version with its local tag, e.g. 2.11.0+cu130"),
        "cuda_compat": Key(
            {"type": "boolean"}, "ships /usr/local/cuda/compat (needs the LD_LIBRARY_PATH fix)"
        ),
        "built_on": _string("Tier 3: the catalogue base it overlays"),
    },
    "gpu": {
        "name": _string("the GPU's short name (H100)", True),
        "runpod_id": _string("RunPod's GPU type id (NVIDIA H100 80GB HBM3)", True),
        "arch": _string("compute capability as sm_<major><minor>[a|f]", True),
        "flash_attention": Key({"enum": list(FLASH_ATTENTION_VERSIONS)}, "the FlashAttention it runs"),
    },
    "image": {
        "name": _string("the image's name (its repository)", True, **_NAME),
        "template": _string("the directory with Dockerfile.j2 and the build context", True),
        "kind": Key({"enum": list(IMAGE_KINDS)}, "a pod runtime or a serverless worker", True),
        "version": _string("the image's own version", True),
        "description": _string("one line, for labels and reports"),
        "args": Key({"type": "object", "additionalProperties": {"type": "string"}}, "build args"),
        "handler": _string("serverless workers: the handler module, relative to the template"),
        "model": Key({"$ref": "model"}, "the model the worker loads"),
        "smoke": Key({"$ref": "smoke"}, "what the smoke suite sends the handler and expects back"),
        "needs_torch": Key({"type": "boolean"}, "false for images that use no torch from their base"),
        "kernels": Key(
            {"type": "array", "items": {"anyOf": [{"const": "flash-attention"}, {"$ref": "kernel"}]}},
            "Hub kernels the build bakes; flash-attention: the FlashAttention each GPU target runs",
        ),
        "deploy": Key({"$ref": "deploy"}, "the RunPod deployment: container disk"),
        "secrets": Key(
            {"type": "array", "items": {"type": "string", "pattern": SECRET_NAME_PATTERN}},
            "the secrets it needs, by name: BuildKit secret mounts at build time, RunPod secrets at run time",
        ),
    },
    "model": {
        "name": _string("the model's name", True),
        "source": Key({"enum": list(MODEL_SOURCES)}, "baked into the image, or on a network volume", True),
        "size_gb": Key({"type": "number"}, "the weights' size in GB", True),
        "volume_path": _string("where the network volume holds it (/runpod-volume/...)"),
    },
    "kernel": {
        "name": _string("the kernel's name in the image", True, **_NAME),
        "repo_id": _string("the Hub repository (org/name)", True),
        "revision": _string("branch, tag or commit; matrix.lock records the commit", True),
        "function": _string("the attention function (default flash_attn_func)"),
        "archs": _strings("GPU archs it runs on; empty: any device"),
    },
    "deploy": {
        "container_disk_gb": Key(
            {"type": "integer", "minimum": 1},
            "the container disk to ask RunPod for; refused when the built image does not fit",
        ),
        "download_headroom_gb": Key(
            {"type": "number", "minimum": 0}, "disk the worker fills at run time (downloads, caches)"
        ),
    },
    "smoke": {
        "input": Key({"type": "object"}, "the job input the handler gets", True),
        "output_shape": Key({"type": "array", "items": {"type": "integer"}}, "the output's shape", True),
    },
    "axes": {
        "image": _strings("images to build", True),
        "base": _strings("bases to build each on", True),
        "gpus": Key(
            {"anyOf": [{"const": "all"}, {"type": "array", "items": {"type": "string"}}]}, "GPU targets"
        ),
        "include": _list_of("combination", "add or extend combinations (GitHub Actions semantics)"),
        "exclude": _list_of("combination", "remove combinations"),
    },
    "combination": {
        "image": _string("an image name"),
        "base": _string("a base name"),
        "gpus": _strings("GPU targets of this combination"),
    },
    "refused repository": {
        "repository": _string("a repository never to build on (any registry alias)", True),
        "reason": _string("why: said in every refusal", True),
        "mirrors": _strings("other names that serve the same images"),
    },
    "refused arch": {
        "arch": _string("sm_100 (one capability) or 10.x (a generation)", True),
        "reason": _string("why: said in every refusal", True),
    },
    "policy": {
        "allowed_tiers": Key(
            {"type": "array", "items": {"enum": list(TIERS)}}, "the tiers bases may have", True
        ),
        "refused_repositories": _list_of("refused repository", "repositories never built on", True),
        "refused_archs": _list_of("refused arch", "GPU archs never targeted", True),
        "tier3_registries": _strings("where Tier-3 bases may live (default ghcr.io)"),
        "max_baked_model_gb": Key({"type": "number"}, "bigger models go on a network volume (default 10)"),
        "model_loaders": _strings("calls that load a model (the handler check)"),
    },
}


def required_keys(section: str) -> tuple[str, ...]:
    return tuple(k for k, key in SECTIONS[section].items() if key.required)


def optional_keys(section: str) -> tuple[str, ...]:
    return tuple(k for k, key in SECTIONS[section].items() if not key.required)
