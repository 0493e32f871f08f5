"""The API the smoke suite and the bake step call on the packages the images pin, collected from the
source by AST (never listed by hand), and resolved against the real packages in an image.

A path is a dotted name reached from an import of a watched package: `torch._C._cudnn.getCompileVersion`
from `import torch`, `torch.nn.attention.SDPBackend.FLASH_ATTENTION` from `from torch.nn.attention import
SDPBackend`. An access guarded by `hasattr(<that object>, "<name>")` in the same file is the code's own
fallback, not a contract, and is left out.

Run as a script (in the image): python3 api_contract.py PATH... prints the JSON list of those that do not
resolve, and exits 0.
"""

from __future__ import annotations

import ast
import importlib
import json
import sys
from pathlib import Path

WATCHED = ("torch", "kernels", "huggingface_hub", "runpod")


def _dotted(node: ast.expr) -> list[str] | None:
    """a.b.c as ['a', 'b', 'c'], or None for anything but names and attributes."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return [node.id, *reversed(parts)]


def attribute_paths(source: str) -> set[str]:
    tree = ast.parse(source)
    aliases: dict[str, str] = {}
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                if top in WATCHED:
                    aliases[alias.asname or top] = alias.name if alias.asname else top
                    found.add(alias.name)
        elif (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and node.module
            and node.module.split(".")[0] in WATCHED
        ):
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
                found.add(f"{node.module}.{alias.name}")

    def resolved(node: ast.expr) -> str | None:
        parts = _dotted(node)
        if not parts or parts[0] not in aliases:
            return None
        return ".".join([aliases[parts[0]], *parts[1:]])

    inner = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    guarded: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and id(node) not in inner:
            path = resolved(node)
            if path:
                found.add(path)
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("hasattr", "getattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
        ):
            owner = resolved(node.args[0])
            if owner:
                guarded.add(f"{owner}.{node.args[1].value}")
    return {p for p in found if not any(p == g or p.startswith(g + ".") for g in guarded)}


def paths_in(files: list[Path]) -> dict[str, list[str]]:
    """Each path, with the files that use it."""
    out: dict[str, list[str]] = {}
    for file in files:
        for path in attribute_paths(file.read_text(encoding="utf-8")):
            out.setdefault(path, []).append(str(file))
    return dict(sorted(out.items()))


def resolves(path: str) -> bool:
    """Whether `path` names something in the installed packages: attributes, or submodules to import."""
    parts = path.split(".")
    try:
        obj = importlib.import_module(parts[0])
    except ImportError:
        return False
    for index, part in enumerate(parts[1:], 1):
        if hasattr(obj, part):
            obj = getattr(obj, part)
            continue
        try:
            obj = importlib.import_module(".".join(parts[: index + 1]))
        except ImportError:
            return False
    return True


if __name__ == "__main__":
    print(json.dumps([path for path in sys.argv[1:] if not resolves(path)]))
