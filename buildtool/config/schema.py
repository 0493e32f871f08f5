"""The JSON Schema of matrix.yaml, generated from the model's key table (keys.SECTIONS) and the
policy rules' options, and shipped as schema/matrix.schema.json for editors: a matrix starting with
`# yaml-language-server: $schema=schema/matrix.schema.json` gets completion and checks in any editor
with the YAML language server. `buildtool schema` writes it; a test keeps the shipped file current.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from buildtool.config.keys import SECTIONS

SCHEMA_PATH = Path("schema") / "matrix.schema.json"
_TYPES = {int: "integer", float: "number", str: "string", bool: "boolean"}


def _definition_name(section: str) -> str:
    return section.replace(" ", "-")


def _resolve(schema: Any) -> Any:
    """{"$ref": "<section>"} -> {"$ref": "#/$defs/<section>"}, everywhere in a fragment."""
    if isinstance(schema, dict):
        return {
            k: f"#/$defs/{_definition_name(v)}" if k == "$ref" else _resolve(v) for k, v in schema.items()
        }
    if isinstance(schema, list):
        return [_resolve(v) for v in schema]
    return schema


def _object(section: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    keys = SECTIONS[section]
    properties = {name: _resolve(key.json_schema()) for name, key in keys.items()}
    properties.update(extra or {})
    required = [name for name, key in keys.items() if key.required]
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


def json_schema() -> dict[str, Any]:
    from buildtool.policy import OPTIONS, RULES

    owner = {option: r.name for r in RULES.values() for option in r.options}
    rule_options = {
        name: {"type": _TYPES[option.kind], "description": f"{option.help} (rule {owner.get(name, '?')})"}
        for name, option in sorted(OPTIONS.items())
    }
    definitions = {
        _definition_name(s): _object(s, rule_options if s == "policy" else None)
        for s in SECTIONS
        if s != "matrix file"
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://github.com/runpod-images/runpod-images/schema/matrix.schema.json",
        "title": "matrix.yaml (buildtool)",
        "description": "images x Tier-1 bases x GPU targets; docs/matrix.md",
        **_object("matrix file"),
        "$defs": definitions,
    }


def schema_text() -> str:
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"
