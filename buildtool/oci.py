"""A built image as the build stage holds it before the push: the image manifest, config and layer
descriptors of an OCI image layout (what `docker buildx` wrote to build/oci/<variant>/)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Layer:
    digest: str
    size: int  # compressed bytes: what a pull downloads
    media_type: str


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
    layers = tuple(
        Layer(str(d["digest"]), int(d.get("size", 0)), str(d.get("mediaType", "")))
        for d in manifest.get("layers", [])
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
