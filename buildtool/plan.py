"""Expand the matrix axes into variants: image x base, with include/exclude as in GitHub Actions'
matrix and --select patterns as in cibuildwheel's build selectors.

A variant is one image built on one base. The plan resolves what it serves and what it bakes: the
torch wheel its base ships (facts.TORCH_BUILDS), the GPUs it targets and those it cannot serve (with
why), and the kernels it bakes, at the commits matrix.lock records. It refuses nothing: the policy
package does, reading these.
"""

from __future__ import annotations

import fnmatch
import functools
from collections.abc import Mapping
from dataclasses import dataclass, replace

from packaging.version import Version

from buildtool import facts
from buildtool.arch import Arch, ArchRule
from buildtool.config.model import FLASH_ATTENTION_SHORTHAND, Base, Combination, Gpu, Image, Matrix, Policy
from buildtool.errors import ConfigError, Finding, Location, Problem, SelectionError, did_you_mean

# matrix.lock's kernels: (repo_id, revision as the matrix writes it) -> the commit it resolved to.
KernelCommits = Mapping[tuple[str, str], str]


@dataclass(frozen=True)
class RefusedGpu:
    gpu: Gpu
    reason: str


@dataclass(frozen=True)
class Variant:
    name: str  # "<image>-<base>", also the bake target name
    image: Image
    base: Base
    gpus: tuple[Gpu, ...]
    gpus_explicit: bool  # named in the matrix (a refusal is an error) or implied by "all"
    location: Location  # the matrix entry that produced it
    gpus_location: Location  # where its GPU list was written
    torch_build: facts.TorchBuild | None = None  # None: no torch, or one facts.py does not know
    targets: tuple[Gpu, ...] = ()  # the GPUs it serves
    refused: tuple[RefusedGpu, ...] = ()  # the GPUs it cannot serve, and why
    kernels: tuple[facts.KernelPin, ...] = ()  # what its build bakes, newest FlashAttention first
    kernel_notes: tuple[str, ...] = ()  # kernels the shorthand did not offer, and why

    @property
    def torch(self) -> str | None:
        """The torch the image runs: its own declared wheel, else its base's."""
        return self.image.torch or self.base.torch

    @property
    def is_worker(self) -> bool:
        return self.image.kind == "serverless-worker"

    @property
    def flash_attention(self) -> tuple[int, ...]:
        """The FlashAttention versions its GPU targets run."""
        return tuple(sorted({g.flash_attention for g in self.targets if g.flash_attention}))

    @property
    def baked_flash_attention(self) -> tuple[int, ...]:
        return tuple(sorted({p.flash_attention for p in self.kernels if p.flash_attention}))

    @property
    def archs(self) -> tuple[str, ...]:
        return tuple(sorted({g.arch for g in self.targets}, key=Arch.parse))


@dataclass(frozen=True)
class Plan:
    matrix: Matrix
    variants: tuple[Variant, ...]
    default_variant: str | None


@dataclass(frozen=True)
class CheckedPlan:
    """A plan and what the policy found in it; stages after policy take this."""

    plan: Plan
    findings: tuple[Finding, ...]

    @property
    def variants(self) -> tuple[Variant, ...]:
        return self.plan.variants

    @property
    def errors(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity == "error")

    @property
    def warnings(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity == "warning")


def torch_build_of(torch: str | None) -> facts.TorchBuild | None:
    """The facts row of a torch wheel (2.11.0+cu130); None for none, or one facts.py lacks."""
    if torch is None or not facts.is_version(torch):
        return None
    version = Version(torch)
    return facts.find_torch_build(version.public, version.local) if version.local else None


@functools.lru_cache(maxsize=4096)  # a plan asks it per variant of the same few GPUs and wheels
def gpu_refusal(gpu: Gpu, build: facts.TorchBuild | None, policy: Policy) -> str | None:
    """Why `gpu` cannot be a target with this torch build (None: an image without torch), or None."""
    for refusal in policy.refused_archs:
        if ArchRule.parse(refusal.what).covers(Arch.parse(gpu.arch)):
            return refusal.reason
    if build is None:
        return None
    if build.cuda is None:
        return f"torch {build.torch}+{build.local} is a CPU wheel"
    if not facts.wheel_covers_arch(build, gpu.arch):
        return (
            f"torch {build.torch}+{build.local} ships no kernels for {gpu.arch} "
            f"(TORCH_CUDA_ARCH_LIST {facts.arch_list(build)})"
        )
    return None


