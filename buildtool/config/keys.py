"""The shape of matrix.yaml: every mapping's keys, with the JSON Schema of each value.

Each key is written down once, here: its type and bounds (a JSON Schema fragment), its default, its
grammar and its doc. The loader (matrix.py, images.py) takes allowed and required keys, defaults and
bounds from here (Reader.key); the model's dataclass defaults (model.py), the shipped JSON Schema
(schema.py) and the docs' reference table (docs/matrix.md) are generated from the same table.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")  # bake target names allow no dots
SECRET_NAME_PATTERN = "^[A-Z][A-Z0-9_]*$"  # as RunPod secrets and environment variables are named
SCHEMA_VERSION = 1
ImageKind = Literal["runtime", "serverless-worker"]
IMAGE_KINDS: tuple[str, ...] = ("runtime", "serverless-worker")
ModelSource = Literal["baked", "volume"]
MODEL_SOURCES: tuple[str, ...] = ("baked", "volume")
OUTPUT_KINDS: tuple[str, ...] = ("embeddings", "text", "image")  # what a worker answers
TIERS: tuple[int, ...] = (1, 2, 3)
# The registry build cache's manifest: auto (an image manifest on Amazon ECR, which refuses an
# index, else the index BuildKit writes by default), index, or image-manifest.
CACHE_MANIFESTS: tuple[str, ...] = ("auto", "index", "image-manifest")
FLASH_ATTENTION_VERSIONS: tuple[int, ...] = (2, 3)


@dataclass(frozen=True)
class Grammar:
    """The form a string must have. Values that reach a Dockerfile (names, versions, paths) have
    one, so no value can end an instruction or start another (text.py checks at load)."""

    pattern: str  # anchored; also the JSON Schema's pattern
    says: str  # what it allows, for the message


NAME_GRAMMAR = Grammar(NAME.pattern, "lower-case letters, digits and '-' (no dots: bake target names)")
LABEL_WORD = Grammar(r"^[A-Za-z0-9][A-Za-z0-9._-]*$", "letters, digits, '.', '_' and '-'")
VERSION = Grammar(r"^[0-9A-Za-z][0-9A-Za-z.+!_-]*$", "a version: letters, digits, '.', '+', '!', '_', '-'")
MAJOR_MINOR = Grammar(r"^[0-9]+\.[0-9]+$", "major.minor, e.g. 13.0")
RELATIVE_PATH = Grammar(
    r"^[A-Za-z0-9_][A-Za-z0-9._-]*(/[A-Za-z0-9_][A-Za-z0-9._-]*)*$",
    "a relative path inside the repository: letters, digits, '.', '_', '-' and '/', no component "
    "starting with '.' (so no '..'), not absolute",
)
ABSOLUTE_PATH = Grammar(
    r"^(/[A-Za-z0-9_][A-Za-z0-9._-]*)+$", "an absolute path: letters, digits, '.', '_', '-'"
)
PATH_PATTERN = Grammar(r"^[A-Za-z0-9._/*?\[\]-]+$", "a path pattern: path characters and * ? [ ]")
HUB_ID = Grammar(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$", "a Hub id: org/name")
REVISION = Grammar(r"^[A-Za-z0-9][A-Za-z0-9._/-]*$", "a branch, tag or commit")
IDENTIFIER = Grammar(r"^[A-Za-z_][A-Za-z0-9_]*$", "a Python or environment name: letters, digits, '_'")
MODULE = Grammar(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$", "a dotted module name")
GPU_TYPE_ID = Grammar(r"^[A-Za-z0-9][A-Za-z0-9 ._()-]*$", "letters, digits, spaces, '.', '_', '(', ')', '-'")
SOURCE_URL = Grammar(
    r"^[a-z][a-z0-9+.-]*://[A-Za-z0-9._~%!$&'()*+,;=:/?#\[\]-]+$", "a URL without spaces or quotes"
)


@dataclass(frozen=True)
class Key:
    schema: Mapping[str, Any]  # JSON Schema of the value; {"$ref": "<section>"} for a nested mapping
    doc: str
    required: bool = False
    grammar: Grammar | None = None  # a string's form (of each entry, for a list of strings)
    names: Grammar | None = None  # the form of a mapping's own keys (build args, env)
    default: Any = None  # the value when the key is absent (None: absent stays absent)
    bounds: str | None = None  # why the schema's minimum/maximum are what they are, for the message

    def json_schema(self) -> dict[str, Any]:
        """The value's schema with its doc and default, as schema/matrix.schema.json holds it."""
        default = list(self.default) if isinstance(self.default, tuple) else self.default
        return {**self.schema, "description": self.doc, **({} if default is None else {"default": default})}


def _string(doc: str, required: bool = False, grammar: Grammar | None = None, **more: Any) -> Key:
    pattern = {"pattern": grammar.pattern} if grammar else {}
    return Key({"type": "string", **pattern, **more}, doc, required, grammar)


