"""Rules over a built image, after the build and before anything is pushed: what the image really
is (its config, history, layers), not what its Dockerfile says it should be."""

from __future__ import annotations

import re
from collections.abc import Iterator

from buildtool import facts
from buildtool.errors import Finding, Location
from buildtool.oci import OciImage
from buildtool.policy.registry import Context, RuleOption, error, rule

SECRET_NAME = re.compile(r"(TOKEN|SECRET|PASSWORD|PASSWD|API_KEY|ACCESS_KEY)", re.IGNORECASE)
# A build arg as BuildKit records it in a RUN step's history: `RUN |2 A=x B=y /bin/sh -c ...`.
HISTORY_ARG = re.compile(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_]*)=(\S+)")


def redacted(value: str) -> str:
    """Enough to find it, never the secret itself."""
    return f"'{value[:4]}...' ({len(value)} characters)"


def secrets_in(text: str) -> Iterator[tuple[str, str]]:
    """(what it looks like, the value) for every secret-looking token in `text`."""
    for kind, pattern in facts.SECRET_PATTERNS:
        for match in re.finditer(pattern, text):
            yield kind, match.group(0)


@rule("image-secrets", "image", "a token in ENV, a label or a build arg ships to everyone who pulls")
def image_secrets(image: OciImage, context: Context) -> Iterator[Finding]:
    """Secret-looking values in the image's config (ENV, labels) and history (build args recorded in
    RUN steps): pass them as RunPod secrets at run time, or BuildKit secret mounts at build time."""
    where = Location(context.matrix.path)
    hint = (
        "pass tokens at run time as RunPod secrets ({{ RUNPOD_SECRET_<name> }}), and at build time "
        "through a BuildKit secret mount (RUN --mount=type=secret), never ENV, LABEL or ARG"
    )
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
        found = list(secrets_in(value))
        if not found and name and SECRET_NAME.search(name) and value and not value.startswith(("$", "{{")):
            found = [(f"a value for {name}", value)]
        for kind, secret in found:
            if secret not in reported:
                reported.add(secret)
                yield error(f"the built image holds {kind} in {place}: {redacted(secret)}", where, hint)


@rule(
    "image-size",
    "image",
    "every GB is pulled by every cold worker: big images start slowly, and fill the container disk",
    {"max_image_gb": RuleOption(float, None, "the largest compressed image to push, in GB (1e9 bytes)")},
)
def image_size(image: OciImage, context: Context) -> Iterator[Finding]:
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
