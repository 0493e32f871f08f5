"""The build stage: bake each rendered variant, push its immutable tag, verify, then move tags.

Per variant, in parallel (each its own `buildx bake <target>`, so one failure stops no other):
  1. the registry already holds the immutable tag (a re-run of the same commit): nothing is built,
     the variant is reported as built earlier (--rebuild builds anyway, and the digest must match)
  2. build with BuildKit to an OCI layout (build/oci/<variant>/), with the registry cache
     (cache-from/cache-to, mode=max; an export the registry refuses is a warning, not a failure);
     the base resolves to a digest (--locked: matrix.lock's)
  3. the tag is absent: push the layout's blobs the registry lacks, then the manifest; present with
     the same digest: nothing to push; present with another digest: refuse, an immutable tag is
     never overwritten
  4. verify that the registry's digest is the one BuildKit reported (--metadata-file)
Between 2 and 3 the image-scope policy rules read the built image from its layout: a refusal stops
the variant before anything of it is pushed (status refused; the CLI exits 2).
Then, only if every variant got this far, the moving tags move (registry-side copies), and
build/manifest.json is written atomically (matrix.lock is only read: buildtool lock writes it).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from buildtool import refs
from buildtool.build.earlier import built_earlier
from buildtool.build.engine import BakeOutcome, Engine
from buildtool.build.oci import OciImage, link_sibling_blobs, prune_layout, read_image
from buildtool.build.result import BuildEvent, BuildResult, Status, VariantResult, manifest_document
from buildtool.config.lock import read_lock
from buildtool.config.options import Options
from buildtool.errors import Finding, Problem, RegistryDenied, RegistryError
from buildtool.files import write_atomically
from buildtool.registry.client import Registry, RemoteManifest, compressed_size
from buildtool.render.output import RenderedVariant, Rendering, oci_layout

# The image-scope policy, as the build stage sees it: a built image in, refusals out.
ImageCheck = Callable[[OciImage], Sequence[Finding]]  # the image-scope policy


class _VariantFailed(Exception):
    def __init__(
        self,
        message: str,
        hint: str | None = None,
        base_digest: str | None = None,
        notes: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message)
        self.hint = hint
        self.base_digest = base_digest  # when the bake got as far as resolving the base
        self.notes = notes


def _classify_build_error(error: str, registry: str, base_ref: str) -> tuple[str, str | None]:
    lowered = error.lower()
    if "failed to resolve source metadata" in lowered and registry not in error:
        return (
            f"base image {base_ref} is not available: {error}",
            "pull or load it into the engine (../shared/ci/seed-images.sh for the stand-ins)",
        )
    if registry in error and any(
        m in lowered for m in ("connection refused", "dial tcp", "no such host", "eof")
    ):
        return (
            f"registry {registry} is unreachable: {error}",
            "start it, or point --registry / $REGISTRY at one",
        )
    return error, "read the build log"


@dataclass(frozen=True)
class _Baked:
    """What one bake gave: the image's digest and steps, the digest it was built FROM, notes."""

    outcome: BakeOutcome
    digest: str
    base_digest: str | None
    seconds: float
    notes: tuple[str, ...]


def _existing(v: RenderedVariant, rendering: Rendering, registry: Registry) -> RemoteManifest | None:
    """What the registry holds under the immutable tag now (None: nothing)."""
    try:
        return registry.manifest(v.tags.immutable)
    except RegistryDenied as exc:
        raise _VariantFailed(
            f"registry {rendering.registry} refused this client: {exc}",
            f"run docker login {rendering.registry.split('/')[0]} (buildtool reads docker's "
            "credentials: config.json, credsStore, credHelpers)",
        ) from None
    except RegistryError as exc:
        raise _VariantFailed(
            f"registry {rendering.registry} is unreachable: {exc}",
            "start it, or point --registry / $REGISTRY at one",
        ) from None


