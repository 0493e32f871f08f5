"""Every string of matrix.yaml, checked before it is read: no control character anywhere (a newline
in a value that reaches a Dockerfile starts a new instruction), no URL with credentials, and each
key's grammar (keys.py) for the values that reach a template. One pass, the line of each failure."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from buildtool.config.keys import SECTIONS, Grammar, Key
from buildtool.config.yamlpos import Node
from buildtool.errors import ConfigError, Location, Problem

# C0 and C1 controls, DEL, and the Unicode line and paragraph separators (a line break to some readers).
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# scheme://user[:password]@host: credentials written into a file that is committed and labelled.
URL_CREDENTIALS = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s/?#@]+@")


def _fail(path: Path, line: int, message: str, hint: str) -> ConfigError:
    return ConfigError(Problem(message, Location(path, line), hint=hint))


def _character(ch: str) -> str:
    name = {"\n": "a newline", "\r": "a carriage return", "\t": "a tab"}.get(ch)
    return name or f"U+{ord(ch):04X} ({unicodedata.name(ch, 'a control character').lower()})"


def check_free_text(text: str, what: str, path: Path, line: int) -> None:
    """What every string of the matrix must be, free text included."""
    bad = CONTROL.search(text)
    if bad:
        raise _fail(
            path,
            line,
            f"{what} holds {_character(bad.group())}: a value of matrix.yaml reaches Dockerfiles, "
            "labels and RunPod templates, where a line break ends one instruction and starts another",
            "write it on one line, without control characters",
        )
    credentials = URL_CREDENTIALS.search(text)
    if credentials:
        scheme = credentials.group().split("://")[0]
        raise _fail(
            path,
            line,
            f"{what} holds a URL with credentials ({scheme}://***@...): matrix.yaml is committed, and "
            "its values end up in image labels and reports",
            "remove the user and password from the URL; a build that needs them names a secret under "
            "the image's secrets:, and registries use docker login",
        )


def _walk_free(node: Node, path: Path, where: str) -> None:
    if isinstance(node.value, dict):
        for key, child in node.value.items():
            line = node.key_lines.get(key, child.line)
            check_free_text(str(key), f"the key '{where}{key}'" if where else "a key", path, line)
            _walk_free(child, path, f"{where}{key}.")
    elif isinstance(node.value, list):
        for index, child in enumerate(node.value):
            _walk_free(child, path, f"{where.rstrip('.')}[{index}].")
    elif isinstance(node.value, str):
        check_free_text(node.value, f"{where.rstrip('.') or 'a value'}", path, node.line)


def _match(grammar: Grammar, text: str, what: str, path: Path, line: int) -> None:
    if not re.fullmatch(grammar.pattern, text):
        raise _fail(path, line, f"{what} '{text}' is not of the allowed form", f"write {grammar.says}")


def _walk_section(node: Node, section: str, path: Path, where: str) -> None:
    if not isinstance(node.value, dict):
        return  # the typed reading says what the section should be
    keys: Mapping[str, Key] = SECTIONS[section]
    for name, child in node.value.items():
        key = keys.get(name)
        if key is not None:
            _walk_value(child, key, key.schema, path, f"{where}{name}")


def _walk_value(node: Node, key: Key, schema: Mapping[str, Any], path: Path, what: str) -> None:
    ref = schema.get("$ref")
    options = [s for s in schema.get("anyOf", ()) if "$ref" in s]
    if isinstance(node.value, dict):
        if ref or options:
            _walk_section(node, ref or options[0]["$ref"], path, f"{what}.")
        elif key.names is not None:
            for name in node.value:
                _match(key.names, str(name), f"the name in {what}", path, node.key_lines.get(name, node.line))
    elif isinstance(node.value, list):
        items = schema.get("items", {})
        for index, child in enumerate(node.value):
            _walk_value(child, key, items, path, f"{what}[{index}]")
    elif isinstance(node.value, str) and key.grammar is not None and not ref:
        _match(key.grammar, node.value, what, path, node.line)


def check_text(root: Node, path: Path) -> None:
    """Refuse the first string that is not allowed, with its line. Runs before the typed reading."""
    _walk_free(root, path, "")
    _walk_section(root, "matrix file", path, "")
