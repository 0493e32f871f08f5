"""The pushed images deploy specs are for, with the unpacked size their container disk is sized
from: build/manifest.json has it for what this machine built; an image built elsewhere is measured
from the registry's layers (each layer once, remembered in the cache directory). And the specs of
what a release promotes."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from buildtool.build.oci import SIZES_FILE, registry_unpacked_size
from buildtool.deploy.specs import DeploySpec, PushedImage, deploy_spec
from buildtool.errors import DeploySpecError, EngineError, Problem, RegistryError
from buildtool.plan import Variant
from buildtool.registry.client import HttpRegistry
from buildtool.release import ReleasePlan


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


def release_specs(
    plan: ReleasePlan,
    variants: dict[str, Variant],
    built: dict[str, PushedImage],
    margin: float,
    client: HttpRegistry,
    cache_dir: Path,
) -> list[DeploySpec]:
    """The deploy spec of each promoted digest, made before any tag moves: a spec that cannot be
    made (a disk too small for the image) refuses the release. `built` is what this machine's
    build/manifest.json says; a digest built elsewhere is measured in the registry."""
    specs: list[DeploySpec] = []
    problems: list[Problem] = []
    for promotion in plan.promotions:
        known = built.get(promotion.variant)
        unpacked = known.unpacked_size if known and known.reference == promotion.source else None
        if unpacked is None:
            unpacked = unpacked_in_registry(client, promotion.source, cache_dir)
        image = PushedImage(promotion.variant, promotion.source, unpacked)
        try:
            specs.append(deploy_spec(variants[promotion.variant], image, margin))
        except DeploySpecError as exc:
            problems += exc.problems
    if problems:
        raise DeploySpecError(problems)
    return specs
