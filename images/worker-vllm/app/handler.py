"""RunPod serverless worker: an OpenAI-compatible LLM server (vLLM) behind RunPod's queue.

At module level, once per worker: `vllm serve` starts on 127.0.0.1 with the model from the network
volume (MODEL_PATH, else MODEL_VOLUME_PATH) and engine arguments from the environment, and the worker
waits until its /health answers before `runpod.serverless.start`. Each job is forwarded to the
server: `{"openai_route": "/v1/chat/completions" | "/v1/completions" | "/v1/models",
"openai_input": {...}}` (or the request body itself, for chat completions). The handler is an async
generator: a streamed request (`"stream": true`) yields each chunk as vLLM sends it, others yield
the one response; `return_aggregate_stream` gives /runsync the whole list.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import runpod

VOLUME_PATH = Path(os.environ.get("MODEL_VOLUME_PATH", "/runpod-volume/models/llm"))
MODEL = os.environ.get("MODEL_PATH") or str(VOLUME_PATH)
SERVED_NAME = os.environ.get("SERVED_MODEL_NAME") or Path(MODEL).name
HOST, PORT = "127.0.0.1", int(os.environ.get("VLLM_PORT", "8000"))
BASE_URL = f"http://{HOST}:{PORT}"
STARTUP_SECONDS = float(os.environ.get("VLLM_STARTUP_TIMEOUT", "1800"))
MAX_CONCURRENCY = int(os.environ.get("MAX_CONCURRENCY", "32"))
ROUTES = ("/v1/chat/completions", "/v1/completions", "/v1/models")

# Engine arguments from the endpoint's environment: variable -> vllm serve option.
ENGINE_OPTIONS = {
    "MAX_MODEL_LEN": "--max-model-len",
    "GPU_MEMORY_UTILIZATION": "--gpu-memory-utilization",
    "TENSOR_PARALLEL_SIZE": "--tensor-parallel-size",
    "MAX_NUM_SEQS": "--max-num-seqs",
    "DTYPE": "--dtype",
    "QUANTIZATION": "--quantization",
    "KV_CACHE_DTYPE": "--kv-cache-dtype",
}
ENGINE_FLAGS = {"ENFORCE_EAGER": "--enforce-eager", "TRUST_REMOTE_CODE": "--trust-remote-code"}


def engine_arguments(env: dict[str, str]) -> list[str]:
    arguments = []
    for variable, option in ENGINE_OPTIONS.items():
        if env.get(variable):
            arguments += [option, env[variable]]
    for variable, flag in ENGINE_FLAGS.items():
        if env.get(variable, "").lower() in ("1", "true", "yes"):
            arguments.append(flag)
    return arguments


COMMAND = [
    "vllm",
    "serve",
    MODEL,
    "--host",
    HOST,
    "--port",
    str(PORT),
    "--served-model-name",
    SERVED_NAME,
    *engine_arguments(dict(os.environ)),
]
LAST_LINES: collections.deque[str] = collections.deque(maxlen=40)


def start_server() -> subprocess.Popen[bytes]:
    """vllm serve, its output copied to the worker's (RunPod's logs), the last lines kept."""
    print("starting:", " ".join(COMMAND), flush=True)
    server = subprocess.Popen(COMMAND, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def copy() -> None:
        assert server.stdout is not None
        for raw in server.stdout:
            line = raw.decode("utf-8", "replace").rstrip()
            LAST_LINES.append(line)
            print(line, flush=True)

    threading.Thread(target=copy, daemon=True).start()
    return server


def wait_until_ready(server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            time.sleep(0.5)  # the copier's last lines
            last = next((line for line in reversed(LAST_LINES) if line.strip()), "no output")
            raise RuntimeError(f"vllm serve exited with {server.returncode} before serving: {last}")
        try:
            with urllib.request.urlopen(f"{BASE_URL}/health", timeout=5) as response:
                if response.status == 200:
                    print(f"vllm serve is ready at {BASE_URL}", flush=True)
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(1)
    server.kill()
    raise RuntimeError(f"vllm serve did not answer /health within {STARTUP_SECONDS:.0f} s")


SERVER = start_server()
wait_until_ready(SERVER)


def request_of(job_input: object) -> tuple[str, dict[str, Any]]:
    if not isinstance(job_input, dict):
        raise ValueError('input must be an object, such as {"openai_route": "/v1/models"}')
    route = job_input.get("openai_route", "/v1/chat/completions")
    body = job_input.get("openai_input", {k: v for k, v in job_input.items() if k != "openai_route"})
    if route not in ROUTES:
        raise ValueError(f"openai_route must be one of {', '.join(ROUTES)}, not {route!r}")
    if not isinstance(body, dict):
        raise ValueError("openai_input must be an object: the OpenAI request body")
    return route, {"model": SERVED_NAME, **body}


async def handler(job: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
    try:
        route, body = request_of(job.get("input", {}))
    except ValueError as exc:
        yield {"error": str(exc)}
        return
    async with httpx.AsyncClient(base_url=BASE_URL, timeout=httpx.Timeout(None, connect=10)) as client:
        if route == "/v1/models":
            yield (await client.get(route)).json()
            return
        if not body.get("stream"):
            response = await client.post(route, json=body)
            yield response.json() if response.status_code == 200 else {"error": response.text}
            return
        async with client.stream("POST", route, json=body) as response:
            if response.status_code != 200:
                yield {"error": (await response.aread()).decode("utf-8", "replace")}
                return
            async for line in response.aiter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    yield json.loads(line.removeprefix("data: "))


if __name__ == "__main__":
    try:
        runpod.serverless.start(
            {
                "handler": handler,
                "concurrency_modifier": lambda current: MAX_CONCURRENCY,
                "return_aggregate_stream": True,
            }
        )
    finally:
        SERVER.terminate()
        sys.stdout.flush()
