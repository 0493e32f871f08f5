"""Rules over matrix.yaml's catalogue: each base (used by a variant or not) and each GPU."""

from __future__ import annotations

import re
from collections.abc import Iterator

from packaging.version import InvalidVersion, Version

from buildtool import facts, refs
from buildtool.arch import Arch, ArchRule
from buildtool.config.model import Base, Gpu, Policy, Refusal
from buildtool.errors import Finding, did_you_mean
from buildtool.policy.registry import Context, error, rule, warning


def refusal_for(image: refs.ImageRef, policy: Policy) -> Refusal | None:
    """The refused repository `image` is, under any spelling. Repositories are compared by path, on
    any registry host: Docker Hub under its aliases, the mirrors the policy names, and a mirror or
    pull-through proxy on any host and port (registry.example.com:5000/nvidia/cuda,
    harbor.example.com/hub-proxy/nvidia/cuda) serve the same image under the same path."""
    path = image.path
    for refusal in policy.refused_repositories:
        for written in (refusal.what, *refusal.mirrors):
            refused = refs.parse(written).path  # docker.io/library/python's path keeps library/
            bare = refused.removeprefix(f"{refs.OFFICIAL_NAMESPACE}/")
            if path.removeprefix(f"{refs.OFFICIAL_NAMESPACE}/") == bare or path.endswith(f"/{refused}"):
                return refusal
    return None