def _strings(doc: str, required: bool = False, grammar: Grammar | None = None) -> Key:
    pattern = {"pattern": grammar.pattern} if grammar else {}
    return Key({"type": "array", "items": {"type": "string", **pattern}}, doc, required, grammar)


def _integer(doc: str, default: int | None = None, bounds: str | None = None, **limits: int) -> Key:
    return Key({"type": "integer", **limits}, doc, default=default, bounds=bounds)


def _number(doc: str, default: float | None = None, bounds: str | None = None, **limits: float) -> Key:
    return Key({"type": "number", **limits}, doc, default=default, bounds=bounds)


def _names_to_strings(doc: str) -> Key:
    """A mapping of identifiers (build args, environment names) to strings."""
    schema = {
        "type": "object",
        "additionalProperties": {"type": "string"},
        "propertyNames": {"pattern": IDENTIFIER.pattern},
    }
    return Key(schema, doc, names=IDENTIFIER)


def _list_of(section: str, doc: str, required: bool = False) -> Key:
    return Key({"type": "array", "items": {"$ref": section}}, doc, required)


SECTIONS: dict[str, dict[str, Key]] = {
    "matrix file": {
        "version": Key({"const": SCHEMA_VERSION}, "the matrix format version", True),
        "source": _string(
            "the repository URL (the images' org.opencontainers.image.source)", True, SOURCE_URL
        ),
        "registry": _string("where images and their build cache go (--registry and $REGISTRY win)"),
        "cache_manifest": Key(
            {"enum": list(CACHE_MANIFESTS)},
            "the registry cache's manifest: auto (image-manifest on Amazon ECR, else index), index, or "
            "image-manifest (an OCI image manifest: for a registry that refuses BuildKit's index)",
        ),
        "default_variant": _string(
            "what `buildtool build --default` and `nox -s build` build", grammar=NAME_GRAMMAR
        ),
        "bases": _list_of("base", "the base-image catalogue", True),
        "gpus": _list_of("gpu", "the GPUs RunPod offers, by RunPod GPU type id", True),
        "images": _list_of("image", "the images: each a template directory", True),
        "matrix": Key({"$ref": "axes"}, "which images build on which bases", True),
        "policy": Key({"$ref": "policy"}, "what is refused; rule options too", True),
    },
    "base": {
        "name": _string("the base's name in variant names", True, NAME_GRAMMAR),
        "ref": _string("the image reference, as docker pull takes it", True),
        "tier": Key({"enum": list(TIERS)}, "1: cached on RunPod hosts, 2: popular, 3: custom", True),
        "python": _string("the Python the base ships, major.minor", True, MAJOR_MINOR),
        "cuda": _string('CUDA major.minor, quoted ("13.0"); absent for a CPU-only base', grammar=MAJOR_MINOR),
        "cudnn": Key({"type": "integer"}, "cuDNN major version"),
        "torch": _string("the torch wheel's version with its local tag, e.g. 2.11.0+cu130", grammar=VERSION),
        "cuda_compat": Key(
            {"type": "boolean"},
            "ships /usr/local/cuda/compat: the rendered images put the host's driver libraries first on "
            "LD_LIBRARY_PATH",
        ),
        "built_on": _string("Tier 3: the catalogue base it overlays", grammar=NAME_GRAMMAR),
    },
    "gpu": {
        "name": _string("the GPU's short name (H100)", True, LABEL_WORD),
        "runpod_id": _string("RunPod's GPU type id (NVIDIA H100 80GB HBM3)", True, GPU_TYPE_ID),
        "arch": _string(
            "compute capability as sm_<major><minor>[a|f] (sm_90a); 9.0 and compute_90 read as sm_90", True
        ),
        "flash_attention": Key({"enum": list(FLASH_ATTENTION_VERSIONS)}, "the FlashAttention it runs"),
    },
    "image": {
        "name": _string("the image's name (its repository)", True, NAME_GRAMMAR),
        "template": _string(
            "the directory with Dockerfile.j2; every other file is copied into the build context (other "
            "*.j2 files rendered first)",
            True,
            RELATIVE_PATH,
        ),
        "kind": Key({"enum": list(IMAGE_KINDS)}, "a pod runtime or a serverless worker", True),
        "version": _string("the image's own version", True, VERSION),
        "description": _string("one line, for labels and reports"),
        "args": _names_to_strings("build args"),
        "handler": _string(
            "serverless workers: the handler module, relative to the template", grammar=RELATIVE_PATH
        ),
        "model": Key({"$ref": "model"}, "the model the worker loads"),
        "smoke": Key({"$ref": "smoke"}, "what the smoke suite sends the handler and expects back"),
        "needs_torch": Key(
            {"type": "boolean"}, "false for images that use no torch from their base", default=True
        ),
        "kernels": Key(
            {"type": "array", "items": {"anyOf": [{"const": "flash-attention"}, {"$ref": "kernel"}]}},
            "Hub kernels the build bakes; flash-attention: the FlashAttention each GPU target runs",
        ),
        "deploy": Key({"$ref": "deploy"}, "the RunPod deployment: container disk"),
        "torch": _string(
            "the torch wheel the image installs itself (2.11.0+cu130), checked against the base's CUDA; "
            "default: the base's",
            grammar=VERSION,
        ),
        "secrets": Key(
            {"type": "array", "items": {"type": "string", "pattern": SECRET_NAME_PATTERN}},
            "the secrets it needs, by name: each a BuildKit secret of the bake target (id=<name>,env=<name>; "
            "RUN --mount=type=secret,id=<name>), a RunPod secret at run time; the image never holds it",
        ),
    },
    "model": {
        "name": _string("the model's name", True, HUB_ID),
        "source": Key({"enum": list(MODEL_SOURCES)}, "baked into the image, or on a network volume", True),
        "size_gb": Key({"type": "number"}, "the weights' size in GB", True),
        "volume_path": _string(
            "where the network volume holds it (/runpod-volume/...)", grammar=ABSOLUTE_PATH
        ),
        "files": _string(
            "baked: its files in the image, a path pattern (fnmatch: * spans /), measured after the build",
            grammar=PATH_PATTERN,
        ),
    },
    "kernel": {
        "name": _string("the kernel's name in the image", True, NAME_GRAMMAR),
        "repo_id": _string("the Hub repository (org/name)", True, HUB_ID),
        "revision": _string("branch, tag or commit; matrix.lock records the commit", True, REVISION),
        "function": Key(
            {"type": "string", "pattern": IDENTIFIER.pattern},
            "the attention function",
            grammar=IDENTIFIER,
            default="flash_attn_func",
        ),
        "archs": _strings("GPU archs it runs on; empty: any device"),
    },
    "deploy": {
        "container_disk_gb": _integer(
            "the container disk to ask RunPod for; refused when the built image does not fit; absent: "
            "sized from the built image",
            minimum=1,
        ),
        "download_headroom_gb": _number(
            "disk the worker fills at run time (downloads, caches)", 0.0, minimum=0
        ),
        "workers_min": _integer("serverless: workers kept warm", 0, minimum=0),
        "workers_max": _integer("serverless: the most workers", 3, minimum=0),
        "idle_timeout_s": _integer(
            "serverless: seconds an idle worker waits for work before it stops", 5, minimum=1, maximum=3600
        ),
        "queue_delay_s": _number(
            "serverless: add a worker when a job has waited this long", 4.0, "RunPod's floor", minimum=0.5
        ),
        "gpu_count": _integer("GPUs per worker or pod", 1, minimum=1),
        "network_volume": _string(
            "a RunPod network volume id, mounted where the model's volume_path is", grammar=LABEL_WORD
        ),
        "ports": _strings("pods: exposed ports as port/protocol (default 8888/http and 22/tcp)"),
        "env": _names_to_strings("plain environment settings; secrets are named under the image's secrets:"),
    },
    "smoke": {
        "input": Key({"type": "object"}, "the job input the handler gets", True),
        "output_shape": Key(
            {"type": "array", "items": {"type": "integer"}},
            "embeddings: the output's shape; image: width and height",
        ),
        "output": Key(
            {"enum": list(OUTPUT_KINDS)}, "what the worker answers: how smoke judges it", default="embeddings"
        ),
        "model_dir": _string(
            "volume models: a small model in the image that smoke copies onto a volume at volume_path",
            grammar=ABSOLUTE_PATH,
        ),
        "requires_gpu": Key(
            {"type": "boolean"}, "the worker cannot serve on a CPU: there, smoke reports where it stopped"
        ),
        "imports": _strings(
            "modules the image must import, checked on any device (model.imports)", grammar=MODULE
        ),
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
        "tier3_registries": Key(
            {"type": "array", "items": {"type": "string"}},
            "where Tier-3 bases may live",
            default=("ghcr.io",),
        ),
        "max_baked_model_gb": _number("bigger models go on a network volume", 10.0, minimum=0),
        "model_loaders": _strings("calls that load a model (the handler check)"),
        "model_servers": _strings(
            "commands of server processes that load a model (vllm serve): started at module level, a load"
        ),
    },
}


def required_keys(section: str) -> tuple[str, ...]:
    return tuple(k for k, key in SECTIONS[section].items() if key.required)


def optional_keys(section: str) -> tuple[str, ...]:
    return tuple(k for k, key in SECTIONS[section].items() if not key.required)


def default(section: str, name: str) -> Any:
    """The declared default of `section`'s key `name` (model.py's dataclass defaults read these)."""
    return SECTIONS[section][name].default
