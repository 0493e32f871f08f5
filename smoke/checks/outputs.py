"""What a worker's answer must look like, per kind of output: embeddings (shape, finite), text (an
OpenAI-style completion with text and token counts), images (worker-comfyui's shape: base64 PNGs that
decode, of the size asked, not constant). Each judge returns (passed, message, data)."""

from __future__ import annotations

import base64
import binascii
import io
from typing import Any

from smoke.expect import Expectations

Verdict = tuple[bool, str, dict[str, Any]]
KINDS = ("embeddings", "text", "image", "any")


def find_array(output: Any, ndim: int) -> Any:
    """The first value of the output that is a numeric array of `ndim` dimensions."""
    import numpy as np

    values = output.values() if isinstance(output, dict) else [output]
    for value in values:
        try:
            array = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            continue
        if array.ndim == ndim:
            return array
    return None


def embeddings(output: Any, expect: Expectations) -> Verdict:
    import numpy as np

    shape = expect.output_shape
    if not shape:
        return True, "the handler answered (no output shape declared)", {}
    array = find_array(output, len(shape))
    if array is None:
        return False, f"no {len(shape)}-D numeric array in the output", {}
    data = {"shape": list(array.shape)}
    if tuple(array.shape) != shape:
        return False, f"output shape {tuple(array.shape)}, expected {shape}", data
    if not np.isfinite(array).all():
        return False, "the output holds NaN or infinity", data
    return True, f"output {tuple(array.shape)}, finite", data


def text(output: Any, expect: Expectations) -> Verdict:
    """An OpenAI completion or chat completion (or a stream's chunks, as a list), with text."""
    chunks = output if isinstance(output, list) else [output]
    pieces, usage = [], None
    for chunk in chunks:
        if isinstance(chunk, str):  # a stream of server-sent lines, as some workers forward them
            pieces.append(chunk)
            continue
        if not isinstance(chunk, dict) or not isinstance(chunk.get("choices"), list):
            return False, f"not an OpenAI completion: {str(chunk)[:200]}", {}
        for choice in chunk["choices"]:
            message = choice.get("message") or choice.get("delta") or {}
            pieces.append(str(message.get("content") or choice.get("text") or ""))
        usage = chunk.get("usage") or usage
    said = "".join(pieces)
    data: dict[str, Any] = {"characters": len(said), "chunks": len(chunks)}
    if not said.strip():
        return False, "the completion holds no text", data
    if isinstance(usage, dict):
        data["usage"] = {k: usage.get(k) for k in ("prompt_tokens", "completion_tokens", "total_tokens")}
        if not (isinstance(usage.get("completion_tokens"), int) and usage["completion_tokens"] > 0):
            return False, f"usage counts no completion tokens: {usage}", data
    elif not any(isinstance(c, str) for c in chunks):
        return False, "the completion has no usage (token counts)", data
    return True, f"{len(said)} characters of text in {len(chunks)} chunk(s)", data


def image(output: Any, expect: Expectations) -> Verdict:
    """worker-comfyui's answer: {"images": [{"filename", "type": "base64", "data"}], "errors": []}."""
    import numpy as np
    from PIL import Image

    if not isinstance(output, dict) or not isinstance(output.get("images"), list) or not output["images"]:
        return False, f"no images in the output: {str(output)[:200]}", {}
    if output.get("errors"):
        return False, f"the worker reported errors: {output['errors']}", {}
    sizes = []
    for entry in output["images"]:
        if not isinstance(entry, dict) or entry.get("type") != "base64" or not entry.get("filename"):
            return False, f"an image entry is not {{filename, type: base64, data}}: {str(entry)[:200]}", {}
        try:
            picture = Image.open(io.BytesIO(base64.b64decode(entry["data"], validate=True)))
            picture.load()
        except (binascii.Error, OSError, ValueError) as exc:
            return False, f"{entry['filename']} does not decode as an image: {exc}", {}
        if picture.format != "PNG":
            return False, f"{entry['filename']} is {picture.format}, not PNG", {}
        pixels = np.asarray(picture.convert("RGB"), dtype=np.float64)
        if pixels.std() < 1.0:
            return False, f"{entry['filename']} is a constant image (std {pixels.std():.2f})", {}
        sizes.append(list(picture.size))
    data = {"sizes": sizes}
    wanted = expect.output_shape
    if wanted and any(tuple(size) != tuple(wanted[:2]) for size in sizes):
        return False, f"image sizes {sizes}, expected {list(wanted[:2])} (width, height)", data
    return True, f"{len(sizes)} PNG image(s) {sizes[0][0]}x{sizes[0][1]}, not constant", data


def judge(output: Any, expect: Expectations) -> Verdict:
    if isinstance(output, dict) and output.get("error"):
        return False, f"the worker answered an error: {output['error']}", {}
    kind = expect.output_kind or ("embeddings" if expect.output_shape else "any")
    if kind == "any":
        return True, "the handler answered (no output kind declared)", {}
    return {"embeddings": embeddings, "text": text, "image": image}[kind](output, expect)
