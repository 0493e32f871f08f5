"""The build stage: bake each rendered variant, push its immutable tag, verify, then move tags.

Per variant, in parallel (each its own `buildx bake <target>`, so one failure stops no other):
  1. the registry already holds the immutable tag (a re-run of the same commit): nothing is built,
     the variant is reported as built earlier (--rebuild builds anyway, and the digest must match)
  2. the tag is absent: BuildKit builds it into the engine's image store, with the registry cache
     (cache-from/cache-to, mode=max; an export the registry refuses is a warning, not a failure);
     the base resolves to a digest (--locked: matrix.lock's). The rules over its config (ENV,
     labels, build args: policy.image.CONFIG_RULES) read it there: a token is refused before
     anything of the image leaves the engine. Then the engine pushes it: only the layers the
     registry lacks go, and a layer known only from the registry cache is neither downloaded nor
     sent. The tag is present (--rebuild, --cold): BuildKit only computes the digest, which must be
     the tag's (an immutable tag is never overwritten)
  3. verify that the registry's digest is the one BuildKit reported (--metadata-file)
  4. the other image rules read the pushed image back from the registry (its layers only where a
     rule reads files or sizes, once per layer digest on a machine): a refusal keeps the moving tags
     where they were (status refused; the CLI exits 2), and a re-run refuses it again, until a
     moving tag points to it (tags move only to an image that passed)
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
from buildtool.build.oci import OciImage, registry_image
from buildtool.build.result import BuildEvent, BuildResult, Status, VariantResult, manifest_document
from buildtool.config.lock import read_lock
from buildtool.config.options import Options
from buildtool.errors import Finding, Problem, RegistryDenied, RegistryError
from buildtool.files import write_atomically
from buildtool.policy.image import CONFIG_RULES
from buildtool.registry.client import Registry, RemoteManifest
from buildtool.render.output import COMPARE_OUTPUT, RenderedVariant, Rendering

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
    push: bool,
) -> _Baked:
    """Bake the variant, pushing its immutable tag (`push`) or only computing its digest: the base
    pulled through the engine when BuildKit cannot resolve it, FROM matrix.lock's digest with
    --locked, no cache read with --cold."""
    # A cold build meets what a new user's first build meets: every step runs (an install that
    # stopped working is found), and the registry cache is written but not read.
    overrides: dict[str, str] = {"no-cache": "true", "cache-from": ""} if options.cold else {}
    if not push:
        overrides["output"] = COMPARE_OUTPUT
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


def _verified(v: RenderedVariant, rendering: Rendering, digest: str, registry: Registry) -> RemoteManifest:
    """The registry's manifest under the immutable tag, which must be the digest BuildKit reported."""
    emit_failure = f"registry {rendering.registry} is unreachable"
    try:
        remote = registry.manifest(v.tags.immutable)
    except RegistryError as exc:
        raise _VariantFailed(f"{emit_failure}: {exc}") from None
    if remote is None or remote.digest != digest:
        raise _VariantFailed(
            f"after the push the registry has {remote.digest if remote else 'nothing'} "
            f"for {v.tags.immutable}, but BuildKit reported {digest}",
            "another build pushed the same tag at the same time, or the registry rewrote the "
            "manifest: build again, and compare with buildtool build --check-reproducible",
        )
    return remote


