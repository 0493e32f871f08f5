"""Facts about torch wheels, CUDA, cuDNN, GPU archs and base-image tags, kept as data with sources.

Policy code reads these tables; it never hard-codes a version. To support a new torch release, add a
row to TORCH_BUILDS (with where the numbers come from) and the golden tests show what changes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from packaging.version import InvalidVersion, Version

from buildtool.arch import Arch
from smoke.archs import arch_covered, torch_arch_list


@dataclass(frozen=True)
class TorchBuild:
    """What one torch wheel (public version + local tag) was built with."""

    torch: str  # public version, e.g. "2.11.0"
    local: str  # local tag, e.g. "cu130"
    cuda: str | None  # CUDA major.minor, None for CPU wheels
    cudnn: str | None  # cuDNN major.minor the wheel is built against
    archs: tuple[str, ...]  # compute capabilities with cubins, e.g. ("8.0", "9.0")
    ptx: tuple[str, ...]  # compute capabilities shipped as PTX (JIT to newer GPUs)
    source: str


TORCH_BUILDS: tuple[TorchBuild, ...] = (
    TorchBuild(
        "2.11.0",
        "cu130",
        "13.0",
        "9.19",
        ("7.5", "8.0", "8.6", "9.0", "10.0", "12.0"),
        (),
        "measured: torch._C._cuda_getArchFlags() of the torch==2.11.0 PyPI wheel (+cu130) printed "
        "'sm_75 sm_80 sm_86 sm_90 sm_100 sm_120' (no compute_* entry: no PTX), cudnn.version() 91900",
    ),
    TorchBuild(
        "2.9.1",
        "cu130",
        "13.0",
        "9.13",
        ("7.5", "8.0", "8.6", "9.0", "10.0", "12.0"),
        ("12.0",),
        "pytorch/pytorch .ci/manywheel/build_cuda.sh for CUDA 13.0; not measured here",
    ),
    TorchBuild(
        "2.4.0",
        "cu124",
        "12.4",
        "9.1",
        ("5.0", "6.0", "7.0", "7.5", "8.0", "8.6", "9.0"),
        (),
        "pytorch/pytorch release/2.4 .ci/manywheel/build_cuda.sh (CUDA 12.4); cuDNN from the "
        "wheel's nvidia-cudnn-cu12==9.1.0.70 requirement; not measured here",
    ),
    TorchBuild(
        "2.11.0",
        "cpu",
        None,
        None,
        (),
        (),
        "CPU wheel: no CUDA kernels",
    ),
)

# Which FlashAttention major versions a GPU arch can run. FA3 is Hopper-only (wgmma/TMA); FA2 needs
# Ampere or newer. Source: Dao-AILab/flash-attention README; RunPod GPU selection matrix (seeds).
FLASH_ATTENTION_BY_ARCH: dict[str, tuple[int, ...]] = {
    "sm_80": (2,),
    "sm_86": (2,),
    "sm_89": (2,),
    "sm_90": (2, 3),
}


# The torch versions (major.minor) each Hub kernel has builds for: a kernel's builds are named
# torch<major><minor>-cxx11-cu<CUDA>-x86_64-linux, one per torch it was built against, and `kernels`
# loads only a build of the running torch. Every kernels-community kernel is built by kernel-builder,
# whose build sets covered torch 2.5/2.6 (early 2025) through 2.11 (2026) and never torch 2.4
# (huggingface/kernel-builder versions.nix and docs/build-variants.md). The FlashAttention
# repositories themselves were not listed here (no Hub on this machine): the bake proves the build
# exists for the variant's torch, and fails the build otherwise.
FLASH_ATTENTION_TORCH_BUILDS: tuple[str, ...] = ("2.6", "2.7", "2.8", "2.9", "2.10", "2.11")
KERNEL_TORCH_BUILDS: dict[str, tuple[str, ...]] = {
    "kernels-community/vllm-flash-attn3": FLASH_ATTENTION_TORCH_BUILDS,
    "kernels-community/flash-attn2": FLASH_ATTENTION_TORCH_BUILDS,
}


@dataclass(frozen=True)
class KernelPin:
    """A Hub kernel the image build bakes in, pinned by revision: `version=` cannot resolve offline
    (huggingface/kernels issue 553), a revision can, from the baked cache."""

    name: str
    repo_id: str
    revision: str  # a commit once matrix.lock records one (the plan substitutes it), else a branch
    function: str
    archs: tuple[str, ...]  # GPU archs it runs on; empty: any device
    flash_attention: int | None = None
    torch: tuple[str, ...] = ()  # torch major.minor versions it has builds for; empty: not known
    branch: str | None = None  # the revision the matrix names, when `revision` is its locked commit

    def has_build_for(self, torch_version: str) -> bool:
        """Whether a build exists for this torch ('2.11.0' -> '2.11'); unknown lists allow all."""
        return not self.torch or ".".join(torch_version.split(".")[:2]) in self.torch


# The FlashAttention kernels by version, as `kernels: [flash-attention]` bakes them. The revisions
# are the repositories' version-1 branches: `buildtool lock` records the commit each resolves to in
# matrix.lock, and builds bake that commit. Source: RunPod production patterns (seeds).
FLASH_ATTENTION_KERNELS: dict[int, KernelPin] = {
    3: KernelPin(
        "flash-attn3",
        "kernels-community/vllm-flash-attn3",
        "v1",
        "flash_attn_func",
        ("sm_90",),
        3,
        KERNEL_TORCH_BUILDS["kernels-community/vllm-flash-attn3"],
    ),
    2: KernelPin(
        "flash-attn2",
        "kernels-community/flash-attn2",
        "v1",
        "flash_attn_func",
        ("sm_80", "sm_86", "sm_89", "sm_90"),
        2,
        KERNEL_TORCH_BUILDS["kernels-community/flash-attn2"],
    ),
}

# Lowest NVIDIA driver that runs each CUDA major.minor without the compat package.
# Source: NVIDIA CUDA Toolkit release notes, table 3 (minimum driver for minor version compat).
DRIVER_FLOOR_BY_CUDA: dict[str, str] = {
    "12.4": "550.54",
    "12.6": "560.28",
    "12.8": "570.26",
    "13.0": "580.65",
}

# The host CUDA versions RunPod templates and endpoints can allow (allowedCudaVersions).
RUNPOD_CUDA_VERSIONS: tuple[str, ...] = (
    "12.0",
    "12.1",
    "12.2",
    "12.3",
    "12.4",
    "12.5",
    "12.6",
    "12.7",
    "12.8",
    "12.9",
    "13.0",
)


@dataclass(frozen=True)
class HostFloor:
    """What a RunPod template, endpoint or pod must allow for an image on CUDA `cuda` to run."""

    cuda: str | None
    driver: str | None
    allowed_cuda_versions: tuple[str, ...]  # RunPod's allowedCudaVersions: the host CUDA at or above


def host_floor(cuda: str | None) -> HostFloor:
    if cuda is None:
        return HostFloor(None, None, ())
    at_least = tuple(c for c in RUNPOD_CUDA_VERSIONS if _major_minor(c) >= _major_minor(cuda))
    return HostFloor(cuda, DRIVER_FLOOR_BY_CUDA.get(cuda), at_least)


def _major_minor(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


# RunPod's serverless GPU pools and the GPU type ids in each: a v2 endpoint selects pools, minus
# `excludedTypes`. Source: runpod/docs references/gpu-types.mdx (tables generated 2026-02-12; read
# 2026-11-22 at commit a900806e), whose pool table names cards, mapped here to the type ids of its
# GPU table. `GET /v2/catalog/gpus` answers `pool` per type where the API can be reached.
SERVERLESS_POOLS: dict[str, tuple[str, ...]] = {
    "AMPERE_16": (
        "NVIDIA RTX A4000",
        "NVIDIA RTX A4500",
        "NVIDIA RTX 4000 Ada Generation",
        "NVIDIA RTX 2000 Ada Generation",
    ),
    "AMPERE_24": ("NVIDIA L4", "NVIDIA RTX A5000", "NVIDIA GeForce RTX 3090"),
    "ADA_24": ("NVIDIA GeForce RTX 4090",),
    "AMPERE_48": ("NVIDIA RTX A6000", "NVIDIA A40"),
    "ADA_48_PRO": ("NVIDIA L40", "NVIDIA L40S", "NVIDIA RTX 6000 Ada Generation"),
    "AMPERE_80": ("NVIDIA A100 80GB PCIe", "NVIDIA A100-SXM4-80GB"),
    "ADA_80_PRO": ("NVIDIA H100 80GB HBM3", "NVIDIA H100 PCIe", "NVIDIA H100 NVL"),
    "HOPPER_141": ("NVIDIA H200",),
}


def serverless_pool(gpu_type_id: str) -> str | None:
    return next((pool for pool, types in SERVERLESS_POOLS.items() if gpu_type_id in types), None)


# Cold-pull throughput onto a RunPod host, bytes per second (low, high). Source: the seeds' serverless
# cold-start guide (May 2026): a 15 GB image pulls in 45-60 s without FlashBoot, a 2 GB one in under
# 10 s. A host that caches a Tier-1 base pulls only the layers above it.
PULL_BYTES_PER_SECOND: tuple[float, float] = (250e6, 333e6)

# What a base image's tag says about itself. Each pattern names the catalogue field it cross-checks.
# runpod/pytorch old scheme: 2.4.0-py3.11-cuda12.4.1-devel-ubuntu22.04 (leading version = torch);
# runpod/pytorch new scheme: <release>-cu1300-torch291-ubuntu2404 (leading version = RunPod release).
TAG_FACTS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("cuda", re.compile(r"(?:^|-)cuda(?P<major>\d+)\.(?P<minor>\d+)(?:\.\d+)?(?:-|$)")),
    ("cuda", re.compile(r"(?:^|-)cu(?P<major>\d{2})(?P<minor>\d)\d(?:-|$)")),
    ("torch", re.compile(r"(?:^|-)torch(?P<major>\d)(?P<minor>\d+)(?P<patch>\d)(?:-|$)")),
    ("python", re.compile(r"(?:^|-)py(?P<major>\d)\.(?P<minor>\d+)(?:-|$)")),
    ("cudnn", re.compile(r"(?:^|-)cudnn(?P<major>\d+)(?:-|$)")),
)
# Repositories whose tag starts with the torch version unless a torchNNN token says otherwise.
TORCH_LEADING_TAG_REPOSITORIES = ("runpod/pytorch", "pytorch/pytorch")
LEADING_VERSION = re.compile(r"^(?P<version>\d+\.\d+\.\d+)(?:-|$)")


def find_torch_build(torch: str, local: str) -> TorchBuild | None:
    for build in TORCH_BUILDS:
        if build.torch == torch and build.local == local:
            return build
    return None


def cuda_of_local_tag(local: str) -> str | None:
    """'cu130' -> '13.0', 'cu124' -> '12.4', 'cpu' -> None. Raises ValueError for anything else."""
    if local == "cpu":
        return None
    match = re.fullmatch(r"cu(\d+)(\d)", local)
    if not match:
        raise ValueError(f"'{local}' is not a CUDA (cuXYZ) or CPU local tag")
    return f"{int(match.group(1))}.{match.group(2)}"


def arch_number(arch: str) -> tuple[int, int]:
    """'sm_90' -> (9, 0); 'sm_100f' -> (10, 0); '8.6' -> (8, 6): the compute capability."""
    return Arch.parse(arch).capability


def flash_attention_for(arch: str) -> tuple[int, ...]:
    """The FlashAttention versions `arch` runs (its capability's; suffixes change nothing)."""
    major, minor = arch_number(arch)
    return FLASH_ATTENTION_BY_ARCH.get(f"sm_{major}{minor}", ())


def wheel_covers_arch(build: TorchBuild, arch: str) -> bool:
    """Whether the wheel runs on `arch`, by the rule the smoke suite applies in the image to the
    list torch reports (smoke/archs.py): a cubin of the same major and lower-or-equal minor, or PTX
    of a lower-or-equal capability."""
    major, minor = arch_number(arch)
    return arch_covered(f"sm_{major}{minor}", torch_arch_list(build.archs, build.ptx))


def arch_list(build: TorchBuild) -> str:
    """TORCH_CUDA_ARCH_LIST notation: '7.5;8.0;9.0+PTX'."""
    return ";".join(a + ("+PTX" if a in build.ptx else "") for a in build.archs)


def is_version(text: str) -> bool:
    """Whether `text` is a PEP 440 version (torch's '2.11.0+cu130' is)."""
    try:
        Version(text)
    except InvalidVersion:
        return False
    return True


# What a secret looks like, by its issuer's published format; the policy refuses these in anything
# an image carries (ENV, labels, build args in its history). Sources: Hugging Face user access
# tokens (hf_ + 34 letters/digits), RunPod API keys (rpa_ + 40 upper-case letters/digits), GitHub's
# token formats (ghp_/gho_/ghu_/ghs_/ghr_, github_pat_), AWS access key ids (AKIA/ASIA + 16),
# OpenAI-style keys (sk-...), PEM private keys.
SECRET_PATTERNS: tuple[tuple[str, str], ...] = (
    ("a Hugging Face token", r"\bhf_[A-Za-z0-9]{30,}\b"),
    ("a RunPod API key", r"\brpa_[A-Za-z0-9]{30,}\b"),
    ("a GitHub token", r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{40,})\b"),
    ("an AWS access key id", r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    ("an API key (sk-...)", r"\bsk-[A-Za-z0-9_-]{32,}\b"),
    ("a private key", r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
)


@dataclass(frozen=True)
class BenchFloor:
    """A line the attention benchmark must clear on a GPU (`python -m smoke --bench`): `backend`'s
    TFLOP/s at least `minimum` times the paper's figure (`versus` "paper") or another backend's at the
    same shape, at every measured shape from `from_seqlen` on (shorter ones are launch-bound)."""

    skus: tuple[str, ...]  # GPU_SKUS names: the exact cards the floor holds for
    backend: str  # as the result names it: kernel.flash-attn3, sdpa.flash, ...
    minimum: float
    versus: str  # "paper" (smoke/published.py) or a backend
    why: str
    from_seqlen: int = 2048
    # Archs (sm_XY, as the run records machine.arch) it holds for on any card: a floor between two
    # kernels on one card is the algorithm's, not the SKU's, so a GPU added to the matrix gets it.
    archs: tuple[str, ...] = ()

    def holds_for(self, sku: str | None, arch: str | None) -> bool:
        return (sku is not None and sku in self.skus) or (arch is not None and arch in self.archs)

    def describe(self) -> str:
        target = "the paper's figure" if self.versus == "paper" else self.versus
        amount = f"{self.minimum:.0%} of" if self.versus == "paper" else f"{self.minimum:g}x"
        return f"{self.backend} >= {amount} {target} (seqlen >= {self.from_seqlen})"


# The exact cards, by the name torch gives the device (torch.cuda.get_device_name; the benchmark
# records it as machine.gpu): a floor holds for a SKU, never for a card that merely shares a name
# (an H100 PCIe has 114 SMs at 350 W where the SXM5 the paper measured has 132 at 700 W).
GPU_SKUS: tuple[tuple[str, str], ...] = (  # (SKU, a regular expression the whole name matches)
    ("H100 SXM5", r"NVIDIA H100 80GB HBM3|NVIDIA H100 SXM5( 80GB)?"),
    ("H100 PCIe", r"NVIDIA H100 PCIe"),
    ("H100 NVL", r"NVIDIA H100 NVL"),
    ("H200 SXM", r"NVIDIA H200( 141GB HBM3e)?"),
    ("H200 NVL", r"NVIDIA H200 NVL"),
    ("A100 SXM4", r"NVIDIA A100-SXM4-(40|80)GB"),
    ("A100 PCIe", r"NVIDIA A100-PCIE-40GB|NVIDIA A100 80GB PCIe"),
    ("A40", r"NVIDIA A40"),
    ("RTX 4090", r"NVIDIA GeForce RTX 4090"),
)


def gpu_sku(device_name: str | None) -> str | None:
    """The SKU of a device name, or None for a card this table does not know."""
    for sku, pattern in GPU_SKUS:
        if device_name and re.fullmatch(pattern, device_name.strip(), re.IGNORECASE):
            return sku
    return None


HOPPER_SKUS = ("H100 SXM5", "H100 PCIe", "H100 NVL", "H200 SXM", "H200 NVL")

# Floors the reference itself passes (tests/smoke/test_attention_bench.py holds each against the figures of
# smoke/published.py). The FA3 paper (Shah et al. 2024, Figure 5, H100 SXM5, FP16 forward): FA3 over
# FA2 is 1.42x at its smallest from seqlen 2k (head dim 64, causal, 2k), 1.45x (64, full, 2k).
BENCH_FLOORS: tuple[BenchFloor, ...] = (
    BenchFloor(
        ("H100 SXM5", "H200 SXM"),
        "kernel.flash-attn3",
        0.90,
        "paper",
        "the paper's FA3 figures are an H100 SXM5's; the H200 SXM has its SMs and clocks (and more "
        "memory bandwidth); under 90% points at clocks, power or the kernel build",
    ),
    BenchFloor(
        HOPPER_SKUS,
        "kernel.flash-attn3",
        1.3,
        "sdpa.flash",
        "FA3's reason to be on Hopper: the paper's FA3 is 1.42-2.3x its FA2 from seqlen 2k (torch's "
        "flash backend is FA2's kernel); 1.3x leaves room for torch's build of it and run-to-run noise",
        archs=("sm_90",),
    ),
    BenchFloor(
        ("A100 SXM4", "A100 PCIe", "A40", "RTX 4090"),
        "kernel.flash-attn2",
        0.9,
        "sdpa.flash",
        "the same FlashAttention-2 algorithm as torch's flash backend: a slower build is a regression",
        archs=("sm_80", "sm_86", "sm_89"),
    ),
)
