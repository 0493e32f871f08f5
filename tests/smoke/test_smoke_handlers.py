"""model.handler on every handler shape the RunPod SDK runs (function, coroutine, generator, async
generator), and the output judges per kind (embeddings, text, image)."""

from __future__ import annotations

import base64
import io
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from smoke.checks import outputs
from smoke.checks.model import checks
from smoke.expect import Expectations

COMPLETION = (
    '{"choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there"}}], '
    '"usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}'
)


def run(tmp_path: Path, source: str, **expect: object) -> dict[str, object]:
    handler = tmp_path / "handler.py"
    handler.write_text(textwrap.dedent(source))
    found = {c.name: c for c in checks(Expectations(handler=handler, sample_input={"x": 1}, **expect))}  # type: ignore[arg-type]
    return {"status": found["model.handler"].status, "message": found["model.handler"].message}


def test_an_async_generator_that_yields_nothing_fails(tmp_path: Path) -> None:
    source = """
        async def handler(job):
            if False:
                yield {}
    """
    result = run(tmp_path, source, output_kind="text")
    assert result == {"status": "fail", "message": "the handler is a generator that yielded nothing"}


def test_an_async_generator_streaming_openai_chunks_passes_as_text(tmp_path: Path) -> None:
    source = """
        async def handler(job):
            for word in ("Hel", "lo"):
                yield {"choices": [{"index": 0, "delta": {"content": word}}]}
            yield {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}
    """
    result = run(tmp_path, source, output_kind="text")
    assert result["status"] == "pass", result
    assert "5 characters of text in 3 chunk(s)" in str(result["message"])


def test_a_coroutine_handler_is_awaited_and_judged(tmp_path: Path) -> None:
    source = """
        async def handler(job):
            return {"embeddings": [[0.1, 0.2, 0.3]] * 2}
    """
    assert run(tmp_path, source, output_shape=(2, 3))["status"] == "pass"
    assert run(tmp_path, source, output_shape=(2, 4))["message"].startswith(
        "output shape (2, 3), expected (2, 4)"
    )  # type: ignore[union-attr]


def test_a_sync_generator_and_an_error_answer(tmp_path: Path) -> None:
    source = f"""
        def handler(job):
            yield {COMPLETION}
    """
    assert run(tmp_path, source, output_kind="text")["status"] == "pass"
    error = """
        def handler(job):
            return {"error": "model not ready"}
    """
    result = run(tmp_path, error, output_kind="text")
    assert result["status"] == "fail" and "model not ready" in str(result["message"])


def png(pixels: np.ndarray, kind: str = "PNG") -> str:
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, format=kind)
    return base64.b64encode(buffer.getvalue()).decode()


def images(data: str) -> dict[str, object]:
    return {"images": [{"filename": "out_00001_.png", "type": "base64", "data": data}], "errors": []}


def test_the_image_judge_decodes_sizes_and_refuses_constant_pictures() -> None:
    expect = Expectations(output_kind="image", output_shape=(32, 24))
    noise = np.random.default_rng(0).integers(0, 255, (24, 32, 3))
    passed, message, data = outputs.judge(images(png(noise)), expect)
    assert passed and data == {"sizes": [[32, 24]]}, message
    assert not outputs.judge(images(png(np.full((24, 32, 3), 7))), expect)[0]
    assert "is JPEG, not PNG" in outputs.judge(images(png(noise, "JPEG")), expect)[1]
    assert "does not decode" in outputs.judge(images("bm90IGFuIGltYWdl"), expect)[1]
    assert (
        "expected [16, 16]"
        in outputs.judge(images(png(noise)), Expectations(output_kind="image", output_shape=(16, 16)))[1]
    )
    assert "no images" in outputs.judge({"images": [], "errors": []}, expect)[1]


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ({"choices": [{"message": {"content": " "}}], "usage": {"completion_tokens": 1}}, "holds no text"),
        ({"choices": [{"message": {"content": "hi"}}]}, "has no usage"),
        ({"choices": [{"text": "hi"}], "usage": {"completion_tokens": 0}}, "no completion tokens"),
        ({"output": "hi"}, "not an OpenAI completion"),
    ],
)
def test_the_text_judge_wants_text_and_token_counts(answer: object, message: str) -> None:
    passed, said, _ = outputs.judge(answer, Expectations(output_kind="text"))
    assert not passed and message in said


