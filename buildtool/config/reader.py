"""Typed reading of matrix.yaml's line-aware nodes (yamlpos.py): every failure names the file, the
line and the key, with the fix."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from buildtool import refs
from buildtool.arch import ArchRule, InvalidArch
from buildtool.config.keys import NAME, SECTIONS
from buildtool.config.yamlpos import Node
from buildtool.errors import ConfigError, Location, Problem, did_you_mean

T = TypeVar("T")
SCALAR_TYPES: dict[str, type] = {"integer": int, "number": float, "boolean": bool, "string": str}


class Reader:
    """Reads typed values out of Nodes; every failure names file, line and key."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def at(self, node: Node) -> Location:
        return Location(self.path, node.line)

    def fail(self, node: Node, message: str, hint: str | None = None) -> ConfigError:
        return ConfigError(Problem(message, self.at(node), hint=hint))

    def mapping(
        self, node: Node, what: str, required: Sequence[str], optional: Sequence[str]
    ) -> dict[str, Node]:
        if not isinstance(node.value, dict):
            raise self.fail(node, f"{what} must be a mapping, not {kind_of(node.value)}")
        allowed = [*required, *optional]
        for key, child in node.value.items():
            if key not in allowed:
                hint = did_you_mean(key, allowed) or f"allowed keys: {', '.join(allowed)}"
                line = node.key_lines.get(key, child.line)  # the key's own line, not its value's
                raise ConfigError(
                    Problem(f"unknown key '{key}' in {what}", Location(self.path, line), hint=hint)
                )
        for key in required:
            if key not in node.value:
                raise self.fail(node, f"{what} is missing the required key '{key}'")
        return dict(node.value)

    def scalar(self, node: Node, kind: type[T], what: str) -> T:
        value = node.value
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if kind is str and isinstance(value, int | float) and not isinstance(value, bool):
            # "13.0" written unquoted is a float; accept it as the text the user wrote.
            raise self.fail(node, f'{what} must be a string; write it quoted: "{value}"')
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.fail(node, f"{what} must be {kind.__name__}, not {kind_of(value)}")
        return value

    def optional(self, node: Node | None, kind: type[T], what: str) -> T | None:
        if node is None or node.value is None:
            return None
        return self.scalar(node, kind, what)

    def key(self, m: Mapping[str, Node], section: str, name: str) -> Any:
        """A scalar key of `section` as keys.py declares it: its type, its bounds (the schema's
        minimum and maximum), and its default when absent."""
        key = SECTIONS[section][name]
        kind = SCALAR_TYPES[key.schema["type"]] if "type" in key.schema else type(key.schema["enum"][0])
        value = self.optional(m.get(name), kind, name)
        if value is None:
            return key.default
        low, high = key.schema.get("minimum"), key.schema.get("maximum")
        if (low is not None and value < low) or (high is not None and value > high):
            span = (
                f"from {low:g} to {high:g}"
                if low is not None and high is not None
                else (f"at least {low:g}" if low is not None else f"at most {high:g}")
            )
            why = f" ({key.bounds})" if key.bounds else ""
            if low is not None and high is not None:
                allowed = f"a value {span}"
            else:
                allowed = f"{low:g} or more" if low is not None else f"{high:g} or less"
            kept = "" if key.default is None else f", or leave it out ({key.default:g})"
            fix = f"set {name} to {allowed}{kept}"
            raise self.fail(m[name], f"{name} must be {span}{why}, not {value:g}", fix)
        return value

    def sequence(self, node: Node, what: str) -> list[Node]:
        if not isinstance(node.value, list):
            raise self.fail(node, f"{what} must be a list, not {kind_of(node.value)}")
        return list(node.value)

    def strings(self, node: Node, what: str) -> tuple[str, ...]:
        return tuple(self.scalar(n, str, f"an entry of {what}") for n in self.sequence(node, what))

    def name(self, node: Node, what: str) -> str:
        value = self.scalar(node, str, what)
        if not NAME.match(value):
            raise self.fail(
                node,
                f"{what} '{value}' is not a valid name",
                "use lower-case letters, digits and '-' (no dots: buildx bake target names)",
            )
        return value

    def unique(
        self, items: Sequence[T], name_of: Callable[[T], str], line_of: Callable[[T], Location], what: str
    ) -> None:
        seen: dict[str, Location] = {}
        for item in items:
            name = name_of(item)
            if name in seen:
                raise ConfigError(
                    Problem(
                        f"duplicate {what} name '{name}' (first at {seen[name]})",
                        line_of(item),
                        hint="names must be unique",
                    )
                )
            seen[name] = line_of(item)


def kind_of(value: object) -> str:
    return {
        dict: "a mapping",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        type(None): "empty",
    }.get(type(value), type(value).__name__)


def plain(node: Node) -> Any:
    if isinstance(node.value, dict):
        return {k: plain(v) for k, v in node.value.items()}
    if isinstance(node.value, list):
        return [plain(v) for v in node.value]
    return node.value


def read_arch_rule(r: Reader, node: Node) -> str:
    text = r.scalar(node, str, "arch")
    try:
        ArchRule.parse(text)
    except InvalidArch as exc:
        raise r.fail(node, str(exc), "e.g. sm_100 (one capability) or 10.x (a generation)") from None
    return text


def read_reference(r: Reader, node: Node, what: str) -> str:
    """An image reference as written, after checking that it is one (refs.parse)."""
    text = r.scalar(node, str, what)
    try:
        refs.parse(text)
    except refs.InvalidReference as exc:
        raise r.fail(
            node, f"{what} {exc}", "write it as docker pull takes it, e.g. runpod/pytorch:<tag>"
        ) from None
    return text