def _bake(
    v: RenderedVariant,
    rendering: Rendering,
    options: Options,
    lock: Mapping[str, str],
    engine: Engine,
    emit: Callable[[BuildEvent], None],
    log: Path,
) -> _Baked:
    """Bake the variant to its OCI layout: the base pulled through the engine when BuildKit cannot
    resolve it, FROM matrix.lock's digest with --locked, no cache read with --cold."""
    # A cold build meets what a new user's first build meets: every step runs (an install that
    # stopped working is found), and the registry cache is written but not read.
    overrides: dict[str, str] = {"no-cache": "true", "cache-from": ""} if options.cold else {}
    recorded = lock.get(v.base_ref)
    if options.locked:
        if recorded is None:
            raise _VariantFailed(
                f"matrix.lock records no digest for {v.base_ref}",
                "run buildtool lock to record it (and commit matrix.lock)",
            )
        overrides["args.BASE_IMAGE"] = f"{v.base_ref}@{recorded}"

    def bake() -> BakeOutcome:
        return engine.bake(
            options.build_dir / "docker-bake.json",
            v.name,
            overrides,
            log,
            lambda p: emit(BuildEvent(v.name, "building", p.current, p)),
        )

    emit(BuildEvent(v.name, "building", str(log)))
    layout = options.build_dir / oci_layout(v.name)
    layout.parent.mkdir(parents=True, exist_ok=True)  # behind each rendering's oci link (build_dir.py)
    link_sibling_blobs(layout)  # a base another variant exported already is not exported again
    started = time.monotonic()
    outcome = bake()
    if not outcome.ok and engine.local_image_digest(v.base_ref) is None:
        # BuildKit could not resolve the base: pull it through the engine (its credentials, its
        # mirrors), then build again.
        emit(BuildEvent(v.name, "base", f"pulling {v.base_ref}"))
        pull_error = engine.pull(v.base_ref)
        if engine.local_image_digest(v.base_ref) is None:
            raise _VariantFailed(
                f"base image {v.base_ref} is not in the engine and could not be pulled: {pull_error}",
                "check the reference, `docker login`, and the network",
            )
        outcome = bake()
    # The digest BuildKit built FROM; the engine's own record when its step does not say.
    base_digest = outcome.base_digest(v.base_ref) or engine.local_image_digest(v.base_ref)
    seconds = time.monotonic() - started
    notes = []
    if recorded and recorded != base_digest:
        notes.append(
            f"base {v.base_ref} now points to {base_digest}; matrix.lock has {recorded} "
            "(buildtool lock records the new digest; --locked builds from the recorded one)"
        )
    if options.locked:
        base_digest = recorded
    if not outcome.ok or outcome.digest is None:
        message, hint = _classify_build_error(
            outcome.error or "no image digest", rendering.registry, v.base_ref
        )
        raise _VariantFailed(message, f"{hint}: {log}" if hint else str(log), base_digest, tuple(notes))
    if outcome.cache_export_error:  # cache-to has ignore-error=true: a cache only saves time
        notes.append(
            f"the build cache was not exported to {v.tags.cache}: {outcome.cache_export_error} "
            "(the image is built and pushed; the next build cannot reuse this one's layers)"
        )
    return _Baked(outcome, outcome.digest, base_digest, seconds, tuple(notes))


