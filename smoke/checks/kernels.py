"""The image's kernels lock (written at render, completed by the bake step) and the offline load of
each kernel from the directory the bake recorded."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class KernelEntry:
    """One kernel of the image's kernels lock (written at render, completed by the bake step)."""

    name: str  # e.g. flash-attn3
    repo_id: str  # e.g. kernels-community/vllm-flash-attn3
    revision: str  # a pinned revision: `version=` cannot resolve offline
    function: str  # e.g. flash_attn_func: (q, k, v in (batch, seq, heads, dim), causal=...) -> out
    archs: tuple[str, ...]  # GPU archs it runs on; empty: any device, the CPU included
    flash_attention: int | None = None
    local_path: str | None = None  # the baked build variant's directory (the bake step writes it)
    commit: str | None = None  # the commit a Hub revision resolved to when baked


def read_lock(path: Path | None) -> list[KernelEntry]:
    if path is None or not path.is_file():
        return []
    entries = json.loads(path.read_text())["kernels"]
    return [KernelEntry(**{**e, "archs": tuple(e.get("archs", ()))}) for e in entries]


def load_kernel(entry: KernelEntry) -> Any:
    """Through the real `kernels` loader, offline, from the directory the bake step recorded:
    independent of the Hub cache's layout (huggingface_hub 1.22 and later refuse an incomplete
    snapshot offline) and of the Hub."""
    os.environ["HF_HUB_OFFLINE"] = "1"  # this check's own process: set before kernels is imported
    if not entry.local_path:
        raise FileNotFoundError(f"the kernels lock records no baked directory for {entry.repo_id}")
    from kernels import get_local_kernel

    return get_local_kernel(Path(entry.local_path), trust_remote_code=[entry.repo_id])
