"""What the image declares about itself, read from its environment (SMOKE_* variables, set by the
rendered Dockerfile) or given as options when the suite runs on a bare host."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Expectations:
    variant: str | None = None
    torch: str | None = None  # "2.11.0+cu130"
    cuda: str | None = None  # "13.0"
    cudnn: str | None = None  # "9.19"
    flash_attention: tuple[int, ...] = ()  # FlashAttention versions the image ships kernels for
    driver_floor: str | None = None  # "580.65"
    handler: Path | None = None
    sample_input: dict[str, Any] | None = None
    output_shape: tuple[int, ...] | None = None
    output_kind: str | None = None  # embeddings, text, image (smoke/checks/outputs.py)
    model_volume: str | None = None  # where the runner mounted the model's volume: load from there
    requires_gpu: bool = False  # the worker cannot serve on a CPU (vLLM)
    imports: tuple[str, ...] = ()  # modules the image must import
    kernels_lock: Path | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Expectations:
        def get(name: str) -> str | None:
            return env.get(f"SMOKE_{name}") or None

        def ints(text: str | None) -> tuple[int, ...]:
            return tuple(int(p) for p in (text or "").split(",") if p.strip())

        handler, sample, shape, lock = get("HANDLER"), get("INPUT"), get("OUTPUT_SHAPE"), get("KERNELS_LOCK")
        return cls(
            variant=get("VARIANT"),
            torch=get("TORCH"),
            cuda=get("CUDA"),
            cudnn=get("CUDNN"),
            flash_attention=ints(get("FLASH_ATTENTION")),
            driver_floor=get("DRIVER_FLOOR"),
            handler=Path(handler) if handler else None,
            sample_input=json.loads(sample) if sample else None,
            output_shape=ints(shape) if shape else None,
            output_kind=get("OUTPUT"),
            model_volume=get("MODEL_VOLUME"),
            requires_gpu=get("REQUIRES_GPU") == "1",
            imports=tuple(p.strip() for p in (get("IMPORTS") or "").split(",") if p.strip()),
            kernels_lock=Path(lock) if lock else None,
        )