def resolve_kernels(
    variant: Variant, commits: KernelCommits
) -> tuple[tuple[facts.KernelPin, ...], tuple[str, ...]]:
    """`flash-attention` becomes the FlashAttention kernels its targets run that have a build for
    its torch; other entries stay as written. Each at the commit matrix.lock records, if any."""
    pins: list[facts.KernelPin] = []
    notes: list[str] = []
    build = variant.torch_build
    for spec in variant.image.kernels:
        if spec.name == FLASH_ATTENTION_SHORTHAND:
            for version in sorted(variant.flash_attention, reverse=True):
                pin = facts.FLASH_ATTENTION_KERNELS[version]
                if build is not None and not pin.has_build_for(build.torch):
                    notes.append(
                        f"FlashAttention {version} is not offered: {pin.repo_id} has no build for "
                        f"torch {build.torch} (builds exist for torch {', '.join(pin.torch)}); "
                        "attention runs through torch's SDPA"
                    )
                    continue
                pins.append(pin)
        else:
            assert spec.repo_id is not None and spec.revision is not None
            torch = facts.KERNEL_TORCH_BUILDS.get(spec.repo_id, ())
            pins.append(
                facts.KernelPin(
                    spec.name, spec.repo_id, spec.revision, spec.function, spec.archs, torch=torch
                )
            )
    locked = tuple(
        replace(p, revision=commits[(p.repo_id, p.revision)], branch=p.revision)
        if (p.repo_id, p.revision) in commits
        else p
        for p in pins
    )
    return locked, tuple(notes)


def resolve(variant: Variant, policy: Policy, commits: KernelCommits) -> Variant:
    """The variant with its torch build, GPU targets, refused GPUs and kernels filled in."""
    build = torch_build_of(variant.torch)
    uses_torch = variant.torch is not None or variant.image.needs_torch
    targets: list[Gpu] = []
    refused: list[RefusedGpu] = []
    if build is not None or not uses_torch:
        for gpu in variant.gpus:
            reason = gpu_refusal(gpu, build, policy)
            if reason is None:
                targets.append(gpu)
            else:
                refused.append(RefusedGpu(gpu, reason))
    resolved = replace(variant, torch_build=build, targets=tuple(targets), refused=tuple(refused))
    kernels, notes = resolve_kernels(resolved, commits)
    return replace(resolved, kernels=kernels, kernel_notes=notes)


def variant_name(image: str, base: str) -> str:
    return f"{image}-{base}"


def _matches(combo: Combination, values: dict[str, str]) -> bool:
    return all(values.get(key) == value for key, value in combo.values)


@dataclass(frozen=True)
class _Combo:
    values: dict[str, str]
    gpus: tuple[str, ...] | None
    location: Location
    gpus_location: Location


def expand(matrix: Matrix) -> list[_Combo]:
    """The cross product, minus exclude, plus include (GitHub Actions rules: an include entry
    that matches an existing combination extends it, otherwise it adds one)."""
    axes = matrix.axes
    axes_gpus_at = axes.gpus_location or axes.location
    combos = [
        _Combo({"image": image, "base": base}, axes.gpus, axes.location, axes_gpus_at)
        for image in axes.image
        for base in axes.base
    ]
    combos = [c for c in combos if not any(_matches(ex, c.values) for ex in axes.exclude)]
    for inc in axes.include:
        extended = False
        for i, combo in enumerate(combos):
            if _matches(inc, combo.values):
                if inc.gpus is not None:
                    combos[i] = _Combo(combo.values, inc.gpus, inc.location, inc.location)
                extended = True
        if not extended:
            values = dict(inc.values)
            if set(values) != {"image", "base"}:
                raise ConfigError(
                    Problem(
                        "this include entry matches no combination and does not name both image and base",
                        inc.location,
                        hint="name both image and base to add a variant",
                    )
                )
            gpus, gpus_at = (inc.gpus, inc.location) if inc.gpus is not None else (axes.gpus, axes_gpus_at)
            combos.append(_Combo(values, gpus, inc.location, gpus_at))
    return combos


def make_plan(
    matrix: Matrix, select: tuple[str, ...] = (), kernel_commits: KernelCommits | None = None
) -> Plan:
    variants: dict[str, Variant] = {}
    for combo in expand(matrix):
        name = variant_name(combo.values["image"], combo.values["base"])
        gpus = tuple(matrix.gpu(g) for g in combo.gpus) if combo.gpus is not None else matrix.gpus
        variant = Variant(
            name,
            matrix.image(combo.values["image"]),
            matrix.base(combo.values["base"]),
            gpus,
            combo.gpus is not None,
            combo.location,
            combo.gpus_location,
        )
        variants[name] = resolve(variant, matrix.policy, kernel_commits or {})
    default = matrix.default_variant
    if default is not None and default not in variants:
        raise ConfigError(
            Problem(
                f"default_variant '{default}' is not a variant of the matrix",
                Location(matrix.path),
                hint=did_you_mean(default, variants) or f"variants: {', '.join(sorted(variants))}",
            )
        )
    chosen = sorted(variants.values(), key=lambda v: v.name)
    if select:
        chosen = [v for v in chosen if any(fnmatch.fnmatchcase(v.name, p) for p in select)]
        if not chosen:
            pattern = ", ".join(repr(p) for p in select)
            hint = did_you_mean(select[0], variants) or f"variants: {', '.join(sorted(variants))}"
            raise SelectionError(
                Problem(f"--select {pattern} matches no variant", Location(matrix.path), hint=hint)
            )
    return Plan(matrix, tuple(chosen), default)