# --- model.serve: the worker's real entry, the RunPod SDK's local API (runpod 1.12.0, as the images) ---

WORKER = """
import runpod

{handler}

if __name__ == "__main__":
    runpod.serverless.start({{"handler": handler{extra}}})
"""


def serve(tmp_path: Path, handler: str, extra: str = "", **expect: object) -> object:
    from smoke.checks import serve

    path = tmp_path / "handler.py"
    path.write_text(WORKER.format(handler=textwrap.dedent(handler), extra=extra))
    return serve.check(Expectations(handler=path, sample_input={"texts": ["a", "b"]}, **expect))  # type: ignore[arg-type]


def test_a_sync_worker_answers_runsync_and_run_status(tmp_path: Path) -> None:
    handler = """
        def handler(job):
            return {"embeddings": [[0.5, 0.25]] * len(job["input"]["texts"])}
    """
    result = serve(tmp_path, handler, output_shape=(2, 2))
    assert result.status == "pass", result.message  # type: ignore[attr-defined]
    assert result.data["async_route"] == "status" and result.data["startup_seconds"] > 0  # type: ignore[attr-defined]


def test_an_async_generator_worker_streams(tmp_path: Path) -> None:
    handler = f"""
        async def handler(job):
            yield {COMPLETION}
    """
    result = serve(tmp_path, handler, ', "return_aggregate_stream": True', output_kind="text")
    assert result.status == "pass", result.message  # type: ignore[attr-defined]
    assert result.data["async_route"] == "stream"  # type: ignore[attr-defined]


def test_an_async_generator_that_yields_nothing_fails_through_the_api(tmp_path: Path) -> None:
    handler = """
        async def handler(job):
            if False:
                yield {}
    """
    result = serve(tmp_path, handler, output_kind="text")
    assert result.status == "fail"  # type: ignore[attr-defined]
    assert "/runsync answered COMPLETED with no output" in result.message  # type: ignore[attr-defined]


def test_a_worker_that_crashes_at_start_fails_with_its_last_words(tmp_path: Path) -> None:
    handler = """
        raise RuntimeError("CUDA driver initialization failed")
        def handler(job):
            return {}
    """
    result = serve(tmp_path, handler)
    assert result.status == "fail"  # type: ignore[attr-defined]
    assert "the worker exited with 1 before serving" in result.message  # type: ignore[attr-defined]
    assert "RuntimeError: CUDA driver initialization failed" in result.message  # type: ignore[attr-defined]


def test_an_error_answer_fails_through_the_api(tmp_path: Path) -> None:
    handler = """
        def handler(job):
            return {"error": "input.prompt is required"}
    """
    result = serve(tmp_path, handler, output_kind="text")
    assert result.status == "fail" and "/runsync answered FAILED: input.prompt is required" in result.message  # type: ignore[attr-defined]


def test_a_gpu_only_worker_on_a_cpu_is_skipped_where_it_stopped(tmp_path: Path) -> None:
    """vLLM on a CPU: the server process starts and stops where it needs the GPU; the check says
    so, skipped. The same worker broken by a missing module fails on any device."""
    handler = """
        STOPPED = "vllm serve exited with 1 before serving: RuntimeError: Failed to infer device type"
        raise RuntimeError(STOPPED)
        def handler(job):
            return {}
    """
    result = serve(tmp_path, handler, requires_gpu=True)
    assert result.status == "skipped"  # type: ignore[attr-defined]
    in_process = {c.name: c for c in checks(Expectations(handler=tmp_path / "handler.py", requires_gpu=True))}
    assert in_process["model.load"].status == in_process["model.handler"].status == "skipped"
    assert "Failed to infer device type" in in_process["model.load"].message
    assert result.message.startswith("needs a GPU (smoke.requires_gpu); on this CPU the worker stopped at:")  # type: ignore[attr-defined]
    assert "Failed to infer device type" in result.message  # type: ignore[attr-defined]
    broken = """
        import vllm_that_is_not_installed
        def handler(job):
            return {}
    """
    assert serve(tmp_path, broken, requires_gpu=True).status == "fail"  # type: ignore[attr-defined]
    found = {c.name: c for c in checks(Expectations(handler=tmp_path / "handler.py", requires_gpu=True))}
    assert found["model.load"].status == "fail" and "ModuleNotFoundError" in found["model.load"].message


