"""Bad input to matrix.yaml: one clear error each, with file and line, exit code 2, no traceback."""

from __future__ import annotations

import pytest
from conftest import Project


def error_of(cli, project: Project) -> str:  # type: ignore[no-untyped-def]
    result = cli("check", "--matrix", str(project.matrix))
    assert result.code == 2, result.err
    assert "Traceback" not in result.err and "internal error" not in result.err
    assert [line.startswith("error:") for line in result.err.splitlines()].count(True) == 1, result.err
    return str(result.err)


def test_malformed_yaml(cli, project: Project) -> None:  # type: ignore[no-untyped-def]
    project.edit(
        "  - {name: A100, runpod_id: NVIDIA A100 80GB PCIe, arch: sm_80, flash_attention: 2}",
        "  - {name: A100, runpod_id: NVIDIA A100 80GB PCIe, arch: sm_80, flash_attention: 2",
    )
    err = error_of(cli, project)
    assert "malformed YAML" in err and "matrix.yaml:" in err


def test_wrong_type_says_what_was_expected(cli, project: Project) -> None:  # type: ignore[no-untyped-def]
    project.edit("    tier: 1\n", "    tier: one\n")
    err = error_of(cli, project)
    assert f"matrix.yaml:{project.line_of('tier: one')}:" in err
    assert "tier must be int, not a string" in err


def test_unquoted_version_number_asks_for_quotes(cli, project: Project) -> None:  # type: ignore[no-untyped-def]
    project.edit('    cuda: "13.0"\n', "    cuda: 13.0\n")
    err = error_of(cli, project)
    assert 'write it quoted: "13.0"' in err


def test_unknown_top_level_key(cli, project: Project) -> None:  # type: ignore[no-untyped-def]
    project.edit("default_variant:", "defualt_variant:")
    err = error_of(cli, project)
    assert "unknown key 'defualt_variant'" in err and "Perhaps you meant 'default_variant'?" in err


def test_unknown_cache_manifest_names_the_forms(cli, project: Project) -> None:  # type: ignore[no-untyped-def]
    project.edit("default_variant:", "cache_manifest: idx\ndefault_variant:")
    err = error_of(cli, project)
    assert f"matrix.yaml:{project.line_of('cache_manifest: idx')}:" in err
    assert "unknown cache_manifest 'idx'" in err and "Perhaps you meant 'index'?" in err


@pytest.mark.parametrize(
    ("old", "new", "what"),
    [
        ("  - name: runpod-torch240-cu124", "  - name: runpod-torch211-cu130", "duplicate base name"),
        ("{name: H200,", "{name: H100,", "duplicate GPU name"),
        ("  - name: worker-embed", "  - name: pytorch-runtime", "duplicate image name"),
    ],
)
def test_duplicate_names(cli, project: Project, old: str, new: str, what: str) -> None:  # type: ignore[no-untyped-def]
    project.edit(old, new)
    err = error_of(cli, project)
    assert what in err and "first at" in err


def test_duplicate_keys(cli, project: Project) -> None:  # type: ignore[no-untyped-def]
    project.edit("    tier: 2\n", "    tier: 2\n    tier: 1\n")
    err = error_of(cli, project)
    assert "duplicate key 'tier'" in err


def test_missing_template(cli, project: Project) -> None:  # type: ignore[no-untyped-def]
    project.edit("template: images/worker-embed", "template: images/worker-embedd")
    err = error_of(cli, project)
    assert "no Dockerfile.j2" in err and f"matrix.yaml:{project.line_of('worker-embedd')}:" in err


def test_undefined_template_variable_names_template_line(cli, project: Project) -> None:  # type: ignore[no-untyped-def]
    template = project.root / "images" / "worker-embed" / "Dockerfile.j2"
    lines = template.read_text().splitlines(keepends=True)
    lines.insert(5, "ENV X={{ base.cuda_versoin }}\n")
    template.write_text("".join(lines))
    err = error_of(cli, project)
    assert "undefined template variable" in err and "cuda_versoin" in err
    assert "Dockerfile.j2:6:" in err
    assert "[worker-embed-" in err


def test_template_syntax_error(cli, project: Project) -> None:  # type: ignore[no-untyped-def]
    template = project.root / "images" / "pytorch-runtime" / "Dockerfile.j2"
    template.write_text(template.read_text() + "{% if %}\n")
    err = error_of(cli, project)
    assert "template syntax error" in err and "Dockerfile.j2:" in err


def test_missing_matrix_file(cli, tmp_path) -> None:  # type: ignore[no-untyped-def]
    result = cli("plan", "--matrix", str(tmp_path / "nope.yaml"))
    assert result.code == 2 and "cannot read the matrix" in result.err


def test_unknown_gpu_in_include(cli, project: Project) -> None:  # type: ignore[no-untyped-def]
    project.edit(
        "  exclude:\n",
        "  include:\n    - {image: worker-embed, base: runpod-torch211-cu130, gpus: [H10]}\n  exclude:\n",
    )
    err = error_of(cli, project)
    assert "unknown GPU 'H10'" in err and "Perhaps you meant 'H100'?" in err


def test_include_adds_and_extends_combinations(cli, project: Project) -> None:  # type: ignore[no-untyped-def]
    import json

    project.edit(
        "  exclude:\n",
        "  include:\n"
        "    - {image: worker-embed, base: runpod-torch211-cu130, gpus: [H100, H200]}\n"
        "    - {image: worker-embed, base: runpod-torch291-cu130-noble}\n"
        "  exclude:\n",
    )
    result = cli("plan", "--json", "--matrix", str(project.matrix))
    assert result.code == 0, result.err
    variants = {e["variant"]: e for e in json.loads(result.out)["include"]}
    assert variants["worker-embed-runpod-torch211-cu130"]["gpus"] == ["H100", "H200"]
    assert "worker-embed-runpod-torch291-cu130-noble" in variants  # re-added after exclude, as in GHA
