"""Property: whatever is done to a valid matrix.yaml, the CLI exits 0 or 2 and prints no traceback.

FUZZ_EXAMPLES sets how many examples each property runs (default 300; `nox -s fuzz` runs 10,000,
each under a time bound: a hang fails the example as a deadline miss)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from buildtool.cli.main import main

VALID = yaml.safe_load((REPO / "matrix.yaml").read_text())
SPECIAL = st.sampled_from(
    [
        "nvidia/cuda:13.0.0-devel-ubuntu22.04",
        "2.11.0+cu128",
        "sm_100",
        "sm_90",
        "all",
        "13.0",
        "B200",
        "H100",
        "runpod-torch211-cu130",
        "worker-embed",
        "../..",
        "",
        "{{ x }}",
        "index.docker.io/nvidia/cuda:13.0.0-devel-ubuntu22.04",
        "registry-1.docker.io/library/python:3.11",
        "nvcr.io/nvidia/cuda:13.0.0-devel-ubuntu22.04",
        "NVIDIA/cuda:13.0.0",
        "nvidia/cuda@sha256:" + "a" * 64,
        "sm_100a",
        "sm_103f",
        "10.x",
        "compute_90",
    ]
)
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "300"))
DEADLINE_MS = 5000  # per example: a hang (an alias bomb expanding) fails as a deadline miss
HUB = st.sampled_from(
    ["", "docker.io/", "index.docker.io/", "registry-1.docker.io/", "nvcr.io/", "Docker.io/"]
)
REFERENCES = st.builds(
    lambda host, ns, name, tag, digest: f"{host}{ns}{name}{tag}{digest}",
    HUB,
    st.sampled_from(["", "library/", "nvidia/", "runpod/", "NVIDIA/"]),
    st.sampled_from(["cuda", "pytorch", "python", "CUDA", "cu da"]),
    st.one_of(st.just(""), st.from_regex(r":[A-Za-z0-9_][A-Za-z0-9_.-]{0,12}", fullmatch=True), st.just(":")),
    st.one_of(st.just(""), st.from_regex(r"@sha256:[0-9a-f]{64}", fullmatch=True), st.just("@sha256:x")),
)
ARCHS = st.one_of(
    st.from_regex(r"(sm|compute)_[0-9]{1,3}[afb]?", fullmatch=True),
    st.from_regex(r"[0-9]{1,2}\.[0-9x][af]?", fullmatch=True),
    st.text(alphabet="sm_.0123456789afx", max_size=8),
)
# Strings are the commonest hand-edit, so they get most of the weight.
ODD_VALUES = st.one_of(
    st.text(max_size=12),
    SPECIAL,
    REFERENCES,
    ARCHS,
    st.text(alphabet="sm_.0123456789+cu-", max_size=10),
    st.none(),
    st.booleans(),
    st.integers(-3, 300),
    st.floats(allow_nan=True),
    st.lists(st.text(max_size=5), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)


def paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside the parsed matrix."""
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            out += paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += paths(value, (*prefix, i))
    return out


ALL_PATHS = paths(VALID)
# Pick a top-level section first, then a path inside it: a uniform pick over all paths would
# rarely touch the small sections (gpus, policy) where a mutation matters most.
BY_SECTION = {key: [p for p in ALL_PATHS if p[0] == key] for key in VALID}
ANY_PATH = st.sampled_from(sorted(BY_SECTION)).flatmap(lambda key: st.sampled_from(BY_SECTION[key]))


def mutate(doc: Any, path: tuple[Any, ...], action: str, value: Any) -> Any:
    import copy

    doc = copy.deepcopy(doc)
    parent = doc
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    if action == "replace":
        parent[last] = value
    elif action == "delete":
        del parent[last]
    elif action == "rename" and isinstance(parent, dict):
        parent[f"{last}x"] = parent.pop(last)
    elif action == "duplicate" and isinstance(parent, list):
        parent.append(parent[last])
    return doc


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fuzz")
    shutil.copytree(REPO / "images", root / "images")
    # The untouched matrix passes, once before any example: the first `check` in a process imports
    # what the later ones reuse, and no example's deadline should pay for that.
    shutil.copy(REPO / "matrix.yaml", root / "matrix.yaml")
    assert main(["check", "--matrix", str(root / "matrix.yaml")]) == 0
    return root


def run_check(workdir: Path, text: str, capsys: pytest.CaptureFixture[str]) -> None:
    matrix = workdir / "matrix.yaml"
    matrix.write_text(text)
    code = main(["check", "--matrix", str(matrix)])
    captured = capsys.readouterr()
    output = captured.out + captured.err
    assert code in (0, 2), output
    assert "Traceback" not in output and "internal error" not in output, output


@settings(
    max_examples=EXAMPLES, deadline=DEADLINE_MS, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    mutations=st.lists(
        st.tuples(
            ANY_PATH,
            st.sampled_from(["replace", "replace", "replace", "delete", "rename", "duplicate"]),
            ODD_VALUES,
        ),
        min_size=1,
        max_size=3,
    )
)
def test_structural_mutations(
    workdir: Path, capsys: pytest.CaptureFixture[str], mutations: list[tuple[tuple[Any, ...], str, Any]]
) -> None:
    doc = VALID
    for path, action, value in mutations:
        try:
            doc = mutate(doc, path, action, value)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed this path
    run_check(workdir, yaml.safe_dump(doc, sort_keys=False), capsys)


