"""Rules over matrix.yaml's catalogue: each base (used by a variant or not) and each GPU."""

from __future__ import annotations

from collections.abc import Iterator

from packaging.version import InvalidVersion, Version

from buildtool import facts, refs
from buildtool.errors import Finding
from buildtool.model import Base, Gpu, Policy, Refusal
from buildtool.policy.registry import Context, error, rule


def refusal_for(image: refs.ImageRef, policy: Policy) -> Refusal | None:
    """The refused repository `image` is, under any spelling: registry aliases, library/, case of
    the host, tag or digest, and the mirrors the policy names."""
    for refusal in policy.refused_repositories:
        names = {refs.parse(r).name for r in (refusal.what, *refusal.mirrors)}
        if image.name in names:
            return refusal
    return None


@rule("refused-repository", "catalogue", "raw nvidia/cuda bases are not cached by RunPod and stall pulls")
def refused_repository(base: Base, context: Context) -> Iterator[Finding]:
    refusal = refusal_for(base.image, context.matrix.policy)
    if refusal is not None:
        yield error(
            f"base '{base.name}' uses {base.ref}: {refusal.reason}",
            base.where("ref"),
            "build on a Tier-1 base such as runpod/pytorch, or pytorch/pytorch (Tier 2) with the same CUDA",
        )


def parse_torch(base: Base) -> tuple[Version, str] | Finding:
    """The base's torch version and its local tag (cu130, cpu), or why it cannot be read."""
    assert base.torch is not None
    try:
        version = Version(base.torch)
    except InvalidVersion:
        return error(
            f"base '{base.name}': torch '{base.torch}' is not a version",
            base.where("torch"),
            "write it as the wheel's version, e.g. 2.11.0+cu130",
        )
    if version.local is None:
        return error(
            f"base '{base.name}': torch '{base.torch}' has no local tag (+cu130, +cpu): the CUDA it needs "
            "is unknown",
            base.where("torch"),
            f"write {base.torch}+cu{(base.cuda or '').replace('.', '')}" if base.cuda else None,
        )
    return version, version.local


@rule("torch-cuda", "catalogue", "a torch wheel built for another CUDA (or cuDNN) fails at run time")
def torch_cuda(base: Base, context: Context) -> Iterator[Finding]:
    """The wheel's local tag must match the base's CUDA: +cu130 needs CUDA 13.0, +cpu none."""
    if base.torch is None:
        return
    parsed = parse_torch(base)
    if isinstance(parsed, Finding):
        yield parsed
        return
    version, local = parsed
    try:
        wheel_cuda = facts.cuda_of_local_tag(local)
    except ValueError as exc:
        yield error(f"base '{base.name}': {exc}", base.where("torch"))
        return
    if wheel_cuda != base.cuda:
        has = f"CUDA {base.cuda}" if base.cuda else "no CUDA"
        wants = f"CUDA {wheel_cuda}" if wheel_cuda else "a CPU-only base"
        fix = (
            f"use torch {version.public}+cu{base.cuda.replace('.', '')}" if base.cuda else "use a +cpu wheel"
        )
        yield error(
            f"base '{base.name}' pairs torch {base.torch} (built for {wants}) with {has}: CUDA mismatch "
            "at run time",
            base.where("torch"),
            f"{fix}, or a base with {wants}",
        )
        return
    build = facts.find_torch_build(version.public, local)
    if build and base.cudnn is not None and build.cudnn and build.cudnn.split(".")[0] != str(base.cudnn):
        yield error(
            f"base '{base.name}' declares cuDNN {base.cudnn} but torch {base.torch} is built against "
            f"cuDNN {build.cudnn}",
            base.where("cudnn"),
            f"set cudnn: {build.cudnn.split('.')[0]}",
        )


def tag_facts(ref: str) -> dict[str, str]:
    """What a base reference's tag says: cuda, torch, python, cudnn (major[.minor[.patch]])."""
    image = refs.parse(ref)
    repository, tag = image.familiar, image.tag_or_latest
    found: dict[str, str] = {}
    for field_name, pattern in facts.TAG_FACTS:
        match = pattern.search(tag)
        if match and field_name not in found:
            found[field_name] = ".".join(str(int(g)) if field_name != "python" else g for g in match.groups())
    if "torch" not in found and repository in facts.TORCH_LEADING_TAG_REPOSITORIES:
        lead = facts.LEADING_VERSION.match(tag)
        if lead:
            found["torch"] = lead.group("version")
    return found


@rule("tag", "catalogue", "a catalogue entry that contradicts its own tag builds on the wrong CUDA/torch")
def tag_agrees(base: Base, context: Context) -> Iterator[Finding]:
    declared: dict[str, str | None] = {
        "cuda": base.cuda,
        "python": base.python,
        "cudnn": str(base.cudnn) if base.cudnn is not None else None,
        "torch": Version(base.torch).public if base.torch and facts.is_version(base.torch) else None,
    }
    for key, from_tag in tag_facts(base.ref).items():
        value = declared[key]
        if value is not None and value != from_tag:
            yield error(
                f"base '{base.name}' declares {key} {value} but its tag '{base.tag}' says {from_tag}",
                base.where(key),
                f'set {key}: "{from_tag}" or fix the ref',
            )


@rule("flash-attention", "gpu", "FA3 runs only on Hopper (sm_90); FA2 needs Ampere or newer")
def gpu_flash_attention(gpu: Gpu, context: Context) -> Iterator[Finding]:
    if gpu.flash_attention is None:
        return
    supported = facts.flash_attention_for(gpu.arch)
    if gpu.flash_attention not in supported:
        can = f"FlashAttention {' or '.join(map(str, supported))}" if supported else "no FlashAttention"
        yield error(
            f"GPU '{gpu.name}' ({gpu.arch}) declares FlashAttention {gpu.flash_attention}, but {gpu.arch} "
            f"runs {can}",
            gpu.location,
            f"set flash_attention: {max(supported)}" if supported else "remove flash_attention",
        )
