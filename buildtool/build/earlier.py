"""A re-run of a commit the registry already holds: the immutable tag's image, read back from the
registry and recognised by its labels, stands for the build (nothing is built or pushed)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from buildtool.build.engine import Engine
from buildtool.build.oci import SIZES_FILE, cached_unpacked_size, image_from
from buildtool.build.result import BuildEvent, VariantResult
from buildtool.errors import RegistryError
from buildtool.registry.client import Registry, RemoteManifest, compressed_size
from buildtool.render.dockerfiles import LABEL_PREFIX
from buildtool.render.output import RenderedVariant

REVISION_LABEL = "org.opencontainers.image.revision"
CREATED_LABEL = "org.opencontainers.image.created"  # the commit's time
VARIANT_LABEL = f"{LABEL_PREFIX}.variant"


def built_earlier(
    v: RenderedVariant,
    revision: str,
    existing: RemoteManifest,
    registry: Registry,
    log: Path,
    emit: Callable[[BuildEvent], None],
    cache_dir: Path,
    engine: Engine,
) -> VariantResult | None:
    """The registry holds this commit's immutable tag, and the image's labels say it is this
    variant built from this commit: a re-run builds nothing. Anything else under the tag (None) is
    built and compared, and refused if it differs."""
    try:
        config = existing.document.get("config")
        if not isinstance(config, dict):
            return None
        document = json.loads(registry.blob(v.tags.repository, str(config["digest"])))
        labels = (document.get("config") or {}).get("Labels") or {}
        size = compressed_size(registry, v.tags.repository, existing)
    except (RegistryError, ValueError, KeyError, AttributeError):
        return None  # not verifiable: build it, and compare
    if labels.get(REVISION_LABEL) != revision or labels.get(VARIANT_LABEL) != v.name:
        return None
    created = labels.get(CREATED_LABEL) or None
    remote = image_from(v.name, existing.digest, existing.document, document)
    split = remote.above(engine.image_layers(v.base_ref))
    emit(BuildEvent(v.name, "built-earlier", existing.digest))
    return VariantResult(
        v.name,
        "built-earlier",
        v.tags.immutable,
        v.tags.moving,
        v.base_ref,
        None,
        digest=existing.digest,
        compressed_size=size,
        # Known when this machine measured the layers before; else deploy-spec measures it.
        unpacked_size=cached_unpacked_size(cache_dir / SIZES_FILE, existing.document.get("layers")),
        layers=len(remote.layers),
        base_layers=split[0] if split else None,
        above_base_size=split[1] if split else None,
        log=log,
        created=created,
    )
