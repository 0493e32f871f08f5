"""What a benchmark ran on: the GPU (name, SMs, clocks, power limit, driver from nvidia-smi), torch,
CUDA, cuDNN and the CPU."""

from __future__ import annotations

import os
import platform
import re
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
            **nvidia_smi(smi_ids(getattr(props, "uuid", None), _pci_address(props))),
        )
    return info


def smi_ids(uuid: object, pci: tuple[int, int, int] | None = None) -> tuple[str, ...]:
    """How nvidia-smi names torch's device 0. Not by index: CUDA_VISIBLE_DEVICES renumbers what
    torch sees, and CUDA orders fastest first where nvidia-smi orders by PCI bus. torch's UUID names
    the device itself: GPU-<uuid>, or MIG-<uuid> for a MIG instance; then its PCI address (domain,
    bus, device), which names a MIG instance's GPU. Without either, nothing."""
    text = str(uuid or "").removeprefix("GPU-").removeprefix("MIG-")
    ids: tuple[str, ...] = ()
    if re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", text):
        ids = (f"GPU-{text}", f"MIG-{text}")
    if pci is not None:
        domain, bus, device = pci
        ids += (f"{domain:08X}:{bus:02X}:{device:02X}.0",)
    return ids


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


def nvidia_smi(ids: tuple[str, ...]) -> dict[str, Any]:
    """Clocks, power limit and driver of the GPU torch ran on, by the first of `ids` nvidia-smi
    knows (it ships with the driver); what went wrong, under "nvidia_smi", when none answers."""
    binary = shutil.which("nvidia-smi")
    if binary is None:
        return {"nvidia_smi": "not found"}
    if not ids:  # another GPU's clocks would be worse than none
        return {"nvidia_smi": "not asked: torch gave no UUID or PCI address to name its device by"}
    query = ",".join(NVIDIA_SMI_FIELDS)
    errors = []
    for gpu in ids:
        try:
            done = subprocess.run(
                [binary, f"--query-gpu={query}", "--format=csv,noheader,nounits", f"--id={gpu}"],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            return {"nvidia_smi": f"{type(exc).__name__}: {exc}"[:300]}
        if done.returncode == 0 and done.stdout.strip():
            return {**parse_nvidia_smi(done.stdout), "nvidia_smi_id": gpu}
        errors.append(f"{gpu}: {(done.stderr or done.stdout).strip() or f'exit {done.returncode}'}")
    return {"nvidia_smi": "; ".join(errors)[:300]}


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


def _pci_address(props: Any) -> tuple[int, int, int] | None:
    domain, bus, device = (getattr(props, f"pci_{name}_id", None) for name in ("domain", "bus", "device"))
    if isinstance(domain, int) and isinstance(bus, int) and isinstance(device, int):
        return (domain, bus, device)
    return None


def _cpu_model() -> str | None:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or None