@rule("refused-repository", "catalogue", "raw nvidia/cuda bases are not cached by RunPod and stall pulls")
def refused_repository(base: Base, context: Context) -> Iterator[Finding]:
    refusal = refusal_for(base.image, context.matrix.policy)
    if refusal is not None:
        served = (
            "" if base.image.name == refs.parse(refusal.what).name else f" (served from {base.image.domain})"
        )
        yield error(
            f"base '{base.name}' uses {base.ref}, which is {refusal.what}{served}: {refusal.reason}",
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


# What CUDA a tag says, in every spelling of real tags (and of a hand-edit): cuda12.8.1, cuda13.0,
# cuda-12.8, cuda_12.8, CUDA12.8, cu12.8, cu128 (PyTorch's wheel tags), cu1280 and cu1300 (RunPod's
# new scheme: major, minor, patch), cu12 (a major only). Case does not matter; a word starts at the
# tag's start or after '-', '_' or '.'.
CUDA_WORD = re.compile(r"(?<![a-z0-9])cu(?:da)?[-_]?(?P<version>\d+(?:\.\d+)*)(?!\d)")
# nvidia/cuda's tags lead with the CUDA: 12.8.1-cudnn-devel-ubuntu22.04, 13.0.0-base-ubuntu24.04.
LEADING_CUDA = re.compile(r"^v?(?P<version>\d+\.\d+(?:\.\d+)?)(?P<rest>[-_].*)?$")
CUDA_REPOSITORIES = ("cuda", "cudagl")  # the last path component of nvidia/cuda and its mirrors
# Repositories whose leading version is something else: torch (runpod/pytorch's old scheme,
# pytorch/pytorch), or a RunPod release (runpod/base:0.6.3-..., runpod/pytorch:1.0.2-cu1300-...).
OTHER_LEADING_NAMESPACES = ("runpod/",)


def _cuda_version(written: str) -> tuple[int, ...] | None:
    """'12.8.1' -> (12, 8, 1); compact digits: '128' -> (12, 8), '1300' -> (13, 0, 0), '12' -> (12,),
    '92' -> (9, 2); five digits or more are no CUDA."""
    if "." in written:
        return tuple(int(part) for part in written.split(".")[:3])
    if len(written) == 1 or (len(written) == 2 and written.startswith("1")):
        return (int(written),)
    if len(written) == 2:
        return (int(written[0]), int(written[1]))
    if len(written) in (3, 4):
        return (int(written[:2]), *(int(d) for d in written[2:]))
    return None


def cuda_in_tag(ref: str) -> tuple[tuple[int, ...], ...]:
    """Every CUDA version `ref`'s tag says, in order (none for a tag that says no CUDA)."""
    image = refs.parse(ref)
    tag = image.tag_or_latest.lower()
    found = [v for m in CUDA_WORD.finditer(tag) if (v := _cuda_version(m.group("version")))]
    leading = LEADING_CUDA.match(tag)
    if leading:
        other = image.path in facts.TORCH_LEADING_TAG_REPOSITORIES or image.path.startswith(
            OTHER_LEADING_NAMESPACES
        )
        by_repository = image.path.rsplit("/", 1)[-1] in CUDA_REPOSITORIES
        by_flavour = not other and (leading.group("rest") or "")[1:].startswith("cudnn")
        if by_repository or by_flavour:
            found.insert(0, tuple(int(p) for p in leading.group("version").split(".")))
    return tuple(found)


def cuda_agrees(declared: str | None, said: tuple[int, ...]) -> bool:
    """Whether a base's `cuda:` (major.minor, None: no CUDA) is what its tag says, to the precision
    the tag gives (cu12 says a major only; cuda12.8.1 says 12.8)."""
    if declared is None:
        return False
    try:
        wanted = tuple(int(part) for part in declared.split("."))
    except ValueError:
        return False
    precision = min(len(wanted), len(said), 2)
    return wanted[:precision] == said[:precision]


def _written(version: tuple[int, ...]) -> str:
    return ".".join(map(str, version[:2]))


def tag_facts(ref: str) -> dict[str, str]:
    """What a base reference's tag says: cuda, torch, python, cudnn (major[.minor[.patch]])."""
    image = refs.parse(ref)
    tag = image.tag_or_latest.lower()
    found: dict[str, str] = {}
    cuda = cuda_in_tag(ref)
    if cuda:
        found["cuda"] = _written(cuda[0])
    for field_name, pattern in facts.TAG_FACTS:
        if field_name == "cuda":
            continue  # cuda_in_tag reads every spelling of it
        match = pattern.search(tag)
        if match and field_name not in found:
            found[field_name] = ".".join(str(int(g)) if field_name != "python" else g for g in match.groups())
    if "torch" not in found and image.path in facts.TORCH_LEADING_TAG_REPOSITORIES:
        lead = facts.LEADING_VERSION.match(tag)
        if lead:
            found["torch"] = lead.group("version")
    return found


@rule("tag", "catalogue", "a catalogue entry that contradicts its own tag builds on the wrong CUDA/torch")
def tag_agrees(base: Base, context: Context) -> Iterator[Finding]:
    for said in dict.fromkeys(cuda_in_tag(base.ref)):
        if not cuda_agrees(base.cuda, said):
            has = f"cuda {base.cuda}" if base.cuda else "no CUDA (a CPU-only base)"
            yield error(
                f"base '{base.name}' declares {has} but its tag '{base.tag}' says {_written(said)}",
                base.where("cuda"),
                f'set cuda: "{_written(said)}" or fix the ref' if len(said) > 1 else "fix the ref",
            )
            break
    declared: dict[str, str | None] = {
        "python": base.python,
        "cudnn": str(base.cudnn) if base.cudnn is not None else None,
        "torch": Version(base.torch).public if base.torch and facts.is_version(base.torch) else None,
    }
    for key, from_tag in tag_facts(base.ref).items():
        value = declared.get(key)
        if key != "cuda" and value is not None and value != from_tag:
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


@rule(
    "runpod-gpu-type",
    "gpu",
    "a GPU type id that no RunPod serverless pool lists gives a deploy spec no pool: its endpoint "
    "never starts a worker on that card",
)
def gpu_type_id(gpu: Gpu, context: Context) -> Iterator[Finding]:
    """The runpod_id against facts.SERVERLESS_POOLS: a respelling of a listed id (case, spaces,
    hyphens) is an error; an id no pool lists is a warning (pods only), except on a GPU the policy
    refuses anyway (policy.refused_archs), which is never built for."""
    known = {t for types in facts.SERVERLESS_POOLS.values() for t in types}
    if gpu.runpod_id in known:
        return
    spelled = {_folded(t): t for t in known}.get(_folded(gpu.runpod_id))
    if spelled is not None:
        yield error(
            f"GPU '{gpu.name}' has runpod_id '{gpu.runpod_id}', which RunPod spells '{spelled}'",
            gpu.location,
            f"set runpod_id: {spelled}",
        )
    elif not any(
        ArchRule.parse(r.what).covers(Arch.parse(gpu.arch)) for r in context.matrix.policy.refused_archs
    ):
        yield warning(
            f"GPU '{gpu.name}' has runpod_id '{gpu.runpod_id}', which no RunPod serverless pool lists "
            "(facts.SERVERLESS_POOLS): a serverless endpoint cannot be given it",
            gpu.location,
            did_you_mean(gpu.runpod_id, known)
            or "use the id `GET /v2/catalog/gpus` answers, or update facts.SERVERLESS_POOLS from it",
        )


def _folded(type_id: str) -> str:
    return re.sub(r"[\s_-]+", "", type_id).casefold()
