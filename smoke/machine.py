"""What a benchmark ran on: the GPU (name, SMs, clocks, power limit, driver from nvidia-smi), torch,
CUDA, cuDNN and the CPU."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    import torch

    info: dict[str, Any] = {
        "hostname": platform.node(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        major, minor = torch.cuda.get_device_capability()
        info.update(
            gpu=props.name,
            arch=f"sm_{major}{minor}",
            sm_count=props.multi_processor_count,
            memory_bytes=props.total_memory,
            **nvidia_smi(),
        )
    return info


NVIDIA_SMI_FIELDS = {
    "driver_version": "driver",
    "clocks.sm": "sm_clock_mhz",
    "clocks.max.sm": "sm_clock_max_mhz",
    "clocks.mem": "memory_clock_mhz",
    "clocks.max.mem": "memory_clock_max_mhz",
    "power.limit": "power_limit_w",
    "power.max_limit": "power_max_limit_w",
    "pstate": "pstate",
    "temperature.gpu": "temperature_c",
}


def nvidia_smi() -> dict[str, Any]:
    """Clocks, power limit and driver of GPU 0 (nvidia-smi ships with the driver)."""
    binary = shutil.which("nvidia-smi")
    if binary is None:
        return {"nvidia_smi": "not found"}
    query = ",".join(NVIDIA_SMI_FIELDS)
    try:
        done = subprocess.run(
            [binary, f"--query-gpu={query}", "--format=csv,noheader,nounits", "--id=0"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return {"nvidia_smi": f"{type(exc).__name__}: {exc}"[:300]}
    return parse_nvidia_smi(done.stdout)


def parse_nvidia_smi(text: str) -> dict[str, Any]:
    values = [v.strip() for v in text.strip().splitlines()[0].split(",")] if text.strip() else []
    out: dict[str, Any] = {}
    for (_, key), value in zip(NVIDIA_SMI_FIELDS.items(), values, strict=False):
        if value in ("", "[N/A]", "N/A", "[Not Supported]"):
            continue
        try:
            out[key] = float(value) if key not in ("driver", "pstate") else value
        except ValueError:
            out[key] = value
    return out


def _cpu_model() -> str | None:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or None
