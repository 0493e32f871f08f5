"""What the build stage reports: events while it runs, a result per variant, and build/manifest.json
(the plain record that the smoke, report and release stages and the workflows read)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from buildtool import refs
from buildtool.build.engine import Progress
from buildtool.errors import Problem

MANIFEST_SCHEMA = 1


Phase = Literal[
    "queued",
    "base",
    "building",
    "checking",
    "pushing",
    "verifying",
    "done",
    "unchanged",
    "built-earlier",
    "refused",
    "failed",
]


# pushed: built and pushed; unchanged: built, and the registry already held this digest;
# built-earlier: the registry held the commit's tag, nothing was built; refused: built, and an
# image-scope policy rule refused it (nothing pushed); failed.
Status = Literal["pushed", "unchanged", "built-earlier", "refused", "failed"]


@dataclass(frozen=True)
class BuildEvent:
    variant: str
    phase: Phase
    detail: str = ""
    progress: Progress | None = None


@dataclass(frozen=True)
class VariantResult:
    variant: str
    status: Status
    immutable_tag: str
    moving_tags: tuple[str, ...]
    base_ref: str
    base_digest: str | None
    digest: str | None = None
    compressed_size: int | None = None
    unpacked_size: int | None = None  # on the container disk, measured from the built layers
    layers: int = 0
    base_layers: int | None = None  # how many of its layers are its base's; None: not known
    above_base_size: int | None = None  # compressed bytes a host that holds the base still pulls
    build_seconds: float = 0.0
    steps: int = 0
    cached_steps: int = 0
    problem: Problem | None = None  # why it failed: what, which variant, the fix
    refusals: tuple[Problem, ...] = ()  # refused: every image-scope finding
    log: Path | None = None
    notes: tuple[str, ...] = ()
    created: str | None = None  # built earlier: the image's created label (the commit's time)
    # Bytes the image's push uploaded: the layers the registry lacked (a layer the registry cache's
    # export uploaded first is not counted again).
    pushed_bytes: int = 0

    @property
    def ok(self) -> bool:
        return self.status not in ("failed", "refused")

    @property
    def error(self) -> str | None:
        return self.problem.message if self.problem else None


@dataclass(frozen=True)
class BuildResult:
    revision: str
    dirty: bool
    registry: str
    variants: tuple[VariantResult, ...]
    moved_tags: tuple[str, ...]
    moving_tags_note: str | None  # why moving tags did not move
    manifest_path: Path
    errors: tuple[str, ...] = field(default=())  # run-level failures (moving a tag)

    @property
    def ok(self) -> bool:
        return all(v.ok for v in self.variants) and not self.errors


def manifest_document(result: BuildResult) -> dict[str, object]:
    built = {}
    failed: dict[str, dict[str, object]] = {}
    for r in result.variants:
        if not r.ok:
            failed[r.variant] = {"error": r.error, "log": str(r.log), "status": r.status}
            if r.refusals:
                failed[r.variant]["refused"] = [p.message for p in r.refusals]
            continue
        built[r.variant] = {
            "digest": r.digest,
            "image": str(refs.parse(r.immutable_tag).by_digest(r.digest or "")),
            "status": r.status,
            "tags": {"immutable": r.immutable_tag, "moving": list(r.moving_tags)},
            "base": {"ref": r.base_ref, "digest": r.base_digest},
            "compressed_size": r.compressed_size,
            "unpacked_size": r.unpacked_size,
            "layers": r.layers,
            "base_layers": r.base_layers,
            "above_base_size": r.above_base_size,
            "build_seconds": r.build_seconds,
            "steps": r.steps,
            "cached_steps": r.cached_steps,
            "pushed_bytes": r.pushed_bytes,
            "created": r.created,
            "notes": list(r.notes),  # the warnings the build printed: base drift, a cache not exported
        }
    return {
        "schema": MANIFEST_SCHEMA,
        "revision": result.revision,
        "dirty": result.dirty,
        "registry": result.registry,
        "moving_tags_moved": result.ok and not result.dirty,
        "variants": built,
        "failed": failed,
    }
