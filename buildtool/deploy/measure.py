"""The unpacked size of a pushed image, for its deploy spec's container disk: build/manifest.json
has it for what this machine built; an image built elsewhere is measured from the registry's layers
(each layer once, remembered in the cache directory)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from buildtool.build.oci import SIZES_FILE, registry_unpacked_size
from buildtool.deploy.specs import PushedImage
from buildtool.errors import EngineError, Problem, RegistryError
from buildtool.registry.client import HttpRegistry


def unpacked_in_registry(client: HttpRegistry, reference: str, cache_dir: Path) -> int | None:
    """Measured from the registry's layers; a registry that cannot answer is its own error (exit 1),
    not an unknown size."""
    manifest = client.manifest(reference)
    if manifest is None:
        return None
    repository = reference.rpartition("@")[0]
    return registry_unpacked_size(client, repository, manifest, cache_dir / SIZES_FILE)


def measured(image: PushedImage, client: HttpRegistry, cache_dir: Path) -> PushedImage:
    """`image` with its unpacked size, measured in the registry when the manifest had none."""
    if image.unpacked_size is not None:
        return image
    try:
        return replace(image, unpacked_size=unpacked_in_registry(client, image.reference, cache_dir))
    except RegistryError as exc:
        raise EngineError(
            Problem(
                f"cannot measure {image.reference} (build/manifest.json has no unpacked size for it): {exc}",
                variant=image.variant,
                hint="check that the registry is up and `docker login` to it, or run buildtool build "
                "here, which measures the image",
            )
        ) from None