def _refuse_overwrite(v: RenderedVariant, existing: RemoteManifest, digest: str) -> _VariantFailed:
    return _VariantFailed(
        f"the immutable tag {v.tags.immutable} already holds {existing.digest}, and this build "
        f"produced {digest}: refusing to overwrite it",
        "find what differs with buildtool build --check-reproducible; if the tag was pushed in "
        "error, delete it in the registry",
    )


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
        existing = _existing(v, rendering, registry)
        if existing is not None and not rendering.revision.dirty and not (options.rebuild or options.cold):
            earlier = built_earlier(
                v, rendering.revision.sha, existing, registry, log, emit, options.cache_dir, engine
            )
            if earlier is not None:
                return _checked_earlier(earlier, v, existing, registry, options, engine, check_image, emit)
        # A tag that exists is compared, never pushed over (a -dirty tag may be: it names no commit).
        push = existing is None or rendering.revision.dirty
        status: Status = "pushed" if push else "unchanged"
        pushed_bytes = 0
        baked = _bake(v, rendering, options, lock, engine, emit, log, push)
        notes = baked.notes  # a failure from here on reports these, and the image rules' warnings
        if not push:
            assert existing is not None
            if existing.digest != baked.digest:
                raise _refuse_overwrite(v, existing, baked.digest)
            remote = existing
        else:
            if check_image is not None:  # before anything leaves the engine: a token is never pushed
                emit(BuildEvent(v.name, "checking", baked.digest))
                refused, notes = _config_rules(v, baked.digest, engine, check_image, notes)
                if refused:
                    emit(BuildEvent(v.name, "refused", refused[0].message))
                    result = failed(refused[0].message, refused[0].hint, baked.base_digest, notes)
                    return replace(result, status="refused", problem=refused[0], refusals=refused)
            pushed_bytes = _push(v, rendering, baked.digest, engine, emit)
            emit(BuildEvent(v.name, "verifying", v.tags.immutable))
            remote = _verified(v, rendering, baked.digest, registry)
        try:
            built = registry_image(registry, v.tags.repository, remote, v.name, options.cache_dir)
        except (RegistryError, ValueError, KeyError) as exc:
            raise _VariantFailed(
                f"cannot read the built image {baked.digest} back from the registry: {exc}"
            ) from None
        split = built.above(engine.image_layers(v.base_ref))
        built = replace(built, base_layers=split[0]) if split else built
        if check_image is not None and not (status == "unchanged" and _vouched(v, remote.digest, registry)):
            emit(BuildEvent(v.name, "checking", baked.digest))
            refused, notes = _image_rules(built, check_image, notes, after_push=push)
            if refused:
                emit(BuildEvent(v.name, "refused", refused[0].message))
                result = failed(refused[0].message, refused[0].hint, baked.base_digest, notes)
                return replace(
                    result, status="refused", problem=refused[0], refusals=refused, digest=baked.digest
                )
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
            compressed_size=built.compressed_size,
            unpacked_size=built.known_unpacked_size,
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


def _image_rules(
    image: OciImage, check_image: ImageCheck, notes: tuple[str, ...], after_push: bool = False
) -> tuple[tuple[Problem, ...], tuple[str, ...]]:
    """The image-scope policy on the registry's image: (refusals, notes with the warnings added).
    `after_push`: the config's rules ran before the push (_config_rules), and are not run again."""
    try:
        findings = [f for f in check_image(image) if not (after_push and f.rule in CONFIG_RULES)]
    except (RegistryError, OSError, ValueError) as exc:  # a layer a rule reads did not come
        raise _VariantFailed(
            f"cannot read the pushed image {image.digest} for the image rules: {exc}"
        ) from None
    refusals = tuple(f.problem for f in findings if f.severity == "error")
    notes += tuple(f"{f.rule}: {f.problem.message}" for f in findings if f.severity == "warning")
    return refusals, notes


def _config_rules(
    v: RenderedVariant, digest: str, engine: Engine, check_image: ImageCheck, notes: tuple[str, ...]
) -> tuple[tuple[Problem, ...], tuple[str, ...]]:
    """The rules over the config (CONFIG_RULES), on the image in the engine's store."""
    stored = engine.image_config(v.tags.immutable)
    if stored is None:
        raise _VariantFailed(
            f"the engine's image store has no {v.tags.immutable} after the build",
            "the build must store its image (docker driver with the containerd image store, or a "
            "builder that loads into the engine)",
        )
    config = {"Env": list(stored.env), "Labels": dict(stored.labels)}
    image = OciImage(v.name, digest, config, stored.history, (), 0)
    findings = [f for f in check_image(image) if f.rule in CONFIG_RULES]
    notes += tuple(f"{f.rule}: {f.problem.message}" for f in findings if f.severity == "warning")
    return tuple(f.problem for f in findings if f.severity == "error"), notes


