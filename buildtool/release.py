"""The release stage: promote tested digests to semver tags, without rebuilding.

For `buildtool release vX.Y.Z`, each variant's digest is its immutable `<base>-<sha>` tag for the
tagged commit. A variant is promoted only if smoke results passed for that exact digest; its tags
(`<base>-X.Y.Z`, `<base>-X.Y`, `<base>-X`, and plain `X.Y.Z`, `X.Y`, `X` for the default variant;
a pre-release gets only its own version) are registry-side copies of the manifest. An existing
X.Y.Z that points elsewhere is never moved: the release is refused before any tag moves.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version

from buildtool import refs
from buildtool.errors import ConfigError, Problem, ReleaseRefused
from buildtool.facts import HostFloor, host_floor
from buildtool.naming import Revision, variant_tags
from buildtool.plan import CheckedPlan
from buildtool.registry.client import Registry
from buildtool.report.results import read_results, run_limits


@dataclass(frozen=True)
class Promotion:
    variant: str
    source: str  # <repo>@<digest>
    digest: str
    tags: tuple[str, ...]
    floor: HostFloor


@dataclass(frozen=True)
class Refusal:
    variant: str
    reason: str


@dataclass(frozen=True)
class ReleasePlan:
    version: str
    revision: str
    promotions: tuple[Promotion, ...]
    refusals: tuple[Refusal, ...]


def parse_version(tag: str) -> Version:
    try:
        return Version(tag.removeprefix("v"))
    except InvalidVersion:
        raise ConfigError(
            Problem(f"'{tag}' is not a version", hint="tag releases vX.Y.Z, e.g. v1.4.0")
        ) from None


def version_tags(version: Version) -> tuple[str, ...]:
    """1.4.2 -> ('1.4.2', '1.4', '1'); a pre-release or dev release gets only its own tag."""
    if version.is_prerelease or version.is_devrelease or version.local:
        return (str(version),)
    major, minor, micro = (*version.release, 0, 0)[:3]
    return (f"{major}.{minor}.{micro}", f"{major}.{minor}", f"{major}")


def smoke_verdicts(documents: Iterable[dict[str, Any]]) -> dict[str, list[tuple[bool, tuple[str, ...]]]]:
    """digest -> (passed, what the run left out), for every smoke result that names its image's
    digest. A run limited by --only or cut by --budget passed only what it ran."""
    verdicts: dict[str, list[tuple[bool, tuple[str, ...]]]] = {}
    for document in documents:
        digest = (document.get("image") or {}).get("digest")
        if digest:
            verdicts.setdefault(digest, []).append((bool(document.get("passed")), run_limits(document)))
    return verdicts


def plan_release(
    tag: str,
    revision: Revision,
    checked: CheckedPlan,
    registry_address: str,
    registry: Registry,
    smoke_results: Iterable[Path],
) -> ReleasePlan:
    version = parse_version(tag)
    verdicts = smoke_verdicts(document for _, document in read_results(smoke_results))
    promotions, refusals = [], []
    for cv in checked.variants:
        v = cv
        is_default = cv.name == checked.plan.default_variant
        names = variant_tags(registry_address, v.image.name, v.base.name, revision, is_default)
        manifest = registry.manifest(names.immutable)
        if manifest is None:
            refusals.append(
                Refusal(cv.name, f"{names.immutable} does not exist: not built for {revision.sha[:12]}")
            )
            continue
        results = verdicts.get(manifest.digest, [])
        if not results:
            refusals.append(Refusal(cv.name, f"no smoke result for {manifest.digest}"))
            continue
        if not all(passed for passed, _ in results):
            refusals.append(Refusal(cv.name, f"smoke failed for {manifest.digest}"))
            continue
        if all(limits for _, limits in results):  # every check passed, but not every check ran
            why = "; ".join(results[0][1])
            whole = "run the whole suite: no --only, and a --budget it does not spend"
            refusals.append(Refusal(cv.name, f"smoke ran in part for {manifest.digest} ({why}): {whole}"))
            continue
        versions = version_tags(version)
        tags = [f"{names.repository}:{v.base.name}-{t}" for t in versions]
        if is_default:
            tags += [f"{names.repository}:{t}" for t in versions]
        promotions.append(
            Promotion(
                cv.name,
                f"{names.repository}@{manifest.digest}",
                manifest.digest,
                tuple(tags),
                host_floor(v.base.cuda),
            )
        )
    return ReleasePlan(version_tags(version)[0], revision.sha, tuple(promotions), tuple(refusals))


def promote(plan: ReleasePlan, registry: Registry) -> tuple[list[str], list[str]]:
    """Move the tags: (moved, already there). Every exact-version tag is checked before any moves."""
    # plan.version is the full X.Y.Z: the X.Y and X tags never count as exact.
    exact = {t for p in plan.promotions for t in p.tags if refs.parse(t).tag_or_latest.endswith(plan.version)}
    current = {t: registry.manifest(t) for p in plan.promotions for t in p.tags}
    clashes = []
    for p in plan.promotions:
        for tag in p.tags:
            existing = current[tag]
            if tag in exact and existing is not None and existing.digest != p.digest:
                clashes.append(
                    Problem(
                        f"{tag} already points to {existing.digest}, not {p.digest}",
                        variant=p.variant,
                        hint="a released version never moves: tag a new version",
                    )
                )
    if clashes:
        raise ReleaseRefused(clashes)
    moved, unchanged = [], []
    for p in plan.promotions:
        for tag in p.tags:
            manifest = current[tag]
            if manifest is not None and manifest.digest == p.digest:
                unchanged.append(tag)
            else:
                registry.copy_tag(p.source, tag)
                moved.append(tag)
    return moved, unchanged


def release_document(plan: ReleasePlan, moved: list[str], unchanged: list[str]) -> dict[str, object]:
    return {
        "version": plan.version,
        "revision": plan.revision,
        "variants": {
            p.variant: {
                "digest": p.digest,
                "tags": list(p.tags),
                "cuda": p.floor.cuda,
                "driver_floor": p.floor.driver,
                "allowed_cuda_versions": list(p.floor.allowed_cuda_versions),
            }
            for p in plan.promotions
        },
        "refused": {r.variant: r.reason for r in plan.refusals},
        "moved": moved,
        "unchanged": unchanged,
    }
