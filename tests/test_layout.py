"""The README's layout section names every module of the package and the smoke suite; no module
grows past 350 lines (split it by concern instead)."""

from __future__ import annotations

import re

from conftest import REPO

LIMIT = 350


def layout_section() -> str:
    text = (REPO / "README.md").read_text()
    return text.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]


def modules(package: str) -> set[str]:
    root = REPO / package
    return {
        p.relative_to(root).with_suffix("").as_posix() for p in root.rglob("*.py") if p.stem != "__init__"
    }


def test_the_readme_layout_names_every_module() -> None:
    words = set(re.findall(r"[a-z_]+", layout_section()))
    for package in ("buildtool", "smoke"):
        for module in modules(package):
            name = module.split("/")[-1]
            if name not in ("__main__",):
                assert name in words, f"{package}/{module}.py is not in README.md's Layout section"


def test_no_module_is_over_the_line_limit() -> None:
    for package in ("buildtool", "smoke"):
        for path in (REPO / package).rglob("*.py"):
            lines = len(path.read_text().splitlines())
            assert lines <= LIMIT, (
                f"{path.relative_to(REPO)} has {lines} lines (limit {LIMIT}): split it by concern"
            )
