"""RunPod's vendored OpenAPI description (schema/runpod-api-v2.openapi.json) as request validators."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

OPENAPI = Path(__file__).resolve().parent.parent / "schema" / "runpod-api-v2.openapi.json"


@cache
def _document() -> dict[str, Any]:
    return json.loads(OPENAPI.read_text())  # type: ignore[no-any-return]


def operation(operation_id: str) -> tuple[str, str]:
    """(METHOD, path) of an operation."""
    for path, methods in _document()["paths"].items():
        for method, op in methods.items():
            if isinstance(op, dict) and op.get("operationId") == operation_id:
                return method.upper(), path
    raise KeyError(operation_id)


def request_errors(operation_id: str, body: object) -> list[str]:
    """Every way `body` breaks the operation's request schema (OpenAPI 3.1 is JSON Schema 2020-12;
    refs resolve against the whole document)."""
    method, path = operation(operation_id)
    op = _document()["paths"][path][method.lower()]
    schema = op["requestBody"]["content"]["application/json"]["schema"]
    root = {**schema, "components": _document()["components"]}
    validator = Draft202012Validator(root)
    return sorted(
        f"{'/'.join(map(str, e.absolute_path)) or '(body)'}: {e.message}" for e in validator.iter_errors(body)
    )


def response_errors(operation_id: str, body: object, status: str = "200") -> list[str]:
    """Every way `body` breaks the operation's response schema for `status`: what a stand-in for
    RunPod answers must be what RunPod documents."""
    method, path = operation(operation_id)
    op = _document()["paths"][path][method.lower()]
    schema = op["responses"][status]["content"]["application/json"]["schema"]
    validator = Draft202012Validator({**schema, "components": _document()["components"]})
    return sorted(
        f"{'/'.join(map(str, e.absolute_path)) or '(body)'}: {e.message}" for e in validator.iter_errors(body)
    )
