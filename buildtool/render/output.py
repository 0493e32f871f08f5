"""What the render stage produces, and how it lands on disk: the rendered files per variant, the
buildx bake file (plain JSON: targets, tags, cache, args), and the atomic write of both."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from buildtool.naming import Revision, VariantTags

PLATFORM = "linux/amd64"  # RunPod GPUs are x86-64 hosts


# SOURCE_DATE_EPOCH for every build, and the time of every file the image's own layers hold: the
# context's files (build_dir.py) and what each RUN writes (the templates' reproducible_shell). A
# constant, not the commit time: BuildKit's cache keys leave the epoch out, so a layer cached from an
# earlier commit would keep that commit's times. 1980-01-01, the earliest time a zip (a wheel) can
# hold. The commit time goes into a label.
REPRODUCIBLE_EPOCH = 315532800

# The image, into the engine's image store under its immutable tag: its config is checked there, then
# the engine pushes the layers the registry lacks (a layer known only from the registry cache, in the
# same repository, is neither downloaded nor sent). OCI media types, as an OCI layout would hold.
STORE_OUTPUT = "type=image,oci-mediatypes=true"
# The same image, its digest computed and nothing stored or pushed: a rebuild compared with the tag.
COMPARE_OUTPUT = "type=image,push=false,store=false,oci-mediatypes=true"


@dataclass(frozen=True)
class RenderedFile:
    path: str  # relative to the build directory, '/'-separated
    content: bytes
    executable: bool = False


@dataclass(frozen=True)
class RenderedVariant:
    name: str
    image: str
    base_ref: str
    dockerfile: str
    build_args: tuple[tuple[str, str], ...]
    labels: tuple[tuple[str, str], ...]  # OCI labels passed by bake (commit-dependent)
    tags: VariantTags
    files: tuple[RenderedFile, ...]  # each under `context`
    context: str  # the directory of its build context, in the build directory (context_directory)
    bakes_kernels: bool = False
    secrets: tuple[str, ...] = ()  # build-time secrets, each from the environment variable of its name


class ContentHashes:
    """sha256 of each content object, computed once: the variants of a template share its files'
    contents, and every variant shares smoke/'s."""

    def __init__(self) -> None:
        self._seen: dict[int, tuple[bytes, bytes]] = {}  # id -> (the object, kept alive; its hash)

    def __call__(self, content: bytes) -> bytes:
        seen = self._seen.get(id(content))
        if seen is None:
            seen = self._seen[id(content)] = (content, hashlib.sha256(content).digest())
        return seen[1]


ContextFile = tuple[str, bytes, bool]  # a file of a variant's context: its path in it, content, executable


def context_directory(variant: str, files: Sequence[ContextFile], hashes: ContentHashes) -> str:
    """The directory a variant's context is written to: its name and a hash of its files (in the
    order render lists them: the Dockerfile, then each directory's files sorted). buildx keys
    BuildKit's copy of a local context by the directory's base name alone, and BuildKit's
    incremental transfer gives a directory whose files changed since the last transfer under that
    key the time of the transfer, which `COPY app/ /app/` puts into the layer (measured on BuildKit
    0.13): the same commit then built another digest on an engine that had built the variant
    before. One name per content: every transfer under a name is its first, or changes nothing."""
    parts: list[bytes] = []
    for path, content, executable in files:
        parts += (path.encode(), b"\0\1\0" if executable else b"\0\0\0", hashes(content))
    return f"{variant}.{hashlib.sha256(b''.join(parts)).hexdigest()[:12]}"


@dataclass(frozen=True)
class Rendering:
    variants: tuple[RenderedVariant, ...]
    bake: str  # docker-bake.json text
    revision: Revision
    registry: str

    def files(self) -> list[RenderedFile]:
        out = [f for v in self.variants for f in v.files]
        out.append(RenderedFile("docker-bake.json", self.bake.encode()))
        return out


# Amazon ECR refuses BuildKit's default cache manifest (an OCI index) with 400 on its PUT and takes
# the cache as an image manifest (BuildKit 0.12+). Elsewhere the default stays: registries that
# refused the image-manifest form (moby/buildkit#2251) take the index.
_ECR_HOST = re.compile(r"(\d{12}\.dkr\.ecr(-fips)?\.[a-z0-9-]+\.amazonaws\.com(\.cn)?|public\.ecr\.aws)")


def cache_export(cache_ref: str, manifest: str = "auto") -> str:
    """BuildKit's cache-to for a variant's registry cache. `manifest` (matrix.yaml's cache_manifest):
    "image-manifest", "index", or "auto" (by the registry's host). ignore-error: a cache only saves
    time, and parallel builds that commit shared layers at once can lose a race for it."""
    if manifest == "auto":
        manifest = "image-manifest" if _ECR_HOST.fullmatch(cache_ref.split("/")[0]) else "index"
    form = ",image-manifest=true,oci-mediatypes=true" if manifest == "image-manifest" else ""
    return f"type=registry,ref={cache_ref},mode=max{form},ignore-error=true"


def bake_file(
    variants: list[RenderedVariant],
    revision: Revision,
    kernels_local: Path | None = None,
    cache_manifest: str = "auto",
) -> str:
    """A docker buildx bake JSON file. Paths are relative to the build directory: run bake there.

    A rebuild of the same commit produces the same digest, which is what lets an immutable tag be
    checked, not overwritten: every file time in the image's own layers is REPRODUCIBLE_EPOCH (the
    context's, and what the templates' RUN steps write), SOURCE_DATE_EPOCH sets the config's times,
    and the provenance attestation (which records build times) is off. Each target stores its
    image under the immutable tag in the engine (STORE_OUTPUT); the build stage checks, pushes and
    verifies it, and moves the tags.
    """
    targets = {}
    for v in variants:
        targets[v.name] = {
            "context": v.context,
            "dockerfile": "Dockerfile",
            "args": {**dict(v.build_args), "SOURCE_DATE_EPOCH": str(REPRODUCIBLE_EPOCH)},
            "attest": ["type=provenance,disabled=true"],
            "labels": dict(v.labels),
            "tags": [v.tags.immutable],
            "output": [STORE_OUTPUT],
            "cache-from": [f"type=registry,ref={v.tags.cache}"],
            "cache-to": [cache_export(v.tags.cache, cache_manifest)],
            "platforms": [PLATFORM],
        }
        if v.secrets:  # RUN --mount=type=secret,id=NAME reads them; the image never holds them
            targets[v.name]["secret"] = [f"id={name},env={name}" for name in v.secrets]
        if kernels_local is not None and v.bakes_kernels:
            targets[v.name]["contexts"] = {"kernels-local": str(kernels_local.resolve())}
    bake = {"group": {"default": {"targets": [v.name for v in variants]}}, "target": targets}
    return json.dumps(bake, indent=2, sort_keys=True) + "\n"