def _push_verified(
    v: RenderedVariant,
    rendering: Rendering,
    existing: RemoteManifest | None,
    digest: str,
    layout: Path,
    registry: Registry,
    emit: Callable[[BuildEvent], None],
) -> tuple[Status, int, RemoteManifest]:
    """Push the layout under the immutable tag unless the registry holds this digest there already
    (another digest there is refused: an immutable tag is never overwritten), then read the tag
    back: (status, bytes pushed, the registry's manifest)."""
    if existing is not None and existing.digest != digest and not rendering.revision.dirty:
        raise _VariantFailed(
            f"the immutable tag {v.tags.immutable} already holds {existing.digest}, and this build "
            f"produced {digest}: refusing to overwrite it",
            "find what differs with buildtool build --check-reproducible; if the tag was pushed in "
            "error, delete it in the registry",
        )
    if existing is not None and existing.digest == digest:
        return "unchanged", 0, existing  # the registry's answer already holds this digest
    emit(BuildEvent(v.name, "pushing", v.tags.immutable))
    meter = _PushMeter(lambda detail: emit(BuildEvent(v.name, "pushing", detail)))
    try:
        pushed_bytes = registry.push_layout(layout, digest, v.tags.immutable, meter.sent)
    except RegistryError as exc:
        raise _VariantFailed(
            f"push of {v.tags.immutable} failed: {exc}",
            "check that the registry is up and `docker login` to it",
        ) from None
    emit(BuildEvent(v.name, "verifying", v.tags.immutable))
    try:
        remote = registry.manifest(v.tags.immutable)
    except RegistryError as exc:
        raise _VariantFailed(f"registry {rendering.registry} is unreachable: {exc}") from None
    if remote is None or remote.digest != digest:
        raise _VariantFailed(
            f"after the push the registry has {remote.digest if remote else 'nothing'} "
            f"for {v.tags.immutable}, but BuildKit reported {digest}"
        )
    return "pushed", pushed_bytes, remote


class _PushMeter:
    """Bytes sent and the rate, told at most once a second while a push runs (several GB of a base's
    layers take minutes)."""

    def __init__(self, tell: Callable[[str], None], every: float = 1.0) -> None:
        self.tell, self.every = tell, every
        self.total, self.started, self.told = 0, time.monotonic(), 0.0

    def sent(self, count: int) -> None:
        self.total += count
        now = time.monotonic()
        if now - self.told >= self.every:
            self.told = now
            rate = self.total / max(now - self.started, 1e-3)
            self.tell(f"{_bytes(self.total)} sent, {_bytes(rate)}/s")


def _bytes(count: float) -> str:
    return f"{count / 1e9:.2f} GB" if count >= 1e9 else f"{count / 1e6:.1f} MB"


def _build_one(
    v: RenderedVariant,
    rendering: Rendering,
    options: Options,
    lock: Mapping[str, str],
    engine: Engine,
    registry: Registry,
    emit: Callable[[BuildEvent], None],
    check_image: ImageCheck | None,
) -> VariantResult:
    log = options.build_dir / "logs" / f"{v.name}.log"
    started = time.monotonic()

    def failed(
        message: str, hint: str | None, base_digest: str | None, notes: tuple[str, ...]
    ) -> VariantResult:
        return VariantResult(
            v.name,
            "failed",
            v.tags.immutable,
            v.tags.moving,
            v.base_ref,
            base_digest,
            problem=Problem(message, variant=v.name, hint=hint),
            log=log,
            notes=notes,
            build_seconds=round(time.monotonic() - started, 2),
        )

    baked: _Baked | None = None
    notes: tuple[str, ...] = ()
    try:
        layout = options.build_dir / oci_layout(v.name)
        existing = _existing(v, rendering, registry)
        if existing is not None and not rendering.revision.dirty and not (options.rebuild or options.cold):
            earlier = built_earlier(
                v, rendering.revision.sha, existing, registry, log, emit, options.cache_dir, engine
            )
            if earlier is not None:
                return earlier
        baked = _bake(v, rendering, options, lock, engine, emit, log)
        notes = baked.notes  # a failure from here on reports these, and the image rules' warnings
        emit(BuildEvent(v.name, "checking", baked.digest))
        try:
            built = read_image(layout, baked.digest, v.name, options.cache_dir)
        except (OSError, ValueError, KeyError) as exc:
            raise _VariantFailed(f"cannot read the built image {baked.digest} in {layout}: {exc}") from None
        split = built.above(engine.image_layers(v.base_ref))
        built = replace(built, base_layers=split[0]) if split else built
        if check_image is not None:
            findings = check_image(built)
            refusals = tuple(f.problem for f in findings if f.severity == "error")
            notes += tuple(f"{f.rule}: {f.problem.message}" for f in findings if f.severity == "warning")
            if refusals:
                emit(BuildEvent(v.name, "refused", refusals[0].message))
                refused = failed(refusals[0].message, refusals[0].hint, baked.base_digest, notes)
                return replace(refused, status="refused", problem=refusals[0], refusals=refusals)
        status, pushed_bytes, remote = _push_verified(
            v, rendering, existing, baked.digest, layout, registry, emit
        )
        prune_layout(layout, baked.digest)
        size = compressed_size(registry, v.tags.repository, remote)
        emit(BuildEvent(v.name, "done" if status == "pushed" else "unchanged", baked.digest))
        steps = baked.outcome.dockerfile_steps
        return VariantResult(
            v.name,
            status,
            v.tags.immutable,
            v.tags.moving,
            v.base_ref,
            baked.base_digest,
            digest=baked.digest,
            compressed_size=size,
            unpacked_size=built.unpacked_size,
            layers=len(built.layers),
            base_layers=split[0] if split else None,
            above_base_size=split[1] if split else None,
            build_seconds=round(baked.seconds, 2),
            steps=len(steps),
            cached_steps=sum(s.cached for s in steps),
            log=log,
            notes=notes,
            pushed_bytes=pushed_bytes,
        )
    except _VariantFailed as exc:
        emit(BuildEvent(v.name, "failed", str(exc)))
        if baked is None:
            return failed(str(exc), exc.hint, exc.base_digest, exc.notes)
        return failed(str(exc), exc.hint, baked.base_digest, notes)