def _push(
    v: RenderedVariant, rendering: Rendering, digest: str, engine: Engine, emit: Callable[[BuildEvent], None]
) -> int:
    """The engine pushes the stored image: the layers the registry lacks, then the manifest; the
    bytes it sent."""
    emit(BuildEvent(v.name, "pushing", v.tags.immutable))
    meter = _PushMeter(lambda detail: emit(BuildEvent(v.name, "pushing", detail)))
    pushed = engine.push(v.tags.immutable, meter.sent)
    if pushed.error is not None:
        lowered = pushed.error.lower()
        denied = any(w in lowered for w in ("denied", "unauthorized", "authentication required", "401"))
        raise _VariantFailed(
            f"push of {v.tags.immutable} failed: {pushed.error}",
            f"run docker login {rendering.registry.split('/')[0]}"
            if denied
            else "check that the registry is up, or point --registry / $REGISTRY at one",
        )
    if pushed.digest != digest:
        raise _VariantFailed(
            f"the engine pushed {pushed.digest} for {v.tags.immutable}, but BuildKit built {digest}",
            "build again; if it persists, compare with buildtool build --check-reproducible",
        )
    return pushed.sent


class _PushMeter:
    """Bytes sent of bytes to send, and the rate, told at most once a second while a push runs
    (several GB of a base's layers take minutes)."""

    def __init__(self, tell: Callable[[str], None], every: float = 1.0) -> None:
        self.tell, self.every = tell, every
        self.started, self.told = time.monotonic(), 0.0

    def sent(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self.told >= self.every:
            self.told = now
            rate = done / max(now - self.started, 1e-3)
            self.tell(f"{_bytes(done)} of {_bytes(total)} sent, {_bytes(rate)}/s")


def _bytes(count: float) -> str:
    return f"{count / 1e9:.2f} GB" if count >= 1e9 else f"{count / 1e6:.1f} MB"


def _vouched(v: RenderedVariant, digest: str, registry: Registry) -> bool:
    """Whether a moving tag of the variant points to `digest`: tags move only to an image that passed
    the image rules, and the rules of a commit are the commit's (matrix.yaml), so it passed them.
    Else (refused, a run stopped before its tags moved, tags moved on since) the rules run again."""
    for tag in v.tags.moving:
        try:
            current = registry.manifest(tag)
        except RegistryError:
            return False
        if current is not None and current.digest == digest:
            return True
    return False


def _checked_earlier(
    earlier: VariantResult,
    v: RenderedVariant,
    existing: RemoteManifest,
    registry: Registry,
    options: Options,
    engine: Engine,
    check_image: ImageCheck | None,
    emit: Callable[[BuildEvent], None],
) -> VariantResult:
    """A re-run of a built commit applies the image rules again: an image refused when it was pushed
    (its immutable tag stays; nothing moved to it) is refused again, not passed as built earlier."""
    if check_image is None or _vouched(v, existing.digest, registry):
        return earlier
    try:
        image = registry_image(registry, v.tags.repository, existing, v.name, options.cache_dir)
    except (RegistryError, ValueError, KeyError):
        return earlier  # not readable as an image: built_earlier read it, so this does not happen
    split = image.above(engine.image_layers(v.base_ref))
    image = replace(image, base_layers=split[0]) if split else image
    try:
        refused, notes = _image_rules(image, check_image, earlier.notes)
    except _VariantFailed as exc:
        problem = Problem(str(exc), variant=v.name, hint=exc.hint)
        return replace(earlier, status="failed", problem=problem)
    if refused:
        emit(BuildEvent(v.name, "refused", refused[0].message))
        return replace(earlier, status="refused", problem=refused[0], refusals=refused, notes=notes)
    return replace(earlier, notes=notes, unpacked_size=earlier.unpacked_size or image.known_unpacked_size)


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
    """Every variant of `rendering`; `check_image` (the image-scope policy) runs on each built image:
    its config's rules before the push, the others before any moving tag moves to it."""
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
