"""torch / CUDA / cuDNN / driver / arch: does the image contain what its tag says, and does it run
on this host's GPU with this host's driver?"""

from __future__ import annotations

import os
import re
from pathlib import Path

from smoke.archs import arch_covered
from smoke.expect import Expectations
from smoke.result import Check


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text))


def torch_version(expect: Expectations) -> Check:
    import torch

    name = "environment.torch-version"
    if expect.torch is None:
        return Check(name, "skipped", "the image declares no torch version (SMOKE_TORCH)")
    if torch.__version__ != expect.torch:
        return Check(
            name,
            "fail",
            f"torch is {torch.__version__}, the image declares {expect.torch}",
            data={"found": torch.__version__, "declared": expect.torch},
        )
    return Check(name, "pass", torch.__version__, data={"found": torch.__version__})


def cuda_version(expect: Expectations) -> Check:
    import torch

    name = "environment.cuda-version"
    built = torch.version.cuda
    image_cuda = os.environ.get("CUDA_VERSION")  # set by NVIDIA-derived bases, e.g. 13.0.0
    declared = expect.cuda
    problems = []
    if declared is not None and built != declared:
        problems.append(f"torch was built for CUDA {built}, the image declares {declared}")
    if image_cuda and built and _version_tuple(image_cuda)[:2] != _version_tuple(built)[:2]:
        problems.append(f"torch was built for CUDA {built}, the image's CUDA_VERSION is {image_cuda}")
    if declared is None and not image_cuda:
        return Check(name, "skipped", "neither SMOKE_CUDA nor CUDA_VERSION is set")
    data = {"torch.version.cuda": built, "CUDA_VERSION": image_cuda, "declared": declared}
    return Check(name, "fail" if problems else "pass", "; ".join(problems) or f"CUDA {built}", data=data)


def cudnn_version(expect: Expectations) -> Check:
    import torch

    name = "environment.cudnn-version"
    runtime = torch.backends.cudnn.version()
    if runtime is None:
        return Check(name, "skipped", "torch has no cuDNN")
    compiled = ".".join(map(str, torch._C._cudnn.getCompileVersion()[:2]))
    loaded = f"{runtime // 10000}.{runtime // 100 % 100}"
    problems = []
    if loaded != compiled:
        problems.append(f"cuDNN {loaded} is loaded, torch was built with {compiled}")
    if expect.cudnn is not None and expect.cudnn != compiled:
        problems.append(f"torch was built with cuDNN {compiled}, the image declares {expect.cudnn}")
    data = {"runtime": loaded, "compiled": compiled, "declared": expect.cudnn}
    return Check(name, "fail" if problems else "pass", "; ".join(problems) or f"cuDNN {loaded}", data=data)


def device_arch() -> Check:
    import torch

    name = "environment.device-arch"
    if not torch.cuda.is_available():
        return Check(name, "skipped", "no CUDA device")
    major, minor = torch.cuda.get_device_capability()
    arch = f"sm_{major}{minor}"
    arch_list = torch.cuda.get_arch_list()
    data = {"device": torch.cuda.get_device_name(), "arch": arch, "torch_arch_list": arch_list}
    if not arch_covered(arch, arch_list):
        return Check(
            name, "fail", f"{arch} is not in torch's arch list {arch_list}, nor covered by PTX", data=data
        )
    return Check(name, "pass", f"{data['device']} ({arch})", data=data)


def parse_driver_version(text: str) -> str | None:
    """'NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.65.06  Sun Jul 27 ...' -> '580.65.06'."""
    match = re.search(r"Kernel Module(?: for [\w-]+)?\s+(\d+\.\d+(?:\.\d+)?)", text)
    return match.group(1) if match else None


def host_driver_version() -> str | None:
    """The kernel module's version, from /proc/driver/nvidia/version (None without a driver)."""
    path = Path("/proc/driver/nvidia/version")
    return parse_driver_version(path.read_text()) if path.is_file() else None


def libcuda_verdict(mapped: list[str], resolved: list[str], driver: str | None) -> tuple[bool, str]:
    """Whether the libcuda.so mapped into the process is the host driver's: not from a compat
    directory, and (when the driver's version is known) libcuda.so.<driver version>."""
    if not mapped:
        return False, "no libcuda.so is mapped after CUDA init"
    compat = [p for p in mapped + resolved if "/compat/" in p]
    if compat:
        return False, (
            f"libcuda was loaded from {compat[0]}, not from the host driver: put "
            "/lib/x86_64-linux-gnu before /usr/local/cuda/compat on LD_LIBRARY_PATH"
        )
    if driver and not any(p.endswith(f".so.{driver}") for p in resolved):
        return False, f"libcuda {resolved} does not match the host driver {driver}"
    return True, resolved[0] if resolved else mapped[0]


def driver_supports_cuda(expect: Expectations) -> Check:
    import torch

    name = "environment.driver"
    if not torch.cuda.is_available():
        return Check(name, "skipped", "no CUDA device")
    driver = host_driver_version()
    # The driver API version the driver provides (e.g. 13000) vs the runtime torch was built for.
    provided = torch._C._cuda_getDriverVersion()
    needed = _version_tuple(torch.version.cuda or "0.0")
    data = {
        "driver": driver,
        "driver_cuda_api": provided,
        "torch_cuda": torch.version.cuda,
        "floor": expect.driver_floor,
    }
    if (provided // 1000, provided % 1000 // 10) < needed[:2]:
        return Check(
            name,
            "fail",
            f"the driver provides CUDA {provided // 1000}.{provided % 1000 // 10}, "
            f"torch needs {torch.version.cuda}: use a host with a newer driver",
            data=data,
        )
    if expect.driver_floor and driver and _version_tuple(driver) < _version_tuple(expect.driver_floor):
        return Check(
            name,
            "fail",
            f"driver {driver} is older than {expect.driver_floor}, the floor for CUDA {torch.version.cuda}",
            data=data,
        )
    return Check(
        name,
        "pass",
        f"driver {driver or '?'} provides CUDA {provided // 1000}.{provided % 1000 // 10}",
        data=data,
    )


def libcuda_source() -> Check:
    """After CUDA init, libcuda.so must be the host driver's, not /usr/local/cuda/compat's (whose
    libcuda shadows the host's and breaks CUDA 13 images on driver 580 hosts: seed bug 2)."""
    import torch

    name = "environment.libcuda"
    if not torch.cuda.is_available():
        return Check(name, "skipped", "no CUDA device")
    torch.cuda.init()
    maps = Path("/proc/self/maps").read_text().splitlines()
    loaded = sorted({line.split()[-1] for line in maps if "libcuda.so" in line and "/" in line})
    driver = host_driver_version()
    resolved = [os.path.realpath(p) for p in loaded]
    ok, message = libcuda_verdict(loaded, resolved, driver)
    return Check(name, "pass" if ok else "fail", message, data={"libcuda": resolved, "driver": driver})


def checks(expect: Expectations) -> list[Check]:
    return [
        torch_version(expect),
        cuda_version(expect),
        cudnn_version(expect),
        device_arch(),
        driver_supports_cuda(expect),
        libcuda_source(),
    ]
