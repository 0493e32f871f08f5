"""Property: whatever a matrix value holds (newlines, quotes, ${...}, Jinja syntax, control
characters), a rendered Dockerfile's instructions are its template's, or the matrix is refused with
the value's line. The instructions are read back with dockerfile-parse, a parser we did not write."""

from __future__ import annotations

import copy
import io
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO
from dockerfile_parse import DockerfileParser
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from buildtool import api
from buildtool.config.options import Options
from buildtool.errors import BuildtoolError

SELECTED = ("pytorch-runtime-runpod-torch211-cu130", "worker-embed-runpod-torch211-cu130")

# Each key of the repository's matrix whose value reaches a template of a selected variant, as a
# path into the YAML document.
KEYS: tuple[tuple[Any, ...], ...] = (
    ("source",),
    ("bases", 0, "name"),
    ("bases", 0, "ref"),
    ("bases", 0, "cuda"),
    ("bases", 0, "torch"),
    ("bases", 0, "python"),
    ("gpus", 0, "name"),
    ("gpus", 0, "arch"),
    ("images", 0, "kernels"),
    ("gpus", 1, "runpod_id"),
    ("images", 0, "version"),
    ("images", 0, "description"),
    ("images", 0, "template"),
    ("images", 0, "torch"),
    ("images", 0, "args", "EXTRA"),
    ("images", 1, "name"),
    ("images", 1, "handler"),
    ("images", 1, "model", "name"),
    ("images", 1, "model", "volume_path"),
    ("images", 1, "model", "files"),
    ("images", 1, "smoke", "input", "texts", 0),
    ("images", 1, "smoke", "imports"),
)

HOSTILE = st.sampled_from(
    ["\n", "\r\n", '"', "'", "\\", "\\\n", "${HOME}", "$(id)", "`id`", "{{ 7 * 7 }}", "{% raw %}", "{#",
     "\x00", "\x1b[2J", "\t", "\u2028", "\u0085", " ", "#", "\nRUN touch /pwned", '" \\\nRUN id #', "=", "&&"]
)  # fmt: skip
VALUES = st.tuples(
    st.sampled_from(["", "H100", "2.11.0", "a/b"]),
    st.lists(HOSTILE | st.text(max_size=3), min_size=1, max_size=4),
)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("injection")
    shutil.copytree(REPO / "images", root / "images", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "smoke", root / "smoke", ignore=shutil.ignore_patterns("__pycache__"))
    return root


def instructions(dockerfile: str) -> list[tuple[str, tuple[str, ...]]]:
    """Each instruction, with the keys it sets (LABEL, ENV, ARG): what a value could add to."""
    parser = DockerfileParser(fileobj=io.BytesIO(dockerfile.encode()))
    out = []
    for item in parser.structure:
        name = item["instruction"]
        keys: tuple[str, ...] = ()
        if name in ("LABEL", "ENV"):
            single = DockerfileParser(fileobj=io.BytesIO(f"FROM scratch\n{item['content']}".encode()))
            keys = tuple(sorted(single.labels if name == "LABEL" else single.envs))
        elif name == "ARG":
            keys = (item["value"].split("=", 1)[0],)
        out.append((name, keys))
    return out


def render(workspace: Path, document: dict[str, Any]) -> dict[str, list[tuple[str, tuple[str, ...]]]]:
    matrix = workspace / "matrix.yaml"
    matrix.write_text(yaml.safe_dump(document, sort_keys=False, allow_unicode=False))
    _, rendering = api.check(Options.for_matrix(matrix, select=SELECTED))
    return {v.name: instructions(v.dockerfile) for v in rendering.variants}


def put(document: dict[str, Any], key: tuple[Any, ...], value: str) -> None:
    node: Any = document
    for part in key[:-1]:
        node = node.setdefault(part, {}) if isinstance(part, str) else node[part]
    last = key[-1]
    if isinstance(node.get(last) if isinstance(node, dict) else None, list):
        node[last] = [value]
    else:
        node[last] = value


@pytest.fixture(scope="module")
def baseline(workspace: Path) -> tuple[dict[str, Any], dict[str, list[tuple[str, tuple[str, ...]]]]]:
    document = yaml.safe_load((REPO / "matrix.yaml").read_text())
    document["images"][0].setdefault("args", {})["EXTRA"] = "plain"
    return document, render(workspace, document)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(KEYS), value=VALUES)
def test_a_value_changes_no_instruction_or_is_refused_with_its_line(  # type: ignore[no-untyped-def]
    workspace: Path, baseline, key: tuple[Any, ...], value: tuple[str, list[str]]
) -> None:
    document, expected = baseline
    hostile = copy.deepcopy(document)
    text = value[0] + "".join(value[1])
    put(hostile, key, text)
    try:
        got = render(workspace, hostile)
    except BuildtoolError as exc:
        assert all(p.location is not None and p.location.line for p in exc.problems), str(exc)
        return
    for name, structure in got.items():
        assert name in expected, f"{key} = {text!r} renamed a variant to {name!r}"
        assert structure == expected[name], f"{key} = {text!r} changed {name}'s instructions"
