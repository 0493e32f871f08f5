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
    """The example of docs/how-to/add-a-rule.md, run in the module it goes in (with the import the
    guide says to add), under a name of its own so that a newcomer who has added it already sees
    this pass too: it registers, refuses what it says, and its option switches it off."""
    from buildtool.config.matrix import load_matrix
    from buildtool.policy import OPTIONS, RULES, RuleOption, check_dockerfile, dockerfile

    text = (REPO / "docs" / "how-to" / "add-a-rule.md").read_text()
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    code = code.replace('"apt-upgrade"', '"how-to-apt-upgrade"').replace("allow_apt_upgrade", "how_to_allow")
    rules, options = dict(RULES), dict(OPTIONS)
    try:
        exec(code, {**vars(dockerfile), "RuleOption": RuleOption})
        upgrade = "FROM x\nRUN apt-get update && apt-get upgrade -y\n"

        def findings() -> list[object]:
            found = check_dockerfile(
                upgrade, Path("build/v/Dockerfile"), "v", {}, load_matrix(project.matrix)
            )
            return [f for f in found if f.rule == "how-to-apt-upgrade"]

        (mine,) = findings()
        assert mine.severity == "error" and str(mine.problem.location) == "build/v/Dockerfile:2"  # type: ignore[attr-defined]
        project.edit("policy:\n", "policy:\n  how_to_allow: true\n")
        assert findings() == []
    finally:
        RULES.clear()
        RULES.update(rules)
        OPTIONS.clear()
        OPTIONS.update(options)


def test_the_readmes_library_example_runs(project, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    text = (REPO / "README.md").read_text()
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(project.root)
    exec(code, {})
    printed = capsys.readouterr().out.splitlines()
    assert printed and all(line.startswith("worker-embed-") and "'H100'" in line for line in printed)
    assert all("B200" not in line for line in printed)  # the GPUs it serves, not the refused ones


def _expanded(cell: str) -> list[str]:
    """`a.b`, `.c` (a.c), `a.{x,y}` -> the names they stand for."""
    names: list[str] = []
    for token in re.findall(r"`([^`]+)`", cell):
        if token.startswith(".") and names:
            token = names[-1].rsplit(".", 1)[0] + token
        braces = re.fullmatch(r"(.*)\{(.*)\}(.*)", token)
        names += [f"{braces[1]}{x}{braces[3]}" for x in braces[2].split(",")] if braces else [token]
    return names


def test_the_smoke_checks_table_names_every_check_the_suite_reports() -> None:
    from smoke.selection import catalogue

    text = (REPO / "docs" / "smoke.md").read_text()
    table = text.split("| check | what |\n| --- | --- |\n", 1)[1].split("\n\n", 1)[0]
    documented = {n for row in table.splitlines() for n in _expanded(row.split(" | ")[0])}
    assert documented == set(catalogue(kernels=("<name>",)))


def test_the_workflow_table_names_every_job_of_ci_yml_and_where_it_runs() -> None:
    """docs/workflows.md's job table against .github/workflows/ci.yml: one row per job, by the name
    GitHub shows (`${{ matrix.x }}` written *x*), and the runner it names."""
    import yaml

    jobs = yaml.safe_load((REPO / ".github" / "workflows" / "ci.yml").read_text())["jobs"]
    shown = {
        re.sub(r"\$\{\{ matrix\.(\w+) \}\}", lambda m: f"*{m[1]}*", job["name"]).casefold(): job
        for job in jobs.values()
    }
    text = (REPO / "docs" / "workflows.md").read_text()
    table = text.split("| job | runs on | what it does |\n| --- | --- | --- |\n", 1)[1].split("\n\n", 1)[0]
    rows = {
        row.split(" | ")[0].removeprefix("| ").casefold(): row.split(" | ")[1] for row in table.splitlines()
    }
    assert set(rows) == set(shown)
    for name, job in shown.items():
        runner = job["runs-on"]
        if isinstance(runner, str) and "${{" not in runner:
            assert f"`{runner}`" in rows[name], f"{name}: the table does not say it runs on {runner}"


def test_the_tags_table_is_the_tag_scheme() -> None:
    """docs/building.md's tag table, with its placeholders filled in, is what naming.variant_tags
    gives the default variant (every row) and another one (no `latest`)."""
    from buildtool.naming import Revision, variant_tags

    sha = "0123456789abcdef0123456789abcdef01234567"
    text = (REPO / "docs" / "building.md").read_text()
    table = text.split("| tag | kind |\n| --- | --- |\n", 1)[1].split("\n\n", 1)[0]
    documented = {
        row.split("`")[1].replace("<base>", "b").replace("<full git sha>", sha) for row in table.splitlines()
    }
    default = variant_tags("r.example/o", "img", "b", Revision(sha, False), True)
    other = variant_tags("r.example/o", "img", "b", Revision(sha, False), False)
    tags = {t.rpartition(":")[2] for t in (default.immutable, *default.moving, default.cache)}
    assert documented == tags
    assert "latest" not in {t.rpartition(":")[2] for t in other.moving}


def test_the_images_table_is_the_matrix_images() -> None:
    from buildtool.config.matrix import load_matrix

    text = (REPO / "docs" / "images.md").read_text()
    table = text.split("| image | kind | what it is |\n| --- | --- | --- |\n", 1)[1].split("\n\n", 1)[0]
    kinds = {"pod": "runtime", "serverless worker": "serverless-worker"}
    documented = {row.split("`")[1]: kinds[row.split(" | ")[1]] for row in table.splitlines()}
    assert documented == {i.name: i.kind for i in load_matrix(REPO / "matrix.yaml").images}


def test_the_scopes_table_is_the_registrys_scopes_in_order() -> None:
    from buildtool.policy import SCOPES

    text = (REPO / "docs" / "policies.md").read_text()
    table = text.split("| scope | subject | runs |\n| --- | --- | --- |\n", 1)[1].split("\n\n", 1)[0]
    assert tuple(row.split(" | ")[0].removeprefix("| ") for row in table.splitlines()) == SCOPES
