"""model.serve: the worker through its real entry, as RunPod's SDK runs it locally.

`python handler.py --rp_serve_api` starts the worker's own `runpod.serverless.start(...)` (its
module-level load, any server it starts and waits for) behind the SDK's local API. The check posts the
image's sample input to `/runsync` (the SDK collects a generator's yields), then to `/run` and follows
the job by `/stream/<id>` (generator handlers) or `/status/<id>` (the others), as a client would.
Sync, async and generator handlers go through the same path; an empty answer, an error, or a worker
that exits fails the check, with the tail of its log.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from typing import Any

from smoke.checks import outputs
from smoke.expect import Expectations
from smoke.result import Check, crashed, guarded

NAME = "model.serve"
STARTUP_SECONDS = float(os.environ.get("SMOKE_SERVE_TIMEOUT", "900"))  # a vLLM engine can take minutes
REQUEST_SECONDS = 600.0
NO_HANDLER = "the image declares no handler (SMOKE_HANDLER): not a serverless worker"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def post(url: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body or {}).encode(), method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=REQUEST_SECONDS) as response:
        answer = json.loads(response.read())
    return answer if isinstance(answer, dict) else {"answer": answer}


class WorkerExited(Exception):
    pass


def wait_until_serving(process: subprocess.Popen[bytes], base: str, deadline: float) -> float:
    started = time.perf_counter()
    while time.perf_counter() < deadline:
        if process.poll() is not None:
            raise WorkerExited(f"the worker exited with {process.returncode} before serving")
        try:
            with urllib.request.urlopen(base + "/openapi.json", timeout=5) as response:
                if response.status == 200:
                    return time.perf_counter() - started
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
    raise TimeoutError(f"the worker did not serve within {STARTUP_SECONDS:.0f} s")


def answer_output(answer: dict[str, Any], route: str) -> tuple[bool, Any, str]:
    """(completed, output, why not) of a local API answer."""
    if answer.get("status") != "COMPLETED":
        return False, None, f"{route} answered {answer.get('status')}: {answer.get('error')}"
    if "stream" in answer:
        return True, [item.get("output") for item in answer["stream"]], ""
    return True, answer.get("output"), ""


def judged(output: Any, route: str, expect: Expectations) -> tuple[bool, str]:
    if output is None or output == []:
        return False, f"{route} answered COMPLETED with no output (a generator that yielded nothing?)"
    passed, message, _ = outputs.judge(output, expect)
    return passed, f"{route}: {message}"


# A worker that fails like this is broken on any device: never "needs a GPU".
BROKEN = ("ModuleNotFoundError", "ImportError", "SyntaxError", "FileNotFoundError", "NameError")


def has_gpu() -> bool:
    try:
        import torch
    except ImportError:  # a host without torch has no GPU torch can use
        return False
    return bool(torch.cuda.is_available())


def needs_gpu_here(expect: Expectations, failure: str) -> bool:
    """A worker that declares it cannot serve on a CPU, on a CPU, stopped by something other than
    a broken install (its imports, its files, its code)."""
    return expect.requires_gpu and not has_gpu() and not any(word in failure for word in BROKEN)


def gpu_reason(last: str) -> str:
    return f"needs a GPU (smoke.requires_gpu); on this CPU the worker stopped at: {last}"


def check(expect: Expectations) -> Check:
    handler = expect.handler
    if handler is None:
        return Check(
            NAME, "skipped", "the image declares no handler (SMOKE_HANDLER): not a serverless worker"
        )
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-u", str(handler), "--rp_serve_api", "--rp_api_host", "127.0.0.1"]
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            [*command, "--rp_api_port", str(port)], cwd=handler.parent, stdout=log, stderr=subprocess.STDOUT
        )
        start = time.perf_counter()
        data: dict[str, Any] = {"command": " ".join(command)}
        try:
            data["startup_seconds"] = round(wait_until_serving(process, base, start + STARTUP_SECONDS), 2)
            job = {"input": expect.sample_input or {}}
            began = time.perf_counter()
            completed, output, why = answer_output(post(base + "/runsync", job), "/runsync")
            data["runsync_seconds"] = round(time.perf_counter() - began, 3)
            if not completed:
                return Check(NAME, "fail", why, time.perf_counter() - start, data)
            passed, message = judged(output, "/runsync", expect)
            if not passed:
                return Check(NAME, "fail", message, time.perf_counter() - start, data)
            job_id = post(base + "/run", job).get("id")
            answer = post(f"{base}/stream/{job_id}")
            route = f"/run + /stream/{job_id}"
            if "Stream not supported" in str(answer.get("error")):  # not a generator: poll its status
                answer, route = post(f"{base}/status/{job_id}"), f"/run + /status/{job_id}"
            data["async_route"] = route.split(" + ")[1].split("/")[1]
            completed, output, why = answer_output(answer, route)
            passed, message = judged(output, route, expect) if completed else (False, why)
            message = f"{message} (and /runsync)"
            return Check(NAME, "pass" if passed else "fail", message, time.perf_counter() - start, data)
        except (WorkerExited, TimeoutError, urllib.error.URLError, ConnectionError, ValueError) as exc:
            log.seek(0)
            tail = log.read()[-3000:].decode("utf-8", "replace")
            data["log_tail"] = tail
            last = tail.strip().splitlines()[-1] if tail.strip() else "no output"
            if isinstance(exc, WorkerExited) and needs_gpu_here(expect, tail):
                return Check(NAME, "skipped", gpu_reason(last), time.perf_counter() - start, data)
            return Check(NAME, "fail", f"{exc}; its last line: {last}", time.perf_counter() - start, data)
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            log.seek(0)
            found = server_attention(log.read().decode("utf-8", "replace"))
            if found:
                data["server_attention"] = found


# What vLLM logs when it chooses (vllm/platforms/cuda.py, v1/attention/backends/flash_attn.py):
#   Using FLASH_ATTN attention backend out of potential backends: ['FLASH_ATTN', 'FLASHINFER', ...].
#   Using FlashAttention version 3
BACKEND_LINE = re.compile(r"Using (\w+) attention backend out of potential backends: ?([^\n]*)")
FLASH_VERSION_LINE = re.compile(r"Using FlashAttention version (\d+)")
ATTENTION = "model.attention-backend"


def server_attention(log: str) -> dict[str, Any]:
    """The attention backend a model server says it chose, and its FlashAttention version."""
    found: dict[str, Any] = {}
    if chosen := BACKEND_LINE.search(log):
        found["backend"] = chosen[1]
        found["candidates"] = re.findall(r"'(\w+)'", chosen[2])
    if version := FLASH_VERSION_LINE.search(log):
        found["flash_attention"] = int(version[1])
    return found


def device_capability() -> tuple[int, int]:
    import torch

    major, minor = torch.cuda.get_device_capability()
    return int(major), int(minor)


def attention_check(expect: Expectations, served: Check) -> Check | None:
    """GPU only, for a model server (requires_gpu): it ran FlashAttention, FA3 on sm_90 and FA2 on
    sm_80/86/89, as its log says (vLLM's own lines)."""
    if not expect.requires_gpu:
        return None
    if not has_gpu():
        return Check(ATTENTION, "skipped", "runs on a GPU: vLLM chooses its attention backend there")
    found = served.data.get("server_attention") or {}
    if "backend" not in found:
        said = "the server's log names no attention backend"
        if served.status != "pass":
            return Check(ATTENTION, "skipped", f"{said}: it did not serve", data=found)
        return Check(ATTENTION, "fail", said, data=found)
    capability = device_capability()
    wanted = 3 if capability == (9, 0) else 2 if capability in ((8, 0), (8, 6), (8, 9)) else None
    arch = f"sm_{capability[0]}{capability[1]}"
    of = ", ".join(found["candidates"])
    said = f"{found['backend']} (of {of}), FlashAttention {found.get('flash_attention')}"
    if wanted is None:
        return Check(ATTENTION, "pass", f"{said} on {arch}: no FlashAttention expectation there", data=found)
    if found["backend"] != "FLASH_ATTN" or found.get("flash_attention") != wanted:
        return Check(ATTENTION, "fail", f"{said} on {arch}; expected FLASH_ATTN with FA{wanted}", data=found)
    return Check(ATTENTION, "pass", f"{said} on {arch}", data=found)


def checks(expect: Expectations) -> list[Check]:
    """Each on its own: one that raises fails alone, with its traceback's last line."""
    served = guarded(NAME, lambda: check(expect))
    try:
        attention = attention_check(expect, served)
    except Exception as exc:
        attention = crashed(ATTENTION, exc)
    return [served] if attention is None else [served, attention]


if __name__ == "__main__":  # python -m smoke.checks.serve: this check alone, from SMOKE_* variables
    result = check(Expectations.from_env())
    print(json.dumps({"status": result.status, "message": result.message, "data": result.data}, indent=2))
    sys.exit(0 if result.status != "fail" else 1)
