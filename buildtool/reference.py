"""The reference tables of docs/, generated from the code that is their source: matrix.yaml's keys
(config/keys.py) and the rules' options, the policy rules, the command line, the hardware facts
(facts.py) and the module map (each module's docstring). A docs file holds each table between
`<!-- generated: NAME -->` and `<!-- end: NAME -->`; `python -m buildtool.reference --write`
(`nox -s docs`) rewrites them, and a test fails while a file differs from what this generates.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from buildtool import facts
from buildtool.config.keys import SECTIONS, Key
from buildtool.policy import OPTIONS, RULES, SCOPES

MARKER = re.compile(r"(<!-- generated: (?P<name>[a-z-]+) -->\n)(?P<body>.*?)(<!-- end: (?P=name) -->)", re.S)


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header: Iterable[str], rows: Iterable[Iterable[object]]) -> str:
    head = list(header)
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _type_of(schema: Mapping[str, Any]) -> str:
    if "$ref" in schema:
        return f"[{schema['$ref']}](#{schema['$ref'].replace(' ', '-')})"
    if "const" in schema:
        return f"`{schema['const']}`"
    if "enum" in schema:
        return " or ".join(f"`{v}`" for v in schema["enum"])
    if "anyOf" in schema:
        return " or ".join(_type_of(s) for s in schema["anyOf"])
    kind = str(schema.get("type", "any"))
    if kind == "array":
        return f"list of {_type_of(schema.get('items', {}))}"
    if kind == "object" and "additionalProperties" in schema:
        return f"mapping of {_type_of(schema['additionalProperties'])}"
    low, high = schema.get("minimum"), schema.get("maximum")
    if low is not None and high is not None:
        return f"{kind}, {low:g} to {high:g}"
    if low is not None:
        return f"{kind}, at least {low:g}"
    return kind


def _default(key: Key) -> str:
    if key.default is None:
        return ""
    value = key.default
    if isinstance(value, tuple):
        return ", ".join(f"`{v}`" for v in value)
    return f"`{str(value).lower() if isinstance(value, bool) else value}`"


def matrix_keys() -> str:
    """One table per mapping of matrix.yaml, then the rules' options (keys of `policy:` too)."""
    parts = []
    for section, keys in SECTIONS.items():
        rows = [
            (f"`{name}`", _type_of(key.schema), "yes" if key.required else "", _default(key), key.doc)
            for name, key in keys.items()
        ]
        parts.append(f"### {section}\n\n" + _table(("key", "type", "required", "default", "what"), rows))
    options = [
        (
            f"`{name}`",
            option.kind.__name__,
            "" if option.default is None else f"`{option.default}`",
            f"`{rule.name}`",
            option.help,
        )
        for rule in RULES.values()
        for name, option in OPTIONS.items()
        if name in rule.options
    ]
    parts.append(
        "### rule options (under `policy:`)\n\n" + _table(("key", "type", "default", "rule", "what"), options)
    )
    return "\n".join(parts)


def rules() -> str:
    rows = [
        (f"`{r.name}`", r.scope, r.reason, ", ".join(f"`{o}`" for o in r.options))
        for scope in SCOPES
        for r in sorted(RULES.values(), key=lambda r: r.name)
        if r.scope == scope
    ]
    return _table(("rule", "scope", "why", "options"), rows)


def commands() -> str:
    from buildtool.cli.arguments import parser

    top = parser()
    [sub] = [a for a in top._actions if isinstance(a, argparse._SubParsersAction)]
    helps = {a.dest: a.help or "" for a in sub._choices_actions}
    rows = []
    for name, command in sub.choices.items():
        flags = [
            ", ".join(a.option_strings) for a in command._actions if a.option_strings and a.dest != "help"
        ]
        rows.append((f"`buildtool {name}`", helps.get(name, ""), " ".join(f"`{f}`" for f in flags)))
    return _table(("command", "what", "options"), rows)


def hardware() -> str:
    skus = _table(("SKU", "device name (torch.cuda.get_device_name), a regular expression"), facts.GPU_SKUS)
    pools = _table(
        ("serverless pool", "RunPod GPU type ids"),
        ((p, ", ".join(t)) for p, t in facts.SERVERLESS_POOLS.items()),
    )
    flash = _table(
        ("arch", "FlashAttention"),
        ((a, ", ".join(map(str, v)) or "none") for a, v in facts.FLASH_ATTENTION_BY_ARCH.items()),
    )
    floors = _table(
        ("floor", "SKUs", "archs", "why"),
        (
            (f.describe(), ", ".join(f.skus) or "any", ", ".join(f.archs) or "", f.why)
            for f in facts.BENCH_FLOORS
        ),
    )
    titled = (("GPU SKUs", skus), ("Serverless pools", pools), ("FlashAttention by arch", flash))
    return "\n".join(f"### {title}\n\n{table}" for title, table in (*titled, ("Benchmark floors", floors)))


def modules() -> str:
    """Every module of buildtool and smoke with the first sentence of its docstring."""
    root = Path(__file__).resolve().parent.parent
    rows = []
    for package in ("buildtool", "smoke"):
        for path in sorted((root / package).rglob("*.py")):
            if path.name == "__main__.py":
                continue
            doc = ast.get_docstring(ast.parse(path.read_text())) or ""
            first = re.split(r"(?<=[.:])\s", " ".join(doc.split()), maxsplit=1)[0] if doc else ""
            name = path.relative_to(root).with_suffix("").as_posix().removesuffix("/__init__")
            rows.append((f"`{name}`", first))
    return _table(("module", "what it is"), rows)


TABLES: dict[str, Callable[[], str]] = {
    "matrix-keys": matrix_keys,
    "rules": rules,
    "commands": commands,
    "hardware": hardware,
    "modules": modules,
}


def generated(text: str, where: Path) -> str:
    """`text` with every generated block replaced by what the code says now."""

    def fill(m: re.Match[str]) -> str:
        name = m["name"]
        if name not in TABLES:
            raise KeyError(f"{where}: no generated table '{name}' (known: {', '.join(TABLES)})")
        return f"{m.group(1)}\n{TABLES[name]()}\n{m.group(4)}"

    return MARKER.sub(fill, text)


def docs_files(root: Path) -> list[Path]:
    return sorted((root / "docs").rglob("*.md"))


def main(argv: list[str] | None = None) -> int:
    args = argparse.ArgumentParser(prog="python -m buildtool.reference", description=__doc__)
    args.add_argument("--write", action="store_true", help="rewrite the generated tables in docs/")
    options = args.parse_args(argv)
    root = Path(__file__).resolve().parent.parent
    stale = []
    for path in docs_files(root):
        text = path.read_text()
        new = generated(text, path)
        if new != text:
            stale.append(path)
            if options.write:
                path.write_text(new)
    for path in stale:
        print(f"{'wrote' if options.write else 'out of date'}: {path.relative_to(root)}")
    return 0 if options.write or not stale else 1


if __name__ == "__main__":
    sys.exit(main())
