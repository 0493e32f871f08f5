"""The workers' input checks, without their models: each handler module loads a model (or starts a
server) when imported, so its checking functions are taken from its source and run alone. The same
jobs run through the real handlers inside the built images in test_end_to_end."""

from __future__ import annotations

import ast
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO


def functions_of(handler: Path, *names: str, **namespace: Any) -> dict[str, Callable[..., Any]]:
    """The named functions and constants of a handler's source, run in `namespace`."""
    tree = ast.parse(handler.read_text())
    wanted = [
        node
        for node in tree.body
        if (isinstance(node, ast.FunctionDef) and node.name in names)
        or (isinstance(node, ast.Assign) and any(getattr(t, "id", None) in names for t in node.targets))
    ]
    assert len(wanted) == len(names), f"{handler} lacks one of {names}"
    scope: dict[str, Any] = {"Any": Any, **namespace}
    exec(compile(ast.Module(wanted, type_ignores=[]), str(handler), "exec"), scope)
    return {name: scope[name] for name in names}


DIFFUSION = functions_of(
    REPO / "images" / "worker-diffusion" / "app" / "handler.py",
    "settings",
    "LIMITS",
    "SEED_RANGE",
    "GUIDANCE_RANGE",
)["settings"]
VLLM_HANDLER = REPO / "images" / "worker-vllm" / "app" / "handler.py"
VLLM = functions_of(VLLM_HANDLER, "request_of", "ROUTES", SERVED_NAME="tiny")["request_of"]
OBJECT = "input must be an object"


@pytest.mark.parametrize(
    ("job_input", "says"),
    [
        ("a lighthouse", OBJECT),
        (None, OBJECT),
        (["a lighthouse"], OBJECT),
        ({"prompt": "  "}, "input.prompt must be a non-empty string"),
        ({"prompt": "p", "seed": 2**70}, "input.seed must be an integer from 0 to 9223372036854775807"),
        ({"prompt": "p", "seed": -1}, "input.seed must be an integer from 0 to"),
        ({"prompt": "p", "seed": True}, "input.seed must be an integer"),
        ({"prompt": "p", "seed": "7"}, "input.seed must be an integer"),
        ({"prompt": "p", "guidance_scale": "high"}, "input.guidance_scale must be a number from 0 to 50"),
        ({"prompt": "p", "guidance_scale": math.nan}, "input.guidance_scale must be a number from 0 to 50"),
        ({"prompt": "p", "guidance_scale": math.inf}, "input.guidance_scale must be a number from 0 to 50"),
        ({"prompt": "p", "negative_prompt": ["x"]}, "input.negative_prompt must be a string"),
        ({"prompt": "p", "width": 12}, "multiples of 8"),
        ({"prompt": "p", "num_images": 9}, "input.num_images must be an integer from 1 to 8"),
    ],
)
def test_a_diffusion_job_with_a_bad_setting_is_refused_naming_it(job_input: object, says: str) -> None:
    with pytest.raises(ValueError) as raised:
        DIFFUSION(job_input)
    assert says in str(raised.value)


def test_a_diffusion_job_gets_the_defaults_it_leaves_out() -> None:
    chosen = DIFFUSION({"prompt": "a lighthouse", "guidance_scale": 3, "seed": 2**63 - 1})
    assert chosen == {
        "prompt": "a lighthouse",
        "negative_prompt": None,
        "width": 512,
        "height": 512,
        "num_inference_steps": 25,
        "num_images": 1,
        "seed": 2**63 - 1,
        "guidance_scale": 3.0,
    }


@pytest.mark.parametrize(
    ("job_input", "says"),
    [
        ("hello", OBJECT),
        (["/v1/models"], OBJECT),
        ({"openai_route": "/v1/embeddings"}, "openai_route must be one of /v1/chat/completions"),
        ({"openai_route": ["/v1/models"]}, "openai_route must be one of"),
        ({"openai_input": "hi"}, "openai_input must be an object"),
    ],
)
def test_a_vllm_job_that_is_no_openai_request_is_refused(job_input: object, says: str) -> None:
    with pytest.raises(ValueError) as raised:
        VLLM(job_input)
    assert says in str(raised.value)


def test_a_vllm_job_names_the_served_model_unless_it_names_one() -> None:
    route, body = VLLM({"openai_input": {"messages": [{"role": "user", "content": "hi"}]}})
    assert route == "/v1/chat/completions" and body["model"] == "tiny"
    assert VLLM({"openai_route": "/v1/completions", "prompt": "a", "model": "other"}) == (
        "/v1/completions",
        {"model": "other", "prompt": "a"},
    )
