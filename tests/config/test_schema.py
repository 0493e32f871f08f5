"""matrix.yaml's JSON Schema: generated from the model's key table, shipped for editors, checked with
check-jsonschema against the repository's matrices, and in agreement with the loader."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, Project

from buildtool.config.schema import SCHEMA_PATH, schema_text

CHECK_JSONSCHEMA = (
    shutil.which("check-jsonschema", path=str(Path(sys.executable).parent)) or "check-jsonschema"
)
SCHEMA = REPO / SCHEMA_PATH


def validate(*paths: Path) -> subprocess.CompletedProcess[str]:
    command = [CHECK_JSONSCHEMA, "--schemafile", str(SCHEMA), *map(str, paths)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_the_shipped_schema_is_the_generated_one(cli) -> None:  # type: ignore[no-untyped-def]
    assert SCHEMA.read_text() == schema_text(), "run: buildtool schema --write"
    printed = cli("schema")
    assert printed.code == 0 and printed.out == schema_text()


def test_the_repository_matrices_validate_and_point_editors_at_the_schema() -> None:
    matrices = [REPO / "matrix.yaml", *sorted((REPO / "tests" / "projects").glob("*/matrix.yaml"))]
    done = validate(*matrices)
    assert done.returncode == 0, done.stdout + done.stderr
    first = (REPO / "matrix.yaml").read_text().splitlines()[0]
    assert first == f"# yaml-language-server: $schema={SCHEMA_PATH.as_posix()}"


@pytest.mark.parametrize(
    ("old", "new", "loader_says"),
    [
        ("    tier: 1\n", "    tier: 4\n", "tier must be 1 or 2 or 3"),
        ("    kind: runtime\n", "    kind: pod\n", "unknown image kind 'pod'"),
        ("default_variant:", "cache_manifest: image\ndefault_variant:", "unknown cache_manifest 'image'"),
        (
            "    cuda_compat: true\n",
            "    cuda_compat: true\n    cuda_compatible: true\n",
            "unknown key 'cuda_compatible'",
        ),
        ("  max_image_gb: 15\n", '  max_image_gb: "15"\n', "policy max_image_gb must be float"),
        ("  max_image_gb: 15\n", "  max_image_gbs: 15\n", "unknown key 'max_image_gbs' in policy"),
    ],
)
def test_what_the_schema_refuses_the_loader_refuses(  # type: ignore[no-untyped-def]
    cli, project: Project, old: str, new: str, loader_says: str
) -> None:
    project.edit(old, new)
    assert validate(project.matrix).returncode == 1
    result = cli("check", "--matrix", str(project.matrix))
    assert result.code == 2 and loader_says in result.err
