"""A built image as the build stage holds it before the push: the image manifest, config and layer
descriptors of an OCI image layout (what `docker buildx` wrote to build/oci/<variant>/)."""

from __future__ import annotations

import gzip
import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from buildtool.files import write_atomically


@dataclass(frozen=True)
class Layer:
    digest: str
    size: int  # compressed bytes: what a pull downloads
    media_type: str
    unpacked: int | None = None  # bytes of the layer's tar once decompressed; None: not known


GZIP_TYPES = (
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
)
TAR_TYPES = ("application/vnd.oci.image.layer.v1.tar", "application/vnd.docker.image.rootfs.diff.tar")
SIZES_FILE = "unpacked-sizes.json"  # beside the layouts: blob digest -> unpacked bytes (content-addressed)


def unpacked_size(path: Path, media_type: str) -> int | None:
    """The bytes of a layer once decompressed, by decompressing it (gzip's own size field holds only
    the size modulo 4 GiB, and CUDA layers are bigger); None for a compression it cannot read."""
    if media_type in TAR_TYPES:
        return path.stat().st_size
    if media_type not in GZIP_TYPES:
        return None
    total = 0
    with gzip.open(path, "rb") as stream:
        while chunk := stream.read(1 << 20):
            total += len(chunk)
    return total


def unpacked_sizes(layout: Path, layers: list[dict[str, Any]]) -> dict[str, int | None]:
    """Each layer's unpacked size, remembered beside the layouts: a base's layers are measured once."""
    cache_path = layout.parent / SIZES_FILE
    try:
        cache: dict[str, int] = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
    except ValueError:
        cache = {}
    sizes: dict[str, int | None] = {}
    for d in layers:
        digest = str(d["digest"])
        if digest not in cache:
            measured = unpacked_size(blob_path(layout, digest), str(d.get("mediaType", "")))
            if measured is not None:
                cache[digest] = measured
        sizes[digest] = cache.get(digest)
    write_atomically(cache_path, json.dumps(cache, sort_keys=True) + "\n")
    return sizes


@dataclass(frozen=True)
class OciImage:
    variant: str
    digest: str  # of the image manifest
    config: Mapping[str, Any]  # the image config's `config`: Env, Labels, User, Entrypoint, ...
    history: tuple[Mapping[str, Any], ...]  # the image config's `history`: one entry per step
    layers: tuple[Layer, ...]
    config_size: int

    @property
    def compressed_size(self) -> int:
        """Bytes a pull downloads: config and layers (the registry's count, registry.compressed_size)."""
        return self.config_size + sum(layer.size for layer in self.layers)

    @property
    def unpacked_size(self) -> int | None:
        """Bytes on the container disk once pulled and unpacked; None if a layer's is not known."""
        sizes = [layer.unpacked for layer in self.layers]
        return None if None in sizes else sum(s or 0 for s in sizes)

    @property
    def env(self) -> dict[str, str]:
        pairs = (str(item).partition("=") for item in self.config.get("Env") or ())
        return {name: value for name, _, value in pairs}

    @property
    def labels(self) -> dict[str, str]:
        return {str(k): str(v) for k, v in (self.config.get("Labels") or {}).items()}


def blob_path(layout: Path, digest: str) -> Path:
    algorithm, _, hexdigest = digest.partition(":")
    return layout / "blobs" / algorithm / hexdigest


def read_image(layout: Path, digest: str, variant: str) -> OciImage:
    """The image manifest `digest` of the layout, with its config. Raises OSError or ValueError
    when the layout does not hold it."""
    manifest = json.loads(blob_path(layout, digest).read_bytes())
    config_descriptor = manifest["config"]
    config = json.loads(blob_path(layout, str(config_descriptor["digest"])).read_bytes())
    descriptors = manifest.get("layers", [])
    unpacked = unpacked_sizes(layout, descriptors)
    layers = tuple(
        Layer(
            str(d["digest"]), int(d.get("size", 0)), str(d.get("mediaType", "")), unpacked[str(d["digest"])]
        )
        for d in descriptors
    )
    return OciImage(
        variant,
        digest,
        config.get("config") or {},
        tuple(config.get("history") or ()),
        layers,
        int(config_descriptor.get("size", 0)),
    )


def prune_layout(layout: Path, digest: str) -> None:
    """Keep, of an OCI layout, the blobs of the image `digest` (the next build of the variant writes
    only the blobs that changed); older images' blobs go."""
    blobs = layout / "blobs" / "sha256"
    manifest_path = blobs / digest.removeprefix("sha256:")
    if not manifest_path.is_file():
        return
    manifest = json.loads(manifest_path.read_bytes())
    keep = {digest} | {str(d["digest"]) for d in [manifest["config"], *manifest.get("layers", [])]}
    index = layout / "index.json"
    if index.is_file():
        keep |= {str(m["digest"]) for m in json.loads(index.read_bytes()).get("manifests", [])}
    for blob in blobs.iterdir():
        if f"sha256:{blob.name}" not in keep:
            if blob.is_dir():
                shutil.rmtree(blob, ignore_errors=True)
            else:
                blob.unlink(missing_ok=True)