def test_declared_imports_are_checked_in_a_fresh_interpreter() -> None:
    from smoke.checks.model import imports

    assert imports(Expectations()) == []
    [passed] = imports(Expectations(imports=("json", "runpod")))
    assert passed.status == "pass" and set(passed.data["seconds"]) == {"json", "runpod"}
    [failed] = imports(Expectations(imports=("json", "vllm_that_is_not_installed")))
    assert failed.status == "fail"
    assert "vllm_that_is_not_installed: ModuleNotFoundError: No module named" in failed.message


# vLLM's own lines, as its H100 and A100 logs print them.
VLLM_LOG = (
    "(EngineCore pid=101) INFO 03-28 00:34:16 [cuda.py:317] Using FLASH_ATTN attention backend out of "
    "potential backends: ['FLASH_ATTN', 'FLASHINFER', 'TRITON_ATTN', 'FLEX_ATTENTION'].\n"
    "(EngineCore pid=101) INFO 03-28 00:34:16 [flash_attn.py:598] Using FlashAttention version {version}\n"
)


@pytest.mark.parametrize(
    ("capability", "version", "status"),
    [
        ((9, 0), 3, "pass"),
        ((9, 0), 2, "fail"),
        ((8, 0), 2, "pass"),
        ((8, 9), 3, "fail"),
        ((12, 0), 2, "pass"),
    ],
)
def test_vllm_attention_is_read_from_its_log_on_a_gpu(
    monkeypatch: pytest.MonkeyPatch, capability: tuple[int, int], version: int, status: str
) -> None:
    from smoke.checks import serve
    from smoke.result import Check

    found = serve.server_attention(VLLM_LOG.format(version=version))
    assert found == {
        "backend": "FLASH_ATTN",
        "candidates": ["FLASH_ATTN", "FLASHINFER", "TRITON_ATTN", "FLEX_ATTENTION"],
        "flash_attention": version,
    }
    served = Check("model.serve", "pass", data={"server_attention": found})
    expect = Expectations(requires_gpu=True)
    monkeypatch.setattr(serve, "has_gpu", lambda: True)
    monkeypatch.setattr(serve, "device_capability", lambda: capability)
    result = serve.attention_check(expect, served)
    assert result is not None and result.status == status, result
    # A server that served but logged no choice fails; one that never served says why it skipped.
    assert serve.attention_check(expect, Check("model.serve", "pass")).status == "fail"  # type: ignore[union-attr]
    assert serve.attention_check(expect, Check("model.serve", "fail")).status == "skipped"  # type: ignore[union-attr]


def test_vllm_attention_is_a_gpu_check() -> None:
    from smoke.checks import serve
    from smoke.result import Check

    served = Check("model.serve", "skipped")
    assert serve.attention_check(Expectations(), served) is None  # not a model server
    skipped = serve.attention_check(Expectations(requires_gpu=True), served)
    assert skipped is not None and skipped.status == "skipped" and "runs on a GPU" in skipped.message


@pytest.mark.parametrize(
    ("peak", "requires_gpu", "status"),
    [(0, False, "fail"), (52_000_000, False, "pass"), (0, True, "skipped")],
)
def test_model_cuda_on_a_gpu_host_wants_the_model_on_the_gpu(
    monkeypatch: pytest.MonkeyPatch, peak: int, requires_gpu: bool, status: str
) -> None:
    """What torch's allocator saw after the in-process load and request: nothing means the worker
    served from the CPU on a GPU host (a diffusion worker whose DEVICE stayed "cpu")."""
    import sys
    import types

    from smoke.checks.model import ran_on_cuda
    from smoke.result import Check

    cuda = types.SimpleNamespace(
        is_available=lambda: True,
        max_memory_allocated=lambda: peak,
        get_device_name=lambda: "NVIDIA H100 80GB HBM3",
    )
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=cuda))
    result = ran_on_cuda(Expectations(requires_gpu=requires_gpu), Check("model.handler", "pass"))
    assert result.status == status, result.message
    if status == "fail":
        assert "its model ran on the CPU" in result.message
    assert ran_on_cuda(Expectations(), Check("model.handler", "fail")).status == "skipped"
