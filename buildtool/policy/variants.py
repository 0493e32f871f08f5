"""Rules over each variant of the plan: its base's tier, its torch, the GPUs it was asked to serve,
its model and its kernels. Target resolution happened in the plan; these only refuse."""

from __future__ import annotations

from collections.abc import Iterator

from packaging.version import InvalidVersion, Version

from buildtool import facts
from buildtool.errors import Finding, did_you_mean
from buildtool.plan import Variant
from buildtool.policy.catalogue import parse_torch
from buildtool.policy.registry import Context, error, rule, warning


@rule("tier", "variant", "uncached bases pull for minutes on RunPod, or get stuck")
def tier(variant: Variant, context: Context) -> Iterator[Finding]:
    """Tier 1 passes; Tier 2 warns; Tier 3 only as a ghcr.io image overlaying a Tier 1/2 base."""
    base, policy = variant.base, context.matrix.policy
    if base.tier not in policy.allowed_tiers:
        allowed = ", ".join(map(str, policy.allowed_tiers))
        yield error(
            f"base '{base.name}' is Tier {base.tier}; allowed tiers are {allowed}",
            base.where("tier"),
            "pick a Tier-1 base (RunPod caches them: 10-60 s pulls)",
        )
    elif base.tier == 2:
        yield warning(
            f"base '{base.name}' is Tier 2: pulls take 1-5 min on RunPod",
            base.where("tier"),
            "use a Tier-1 runpod/pytorch base with the same CUDA and torch when one exists",
        )
    elif base.tier == 3:
        if not any(base.image.is_under(r) for r in policy.tier3_registries):
            registries = " or ".join(policy.tier3_registries)
            yield error(
                f"Tier-3 base '{base.name}' ({base.ref}) is not under {registries}: uncached images get "
                "stuck on pull",
                base.where("ref"),
                "push the custom image to ghcr.io",
            )
            return
        under = context.matrix.base(base.built_on) if base.built_on else None
        if under is None or under.tier > 2:
            yield error(
                f"Tier-3 base '{base.name}' must overlay a Tier-1 or Tier-2 base",
                base.where("built_on"),
                "set built_on: to the catalogue base it is built FROM",
            )


@rule("torch", "variant", "an image that needs torch on a base without it, or a wheel without facts")
def torch_known(variant: Variant, context: Context) -> Iterator[Finding]:
    base = variant.base
    if variant.torch is None:
        if variant.image.needs_torch:
            yield error(
                f"base '{base.name}' ships no torch, which image '{variant.image.name}' needs",
                variant.location,
                "build it on a runpod/pytorch base",
            )
        return
    if variant.image.torch is None and isinstance(parse_torch(base), Finding):
        return  # the catalogue rule torch-cuda says why, once
    if variant.torch_build is None:
        known = [f"{b.torch}+{b.local}" for b in facts.TORCH_BUILDS]
        where = variant.image.location if variant.image.torch else base.where("torch")
        yield error(
            f"no facts for torch {variant.torch}: its arch list is unknown",
            where,
            (did_you_mean(variant.torch, known) or "")
            + " Add a row to buildtool/facts.py TORCH_BUILDS, with its source.",
        )


@rule(
    "image-torch", "variant", "a torch the image installs itself must match its base's CUDA, like any wheel"
)
def image_torch(variant: Variant, context: Context) -> Iterator[Finding]:
    """An image's own `torch:` (vLLM images pin theirs) is checked as the catalogue checks a base's:
    a version with a local tag, whose CUDA is the base's, and a wheel facts.py knows."""
    wheel, base = variant.image.torch, variant.base
    if wheel is None:
        return
    where = variant.image.location
    try:
        version = Version(wheel)
    except InvalidVersion:
        yield error(
            f"image '{variant.image.name}': torch '{wheel}' is not a version", where, "e.g. 2.11.0+cu130"
        )
        return
    if version.local is None:
        cuda = f"+cu{(base.cuda or '').replace('.', '')}" if base.cuda else "+cpu"
        yield error(
            f"image '{variant.image.name}': torch '{wheel}' has no local tag: the CUDA it needs is unknown",
            where,
            f"write {wheel}{cuda}",
        )
        return
    try:
        wheel_cuda = facts.cuda_of_local_tag(version.local)
    except ValueError as exc:
        yield error(f"image '{variant.image.name}': {exc}", where)
        return
    if wheel_cuda != base.cuda:
        has = f"CUDA {base.cuda}" if base.cuda else "no CUDA"
        wants = f"CUDA {wheel_cuda}" if wheel_cuda else "no CUDA"
        yield error(
            f"image '{variant.image.name}' installs torch {wheel} (built for {wants}) on base "
            f"'{base.name}' with {has}: CUDA mismatch at run time",
            where,
            f"exclude this base for the image, or install torch {version.public}+cu"
            f"{(base.cuda or '').replace('.', '')}"
            if base.cuda
            else "use a +cpu wheel",
        )


@rule("arch", "variant", "a GPU the wheel has no kernels for fails with 'no kernel image' at run time")
def arch(variant: Variant, context: Context) -> Iterator[Finding]:
    if variant.torch_build is None and (variant.base.torch is not None or variant.image.needs_torch):
        return  # the torch rule refuses it
    if variant.gpus_explicit:
        for refused in variant.refused:
            yield error(
                f"targets {refused.gpu.name} ({refused.gpu.arch}): {refused.reason}",
                variant.gpus_location,
                f"remove {refused.gpu.name} from this variant's gpus",
            )
    if not variant.targets and not (variant.gpus_explicit and variant.refused):
        yield error(
            "no GPU target is left after refusals", variant.location, "target a GPU the torch wheel supports"
        )


@rule("model-size", "variant", "baked weights over ~10 GB make pulls and cold starts crawl")
def model_size(variant: Variant, context: Context) -> Iterator[Finding]:
    model, limit = variant.image.model, context.matrix.policy.max_baked_model_gb
    if model and model.source == "baked" and model.size_gb > limit:
        yield error(
            f"model '{model.name}' is {model.size_gb:g} GB, over the {limit:g} GB limit for baked weights",
            model.location,
            "set source: volume and volume_path: /runpod-volume/models/<name>",
        )


@rule("kernels-torch", "variant", "`kernels` loads only a build of the running torch: none, no kernel")
def kernels_torch(variant: Variant, context: Context) -> Iterator[Finding]:
    build = variant.torch_build
    if build is None:
        return
    for pin in variant.kernels:
        if not pin.has_build_for(build.torch):
            yield error(
                f"kernel {pin.name} ({pin.repo_id}) has no build for torch {build.torch} (builds exist for "
                f"torch {', '.join(pin.torch)}): the image could not load it",
                variant.image.location,
                f"build this image on a base with torch {pin.torch[-1]}, or drop {pin.name} from its kernels",
            )
