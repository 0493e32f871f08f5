"""torch / CUDA / cuDNN / driver / arch: does the image contain what its tag says, and does it run
on this host's GPU with this host's driver?"""

from __future__ import annotations

import ctypes
import functools
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from smoke.archs import arch_covered
from smoke.expect import Expectations
from smoke.result import Check, guarded


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
        return Check(name, "skipped", no_device_reason())
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


PROC_VERSION = Path("/proc/driver/nvidia/version")
LIBCUDA = "libcuda.so.1"


def _nvidia_smi(*args: str) -> str | None:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        done = subprocess.run([smi, *args], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def host_driver() -> tuple[str | None, str | None]:
    """The kernel module's version ('580.65.06') and where it was read: /proc/driver/nvidia/version,
    else nvidia-smi; (None, None) without a driver."""
    if PROC_VERSION.is_file():
        found = parse_driver_version(PROC_VERSION.read_text())
        if found:
            return found, str(PROC_VERSION)
    said = _nvidia_smi("--query-gpu=driver_version", "--format=csv,noheader")
    first = said.strip().splitlines()[0].strip() if said and said.strip() else ""
    if re.fullmatch(r"\d+\.\d+(\.\d+)?", first):
        return first, "nvidia-smi --query-gpu=driver_version"
    return None, None


def host_driver_version() -> str | None:
    return host_driver()[0]


def driver_api_version() -> tuple[int | None, str | None]:
    """The CUDA driver API version the driver provides (13000 for CUDA 13.0) and its source: libcuda's
    own cuDriverGetVersion (through ctypes: no CUDA context, no private torch API), else the 'CUDA
    Version' nvidia-smi prints; (None, None) when neither is there."""
    try:
        library = ctypes.CDLL(LIBCUDA)
        version = ctypes.c_int(0)
        path = _mapped_libcuda()
        # A compat libcuda (/usr/local/cuda/compat, ahead on LD_LIBRARY_PATH) answers its own version,
        # not the driver's: the libcuda check names that; here nvidia-smi is asked instead.
        trusted = "/compat/" not in path
        if trusted and library.cuDriverGetVersion(ctypes.byref(version)) == 0 and version.value > 0:
            return version.value, f"{path or LIBCUDA} cuDriverGetVersion"
    except (OSError, AttributeError):
        pass
    said = _nvidia_smi()
    match = re.search(r"CUDA Version:\s*(\d+)\.(\d+)", said or "")
    if match:
        return int(match[1]) * 1000 + int(match[2]) * 10, "nvidia-smi"
    return None, None


def _mapped_libcuda() -> str:
    """The libcuda.so file this process has mapped, or '' (not Linux, or none yet)."""
    try:
        maps = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return ""
    found = sorted({line.split()[-1] for line in maps if "libcuda.so" in line and "/" in line})
    return os.path.realpath(found[0]) if found else ""


def no_device_reason() -> str:
    """Why torch sees no CUDA device: no driver at all, or a driver torch cannot use."""
    if host_driver()[0] is None:
        return f"no driver (no {PROC_VERSION}, no nvidia-smi)"
    return "no CUDA device visible to torch (a driver is installed)"


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


def _cuda_text(api: int) -> str:
    return f"{api // 1000}.{api % 1000 // 10}"


def driver_supports_cuda(expect: Expectations) -> Check:
    """The host's driver against the CUDA torch was built for (its driver API version) and against the
    driver floor. Either source alone still judges what it can; neither: skipped, no driver."""
    import torch

    name = "environment.driver"
    driver, driver_source = host_driver()
    api, api_source = driver_api_version()
    # Without the kernel module a libcuda can still answer (a compat libcuda.so in the image): that
    # counts only where torch really reaches a device through it.
    if driver is None and (api is None or not torch.cuda.is_available()):
        return Check(name, "skipped", f"no driver (no {PROC_VERSION}, no nvidia-smi)")
    data = {
        "driver": driver,
        "driver_source": driver_source,
        "driver_cuda_api": api,
        "driver_cuda_api_source": api_source,
        "torch_cuda": torch.version.cuda,
        "floor": expect.driver_floor,
    }
    needed = _version_tuple(torch.version.cuda or "0.0")[:2]
    problems = []
    if api is not None and (api // 1000, api % 1000 // 10) < needed:
        problems.append(
            f"the driver provides CUDA {_cuda_text(api)}, torch needs {torch.version.cuda}: "
            "use a host with a newer driver"
        )
    if expect.driver_floor and driver and _version_tuple(driver) < _version_tuple(expect.driver_floor):
        problems.append(
            f"driver {driver} is older than {expect.driver_floor}, the floor for CUDA {torch.version.cuda}"
        )
    if problems:
        return Check(name, "fail", "; ".join(problems), data=data)
    said = f"driver {driver or '?'}"
    said += f" provides CUDA {_cuda_text(api)} ({api_source})" if api is not None else ""
    unknown = []
    if api is None:
        unknown.append("its CUDA API version is unknown (no libcuda.so.1, no nvidia-smi)")
    if driver is None:
        unknown.append("its version is unknown: the floor is not judged")
    return Check(name, "pass", said + (": " + "; ".join(unknown) if unknown else ""), data=data)


def libcuda_source() -> Check:
    """After CUDA init, libcuda.so must be the host driver's, not /usr/local/cuda/compat's (whose
    libcuda shadows the host's and breaks CUDA 13 images on driver 580 hosts: seed bug 2)."""
    import torch

    name = "environment.libcuda"
    if not torch.cuda.is_available():
        return Check(name, "skipped", no_device_reason())
    torch.cuda.init()
    maps = Path("/proc/self/maps").read_text().splitlines()
    loaded = sorted({line.split()[-1] for line in maps if "libcuda.so" in line and "/" in line})
    driver = host_driver_version()
    resolved = [os.path.realpath(p) for p in loaded]
    ok, message = libcuda_verdict(loaded, resolved, driver)
    return Check(name, "pass" if ok else "fail", message, data={"libcuda": resolved, "driver": driver})


CHECKS: tuple[tuple[str, Callable[[Expectations], Check]], ...] = (
    ("environment.torch-version", torch_version),
    ("environment.cuda-version", cuda_version),
    ("environment.cudnn-version", cudnn_version),
    ("environment.device-arch", lambda _: device_arch()),
    ("environment.driver", driver_supports_cuda),
    ("environment.libcuda", lambda _: libcuda_source()),
)


def checks(expect: Expectations) -> list[Check]:
    """Each check on its own: one that raises fails alone, with its traceback's last line."""
    return [guarded(name, functools.partial(run, expect)) for name, run in CHECKS]
