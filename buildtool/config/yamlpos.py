"""YAML with positions: every value with the line it starts on, every mapping key with its line,
aliases and merge keys resolved with a bound on their expansion. matrix.py reads these Nodes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from buildtool.errors import ConfigError, Location, Problem

# libyaml's loader when PyYAML was built with it: 20x faster, with the same line marks.
FAST_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class Node:
    """A YAML value with the line it starts on (1-based); a mapping also keeps each key's line."""

    value: Any  # dict[str, Node] | list[Node] | scalar
    line: int
    key_lines: Mapping[str, int] = field(default_factory=dict)


# Aliases share nodes, so a few lines of YAML can stand for exponentially many values (an "alias
# bomb"). The matrix is converted node by node; past this many, it is refused. The repository's
# matrix is about 300 nodes.
MAX_NODES = 20_000
MERGE_TAG = "tag:yaml.org,2002:merge"


class _Converter:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.constructor = yaml.constructor.SafeConstructor()
        self.count = 0
        self.open: list[yaml.Node] = []  # the nodes being converted, outermost first

    def fail(self, message: str, node: yaml.Node, hint: str | None = None) -> ConfigError:
        return ConfigError(Problem(message, Location(self.path, node.start_mark.line + 1), hint=hint))

    def convert(self, node: yaml.Node) -> Node:
        self.count += 1
        if self.count > MAX_NODES:
            # Name the top-level entry whose aliases blew up (the root is line 1 for every file).
            raise self.fail(
                f"the YAML expands to more than {MAX_NODES:,} values through its aliases",
                self.open[1] if len(self.open) > 1 else node,
                "a matrix this large is an alias bomb, not a build matrix: write the values out, or "
                "use fewer nested aliases",
            )
        if any(node is open_node for open_node in self.open):
            raise self.fail(
                "a recursive alias: this value contains itself",
                node,
                "an alias (*name) may refer only to an anchor (&name) it is not inside",
            )
        self.open.append(node)
        try:
            return self._convert(node)
        finally:
            self.open.pop()

    def _convert(self, node: yaml.Node) -> Node:
        line = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Node] = {}
            key_lines: dict[str, int] = {}
            merged: dict[str, tuple[Node, int]] = {}
            for key_node, value_node in node.value:
                if key_node.tag == MERGE_TAG:
                    for name, (value, key_line) in self._merge(value_node).items():
                        merged.setdefault(name, (value, key_line))
                    continue
                key = self.constructor.construct_object(key_node)
                key_line = key_node.start_mark.line + 1
                if not isinstance(key, str):
                    raise self.fail(f"key {key!r} is not a string", key_node, "quote it")
                if key in out:
                    raise self.fail(
                        f"duplicate key '{key}' (first on line {key_lines[key]})",
                        key_node,
                        "remove one of them",
                    )
                out[key] = self.convert(value_node)
                key_lines[key] = key_line
            for key, (value, key_line) in merged.items():  # explicit keys win over merged ones
                if key not in out:
                    out[key] = value
                    key_lines[key] = key_line
            return Node(out, line, key_lines)
        if isinstance(node, yaml.SequenceNode):
            return Node([self.convert(child) for child in node.value], line)
        return Node(self.constructor.construct_object(node), line)

    def _merge(self, value_node: yaml.Node) -> dict[str, tuple[Node, int]]:
        """`<<: *a` or `<<: [*a, *b]` (the first mapping that has a key wins), as YAML 1.1 says."""
        sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
        merged: dict[str, tuple[Node, int]] = {}
        for source in sources:
            if not isinstance(source, yaml.MappingNode):
                raise self.fail(
                    "a merge key (<<) takes a mapping or a list of mappings",
                    source,
                    "write <<: *anchor, where &anchor names a mapping",
                )
            converted = self.convert(source)
            for key, value in converted.value.items():
                merged.setdefault(key, (value, converted.key_lines.get(key, value.line)))
        return merged


def parse_yaml(text: str, path: Path) -> Node:
    try:
        root = yaml.compose(text, Loader=FAST_LOADER)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(
            Problem(f"malformed YAML: {problem}", Location(path, line), hint="fix the YAML syntax")
        ) from None
    if root is None:
        raise ConfigError(Problem("the file is empty", Location(path, 1), hint="see docs/matrix.md"))
    try:
        return _Converter(path).convert(root)
    except RecursionError:
        raise ConfigError(
            Problem("the YAML nests too deeply", Location(path), hint="flatten the nesting")
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise ConfigError(Problem(f"malformed YAML: {exc}", Location(path, line))) from None
