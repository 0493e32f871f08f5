"""Rules over a built image, read back from the registry it was pushed to and before any moving tag
moves to it: what the image really is (its config, history, layers), not what its Dockerfile says it
should be."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol

from buildtool.errors import Finding, Location
from buildtool.policy.registry import Context, RuleOption, error, rule, warning
from buildtool.policy.secrets import HINT, looks_secret, redacted


class BuiltLayer(Protocol):
    @property
    def size(self) -> int: ...


class BuiltImage(Protocol):
    """What the image rules read of a built image: the build stage's OCI image is one (build/oci.py);
    the policy package sits below the build and does not import it."""

    @property
    def env(self) -> dict[str, str]: ...
    @property
    def labels(self) -> dict[str, str]: ...
    @property
    def history(self) -> Sequence[Mapping[str, Any]]: ...
    @property
    def layers(self) -> Sequence[BuiltLayer]: ...
    @property
    def files_readable(self) -> bool: ...
    @property
    def compressed_size(self) -> int: ...
    @property
    def unpacked_size(self) -> int | None: ...
    def files_matching(self, pattern: str) -> dict[str, int]: ...


# The image rules that read only the config (ENV, labels, history): they run before the image leaves
# the engine, so that a token it holds is never pushed. The others read layers, once it is pushed.
CONFIG_RULES = frozenset({"image-secrets"})

# A build arg as BuildKit records it in a RUN step's history: `RUN |2 A=x B=y /bin/sh -c ...`.
HISTORY_ARG = re.compile(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_]*)=(\S+)")


@rule("image-secrets", "image", "a token in ENV, a label or a build arg ships to everyone who pulls")
def image_secrets(image: BuiltImage, context: Context) -> Iterator[Finding]:
    """Secret-looking values in the image's config (ENV, labels) and history (build args recorded in
    RUN steps): pass them as RunPod secrets at run time, or BuildKit secret mounts at build time."""
    where = Location(context.matrix.path)
    places = [(f"ENV {k}", k, v) for k, v in image.env.items()]
    places += [(f"LABEL {k}", k, v) for k, v in image.labels.items()]
    for step, entry in enumerate(image.history, start=1):
        created_by = str(entry.get("created_by", ""))
        if created_by.startswith("RUN |"):
            places += [
                (f"build arg {k} (history step {step})", k, v) for k, v in HISTORY_ARG.findall(created_by)
            ]
        places += [(f"history step {step}", "", created_by)]
    reported: set[str] = set()
    for place, name, value in places:
        for kind, secret in looks_secret(name, value):
            if secret not in reported:
                reported.add(secret)
                yield error(f"the built image holds {kind} in {place}: {redacted(secret)}", where, HINT)


@rule(
    "image-size",
    "image",
    "every GB is pulled by every cold worker: big images start slowly, and fill the container disk",
    {"max_image_gb": RuleOption(float, None, "the largest compressed image to push, in GB (1e9 bytes)")},
)
def image_size(image: BuiltImage, context: Context) -> Iterator[Finding]:
    limit = context.option("max_image_gb")
    if limit is not None and image.compressed_size > limit * 1e9:
        biggest = max(image.layers, key=lambda layer: layer.size, default=None)
        yield error(
            f"the built image is {image.compressed_size / 1e9:.2f} GB compressed, over policy.max_image_gb "
            f"({limit:g} GB)" + (f"; its largest layer is {biggest.size / 1e9:.2f} GB" if biggest else ""),
            Location(context.matrix.path),
            "move model weights to a network volume, drop build tools from the final stage, or raise "
            "policy.max_image_gb",
        )


@rule(
    "baked-model-size",
    "image",
    "baked weights over the limit make every cold pull crawl; a declared size_gb can be wrong",
)
def baked_model_size(image: BuiltImage, context: Context) -> Iterator[Finding]:
    """The baked model's files as the built image holds them (model.files), against
    policy.max_baked_model_gb: the measured size, not only the declared one."""
    model = context.variant.image.model if context.variant else None
    if model is None or model.source != "baked" or model.files is None or not image.files_readable:
        return
    files = image.files_matching(model.files)
    if not files:
        yield error(
            f"model.files '{model.files}' matches no file in the built image's own layers",
            model.location,
            "give the pattern of the weights' paths in the image, e.g. '*-packages/<package>/*' "
            "(fnmatch: * spans /)",
        )
        return
    measured, limit = sum(files.values()), context.matrix.policy.max_baked_model_gb
    if measured > limit * 1e9:
        yield error(
            f"model '{model.name}' is {_size(measured)} in the built image ({len(files)} files; "
            f"size_gb says {model.size_gb:g}), over the {limit:g} GB limit for baked weights",
            model.location,
            "set source: volume and volume_path: /runpod-volume/models/<name>",
        )
    elif measured > 2 * model.size_gb * 1e9:
        yield warning(
            f"model '{model.name}' is {_size(measured)} in the built image, but size_gb says "
            f"{model.size_gb:g}",
            model.location,
            f"set size_gb: {math.ceil(measured / 1e6) / 1000:g}",
        )


def _size(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


@rule(
    "container-disk",
    "image",
    "a container disk smaller than the unpacked image (plus what the worker downloads) crash-loops the "
    "pod (seeds: the 20 GB default)",
    {"container_disk_margin": RuleOption(float, 0.2, "spare room on the container disk, as a fraction")},
)
def container_disk(image: BuiltImage, context: Context) -> Iterator[Finding]:
    """The declared container disk must hold the unpacked image, the declared download headroom
    and the margin (the image's own unpacked size, measured from its layers)."""
    deploy = context.variant.image.deploy if context.variant else None
    unpacked = image.unpacked_size
    if deploy is None or deploy.container_disk_gb is None or unpacked is None:
        return
    required = deploy.required_disk_gb(unpacked, context.option("container_disk_margin"))
    if deploy.container_disk_gb < required:
        yield error(
            f"container_disk_gb {deploy.container_disk_gb} cannot hold this image: it unpacks to "
            f"{unpacked / 1e9:.2f} GB, plus {deploy.download_headroom_gb:g} GB of download headroom and a "
            f"{context.option('container_disk_margin'):.0%} margin needs {required} GB",
            deploy.location,
            f"set container_disk_gb: {required} (or leave it out: the deploy spec then asks for {required})",
        )