@settings(
    max_examples=max(100, EXAMPLES // 3),
    deadline=DEADLINE_MS,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(line=st.integers(0, 200), junk=st.text(max_size=20), cut=st.booleans())
def test_text_mutations(
    workdir: Path, capsys: pytest.CaptureFixture[str], line: int, junk: str, cut: bool
) -> None:
    lines = (REPO / "matrix.yaml").read_text().splitlines(keepends=True)
    at = line % len(lines)
    if cut:
        del lines[at]
    else:
        lines.insert(at, junk + "\n")
    run_check(workdir, "".join(lines), capsys)


@st.composite
def aliased_yaml(draw: st.DrawFn) -> str:
    """The repository's matrix behind a block of anchors and aliases: nested fan-out (up to an
    alias bomb), recursion, and merge keys into a GPU entry."""
    depth = draw(st.integers(1, 9))
    fanout = draw(st.integers(1, 9))
    lines = ['x0: &x0 ["v"]']
    for level in range(1, depth):
        refs = ", ".join(f"*x{level - 1}" for _ in range(fanout))
        lines.append(f"x{level}: &x{level} [{refs}]")
    if draw(st.booleans()):
        lines.append("loop: &loop [1, *loop]")
    text = (REPO / "matrix.yaml").read_text()
    if draw(st.booleans()):
        merge = draw(st.sampled_from(["*gpu", "[*gpu]", "[1]", "*x0"]))
        text = text.replace(
            "  - {name: A40, runpod_id: NVIDIA A40, arch: sm_86, flash_attention: 2}",
            "  - &gpu {name: A40, runpod_id: NVIDIA A40, arch: sm_86, flash_attention: 2}\n"
            f"  - {{<<: {merge}, name: A6000}}",
        )
    return "\n".join(lines) + "\n" + text


@settings(
    max_examples=max(50, EXAMPLES // 3),
    deadline=DEADLINE_MS,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(text=aliased_yaml())
def test_aliases_merges_and_bombs(workdir: Path, capsys: pytest.CaptureFixture[str], text: str) -> None:
    run_check(workdir, text, capsys)


# --- smoke result files: what report and release read, hand-edited -------------------------------

RESULT = json.loads((REPO / "tests" / "golden" / "smoke-results" / "cpu-host.json").read_text())
RESULT_PATHS = paths(RESULT)
# By top-level key first, as for the matrix: the checks list would otherwise take nearly every pick.
RESULT_BY_KEY = {key: [p for p in RESULT_PATHS if p[0] == key] for key in RESULT}
ANY_RESULT_PATH = st.sampled_from(sorted(RESULT_BY_KEY)).flatmap(
    lambda key: st.sampled_from(RESULT_BY_KEY[key])
)


def report_of(result: dict[str, Any], directory: Path) -> int:
    path = directory / "edited.json"
    path.write_text(json.dumps(result))
    report = ["report", "--matrix", str(REPO / "matrix.yaml"), "--results", str(path)]
    return main([*report, "--out", str(directory / "out")])


@pytest.fixture(scope="module")
def report_ready(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The untouched result renders. Run before the examples, so that no example's deadline pays for
    the first import of matplotlib and the report modules (6.4 s once in CI, where this test was the
    first to render a report in its process; 0.5 s an example after)."""
    assert report_of(RESULT, tmp_path_factory.mktemp("report-ready")) == 0


@settings(
    max_examples=max(50, EXAMPLES // 6),  # a report renders plots: about 0.4 s an example
    deadline=DEADLINE_MS,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    mutations=st.lists(
        st.tuples(
            ANY_RESULT_PATH, st.sampled_from(["replace", "replace", "delete", "duplicate"]), ODD_VALUES
        ),
        min_size=1,
        max_size=3,
    )
)
def test_result_mutations_are_reported_or_refused_never_a_traceback(
    workdir: Path,
    capsys: pytest.CaptureFixture[str],
    report_ready: None,
    mutations: list[tuple[tuple[Any, ...], str, Any]],
) -> None:
    """A smoke result the suite wrote, then edited by hand: `buildtool report` renders it (exit 0)
    or refuses it naming the file (exit 2); the release's reading of it agrees."""
    from buildtool.errors import ConfigError
    from buildtool.release import smoke_verdicts
    from buildtool.report.results import read_results

    doc = RESULT
    for path, action, value in mutations:
        try:
            doc = mutate(doc, path, action, value)
        except (KeyError, IndexError, TypeError):
            continue
    code = report_of(doc, workdir)
    result = workdir / "edited.json"
    captured = capsys.readouterr()
    output = captured.out + captured.err
    assert code in (0, 2), output
    assert "Traceback" not in output and "internal error" not in output, output
    if code == 2:
        assert f"{result}:" in output
    try:
        smoke_verdicts(document for _, document in read_results([result]))
    except ConfigError:
        assert code == 2  # refused by both, or by neither
    else:
        assert code == 0, output