def _move_tags(results: tuple[VariantResult, ...], registry: Registry) -> tuple[list[str], list[str]]:
    moved: list[str] = []
    errors: list[str] = []
    for r in results:
        assert r.digest is not None
        source = str(refs.parse(r.immutable_tag).by_digest(r.digest))
        for tag in r.moving_tags:
            try:
                current = registry.manifest(tag)
                if current is None or current.digest != r.digest:
                    registry.copy_tag(source, tag)
                    moved.append(tag)
            except RegistryError as exc:
                errors.append(f"moving {tag} to {r.digest} failed: {exc}")
    return moved, errors


def build(
    rendering: Rendering,
    options: Options,
    engine: Engine,
    registry: Registry,
    on_event: Callable[[BuildEvent], None] = lambda _: None,
    check_image: ImageCheck | None = None,
) -> BuildResult:
    """Every variant of `rendering`; `check_image` (the image-scope policy) runs on each built image
    before its push."""
    lock = read_lock(options.lock_path)
    for v in rendering.variants:
        on_event(BuildEvent(v.name, "queued"))
    with ThreadPoolExecutor(max_workers=max(1, options.jobs)) as pool:
        results = tuple(
            pool.map(
                lambda v: _build_one(v, rendering, options, lock, engine, registry, on_event, check_image),
                rendering.variants,
            )
        )
    failed = [r for r in results if not r.ok]
    moved: list[str] = []
    errors: list[str] = []
    note = None
    if failed:
        note = f"{len(failed)} variant(s) failed: moving tags stay where they were"
    elif rendering.revision.dirty:
        note = "dirty worktree: only -dirty tags were pushed; moving tags stay where they were"
    else:
        moved, errors = _move_tags(results, registry)
    manifest_path = options.build_dir / "manifest.json"
    outcome = BuildResult(
        rendering.revision.sha,
        rendering.revision.dirty,
        rendering.registry,
        results,
        tuple(moved),
        note,
        manifest_path,
        tuple(errors),
    )
    # matrix.lock is the user's (buildtool lock writes it): a build reports drift in its notes and
    # records the digests it used in the manifest, and never touches a tracked file.
    write_atomically(manifest_path, json.dumps(manifest_document(outcome), indent=2, sort_keys=True) + "\n")
    return outcome
