"""RunPod serverless worker: text to image with diffusers, answered in worker-comfyui's shape
({"images": [{"filename", "type": "base64", "data"}], "errors": []}), so clients can switch.

The pipeline loads once, at module level, from the network volume (MODEL_VOLUME_PATH, under
/runpod-volume). A volume without the `.models_provisioned` sentinel is provisioned first: the
first worker downloads MODEL_ID there from the Hugging Face Hub (HF_TOKEN, a RunPod secret, for
gated models) and writes the sentinel last; every later worker finds it and reuses the volume.

An endpoint scales out several workers at once onto one empty volume. One of them claims the
download (`.<name>.provisioning`, created exclusively beside the model, its mtime kept fresh while it
downloads); the others wait for the sentinel. The download goes to a staging directory renamed into
place whole, so no worker ever loads a half-written model. A claim not refreshed for
PROVISION_STALE_SECONDS (its worker died) is taken over.
"""

from __future__ import annotations

import base64
import io
import os
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Any

import runpod
import torch
from diffusers import AutoPipelineForText2Image

VOLUME_PATH = Path(os.environ.get("MODEL_VOLUME_PATH", "/runpod-volume/models/stable-diffusion-v1-5"))
MODEL_ID = os.environ.get("MODEL_ID", "stable-diffusion-v1-5/stable-diffusion-v1-5")
SENTINEL = ".models_provisioned"
PROVISION_STALE_SECONDS = float(os.environ.get("PROVISION_STALE_SECONDS", "120"))
PROVISION_WAIT_SECONDS = float(os.environ.get("PROVISION_WAIT_SECONDS", "3600"))
LIMITS = {"width": (8, 2048), "height": (8, 2048), "num_inference_steps": (1, 150), "num_images": (1, 8)}
SEED_RANGE = (0, 2**63 - 1)  # torch.Generator.manual_seed takes a 64-bit seed
GUIDANCE_RANGE = (0.0, 50.0)  # a NaN or infinity compares false: refused too


def provision(path: Path) -> Path:
    """The model on the volume: downloaded once, by the one worker that claims it."""
    claim = path.with_name(f".{path.name}.provisioning")
    deadline = time.monotonic() + PROVISION_WAIT_SECONDS
    while not (path / SENTINEL).is_file():
        try:
            descriptor = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
            continue
        except FileExistsError:
            if _stale(claim):
                print(f"provision: {claim} is stale (its worker died?); taking it over", flush=True)
                claim.unlink(missing_ok=True)
                continue
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{path}: another worker has been provisioning it for over "
                    f"{PROVISION_WAIT_SECONDS:.0f} s (claim {claim}); raise PROVISION_WAIT_SECONDS "
                    "or remove the claim if no worker is downloading"
                ) from None
            time.sleep(2)
            continue
        with os.fdopen(descriptor, "w") as handle:
            handle.write(f"{socket.gethostname()} {os.getpid()}\n")
        try:
            if not (path / SENTINEL).is_file():  # another worker may have finished meanwhile
                _download(path, claim)
        finally:
            claim.unlink(missing_ok=True)
    return path


def _stale(claim: Path) -> bool:
    try:
        return time.time() - claim.stat().st_mtime > PROVISION_STALE_SECONDS
    except FileNotFoundError:
        return False


def _download(path: Path, claim: Path) -> None:
    """MODEL_ID into a staging directory, the sentinel into it, then renamed into place whole."""
    from huggingface_hub import snapshot_download

    staging = path.with_name(f".{path.name}.partial-{socket.gethostname()}-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    done = threading.Event()

    def heartbeat() -> None:  # keeps the claim fresh, so that waiting workers do not take it over
        while not done.wait(PROVISION_STALE_SECONDS / 4):
            os.utime(claim)

    beating = threading.Thread(target=heartbeat, daemon=True)
    beating.start()
    try:
        snapshot_download(MODEL_ID, local_dir=staging, token=os.environ.get("HF_TOKEN") or None)
        (staging / SENTINEL).write_text(MODEL_ID + "\n")
        if path.exists():  # no sentinel: an interrupted copy, or files put there by hand; kept aside
            aside = path.with_name(f".{path.name}.without-sentinel-{int(time.time())}")
            path.rename(aside)
            print(f"provision: {path} had no {SENTINEL}; moved it to {aside}", flush=True)
        staging.rename(path)
    finally:
        done.set()
        shutil.rmtree(staging, ignore_errors=True)


DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
PIPELINE = AutoPipelineForText2Image.from_pretrained(
    str(provision(VOLUME_PATH)), dtype=torch.float16 if DEVICE == "cuda" else torch.float32
).to(DEVICE)


def settings(job_input: object) -> dict[str, Any]:
    """The job's settings, checked; ValueError says what is wrong."""
    if not isinstance(job_input, dict):
        raise ValueError('input must be an object, such as {"prompt": "a lighthouse at dusk"}')
    prompt = job_input.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("input.prompt must be a non-empty string")
    chosen: dict[str, Any] = {
        "width": 512,
        "height": 512,
        "num_inference_steps": 25,
        "num_images": 1,
        "seed": 0,
        **{k: job_input[k] for k in (*LIMITS, "seed") if k in job_input},
    }
    for key, (low, high) in {**LIMITS, "seed": SEED_RANGE}.items():
        value = chosen[key]
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise ValueError(f"input.{key} must be an integer from {low} to {high}, not {value!r}")
    if chosen["width"] % 8 or chosen["height"] % 8:
        raise ValueError("input.width and input.height must be multiples of 8")
    negative = job_input.get("negative_prompt")
    if negative is not None and not isinstance(negative, str):
        raise ValueError(f"input.negative_prompt must be a string, not {negative!r}")
    guidance = job_input.get("guidance_scale", 7.5)
    low, high = GUIDANCE_RANGE
    if not isinstance(guidance, int | float) or isinstance(guidance, bool) or not low <= guidance <= high:
        raise ValueError(f"input.guidance_scale must be a number from {low:g} to {high:g}, not {guidance!r}")
    chosen.update(prompt=prompt, negative_prompt=negative, guidance_scale=float(guidance))
    return chosen


def handler(job: dict[str, Any]) -> dict[str, Any]:
    try:
        wanted = settings(job.get("input"))
    except (ValueError, TypeError) as exc:
        return {"error": str(exc)}
    generator = torch.Generator(device=DEVICE).manual_seed(wanted["seed"])
    result = PIPELINE(
        wanted["prompt"],
        negative_prompt=wanted["negative_prompt"],
        width=wanted["width"],
        height=wanted["height"],
        num_inference_steps=wanted["num_inference_steps"],
        guidance_scale=wanted["guidance_scale"],
        num_images_per_prompt=wanted["num_images"],
        generator=generator,
    )
    images = []
    for number, picture in enumerate(result.images, start=1):
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        data = base64.b64encode(buffer.getvalue()).decode("ascii")
        images.append(
            {"filename": f"{job.get('id', 'job')}_{number:05d}.png", "type": "base64", "data": data}
        )
    return {"images": images, "errors": []}


if __name__ == "__main__":
    runpod.serverless.start({"handler": handler})
