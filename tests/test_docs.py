"""docs/ against the code: every generated table is what the code says now, every hand-kept table
that mirrors the code names exactly what the code has, every link resolves, and the README stays a
short map (under 200 lines)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import REPO

from buildtool import reference
from buildtool.policy import RULES

DOCS = sorted((REPO / "docs").rglob("*.md"))
LINK = re.compile(r"\]\(([^)#\s]+)(#[^)]*)?\)")


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_generated_tables_are_current(path: Path) -> None:
    text = path.read_text()
    assert reference.generated(text, path) == text, (
        f"{path.relative_to(REPO)} is stale: run `nox -s docs` (python -m buildtool.reference --write)"
    )


def test_the_generator_sees_a_stale_table() -> None:
    stale = "<!-- generated: rules -->\n| rule |\n<!-- end: rules -->\n"
    fresh = reference.generated(stale, Path("x.md"))
    assert fresh != stale and "`image-size` | image |" in fresh
    assert reference.generated(fresh, Path("x.md")) == fresh


def test_every_rule_is_described_and_nothing_else() -> None:
    text = (REPO / "docs" / "policies.md").read_text()
    table = text.split("## What each rule looks at", 1)[1].split("\n## ", 1)[0]
    described = re.findall(r"^\| `([a-z0-9-]+)` \|", table, re.M)
    # `policy` is the check of policy: keys themselves, not a registered rule.
    assert sorted(described) == sorted([*RULES, "policy"])


@pytest.mark.parametrize("path", [REPO / "README.md", *DOCS], ids=lambda p: p.relative_to(REPO).as_posix())
def test_links_resolve(path: Path) -> None:
    for target, _ in LINK.findall(path.read_text()):
        if "://" not in target:
            assert (path.parent / target).exists(), f"{path.relative_to(REPO)} links to missing {target}"


def test_the_readme_is_a_map() -> None:
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) < 200
    for page in ("matrix", "policies", "smoke", "deployment", "workflows"):
        assert f"(docs/{page}.md)" in "\n".join(lines)


def test_the_how_tos_rule_runs_as_written(project) -> None:  # type: ignore[no-untyped-def]
    """The example of docs/how-to/add-a-rule.md, executed in the module of its scope: it registers,
    refuses what it says, and its option switches it off."""
    from buildtool.config.matrix import load_matrix
    from buildtool.policy import check_dockerfile, registry

    text = (REPO / "docs" / "how-to" / "add-a-rule.md").read_text()
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, object] = {}
    try:
        exec(code, namespace)
        matrix = load_matrix(project.matrix)
        upgrade = "FROM x\nRUN apt-get update && apt-get upgrade -y\n"
        findings = list(check_dockerfile(upgrade, Path("build/v/Dockerfile"), "v", {}, matrix))
        (mine,) = [f for f in findings if f.rule == "apt-upgrade"]
        assert mine.severity == "error" and str(mine.problem.location) == "build/v/Dockerfile:2"
        project.edit("policy:\n", "policy:\n  allow_apt_upgrade: true\n")
        allowed = check_dockerfile(upgrade, Path("build/v/Dockerfile"), "v", {}, load_matrix(project.matrix))
        assert [f for f in allowed if f.rule == "apt-upgrade"] == []
    finally:
        registry.RULES.pop("apt-upgrade", None)
        registry.OPTIONS.pop("allow_apt_upgrade", None)
