"""A failed build names the step and the package: pip's and lockcheck's words from the step's own
output (engine), in the build's message and in the GitHub job summary; a lock that uv's full
resolution does not cover is refused when it is written (locks/deps.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from buildtool.build import step_failure
from buildtool.build.result import BuildResult, VariantResult
from buildtool.cli import github
from buildtool.errors import EngineError, Problem
from buildtool.locks import deps

# pip 23.0.1's own output when the image templates resolved against the index (issue 27).
PIP_UNPINNED = [
    "Collecting agent-detector==2.0.0",
    "ERROR: In --require-hashes mode, all requirements must have their versions pinned with ==. "
    "These do not:",
    "    pydantic[email]>=2.7.4 from https://files.example/pydantic-2.14.4-py3-none-any.whl "
    "(from fastapi-cloud-cli==0.28.0)",
]


def test_pip_s_error_and_the_package_it_names() -> None:
    said = step_failure.explain(PIP_UNPINNED)
    assert said is not None and said.startswith("pip: In --require-hashes mode")
    assert "These do not: pydantic[email]>=2.7.4 from" in said


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (
            ["ERROR: Could not find a version that satisfies the requirement gone==1.0 (from versions: 1.1)"],
            "pip: Could not find a version that satisfies the requirement gone==1.0 (from versions: 1.1)",
        ),
        (
            ["lockcheck: a 1.0 requires b>=2, which is not installed", "lockcheck: fix: buildtool lock-deps"],
            "lockcheck: a 1.0 requires b>=2, which is not installed; fix: buildtool lock-deps",
        ),
        (["Step output with no installer error"], None),
        (
            [
                "ERROR: THESE PACKAGES DO NOT MATCH THE HASHES FROM THE REQUIREMENTS FILE. If you have "
                "updated the package versions, please update the hashes.",
                "    pydantic==2.14.3 from https://files.example/pydantic-2.14.3-py3-none-any.whl:",
                "        Expected sha256 00",
                "             Got        11",
                "",
            ],
            "pip: THESE PACKAGES DO NOT MATCH THE HASHES FROM THE REQUIREMENTS FILE. If you have updated "
            "the package versions, please update the hashes. pydantic==2.14.3 from "
            "https://files.example/pydantic-2.14.3-py3-none-any.whl: Expected sha256 00 Got        11",
        ),
    ],
)
def test_what_other_failures_say(lines: list[str], expected: str | None) -> None:
    assert step_failure.explain(lines) == expected


def test_the_job_summary_names_the_failed_step_and_the_package() -> None:
    message = "step '[4/9] RUN python3 -m pip install ...' failed: exit code: 1: " + str(
        step_failure.explain(PIP_UNPINNED)
    )
    failed = VariantResult(
        "worker-embed-runpod-torch211-cu130",
        "failed",
        "r/worker-embed:x",
        (),
        "runpod/pytorch:2.11",
        None,
        problem=Problem(message, variant="worker-embed-runpod-torch211-cu130", hint="read | the log"),
    )
    result = BuildResult("0123456789abcdef", False, "localhost:5000", (failed,), (), None, Path("m.json"), ())
    summary = github.build_summary(result)
    row = next(line for line in summary.splitlines() if line.startswith("| worker-embed"))
    assert "| failed |" in row and "[4/9] RUN python3 -m pip install" in row
    assert "pydantic[email]>=2.7.4" in row and "read \\| the log" in row  # a | would split the cell
    assert summary.count("\n|") == 3  # header, rule, one row: the message's line breaks are gone


def pin(name: str, version: str, hashes: int = 1) -> deps.LockedPin:
    return deps.LockedPin(name, version, hashes, 1)


def test_a_lock_that_misses_a_package_of_the_full_resolution_is_refused_when_written() -> None:
    resolved = [
        pin("app", "1.0"),
        pin("email", "1.0"),
        pin("torch", "2.11.0"),
        pin("numpy", "2.4.6"),
        pin("numpy", "2.5.5"),
    ]
    locked = [pin("app", "1.0"), pin("numpy", "2.4.6"), pin("numpy", "2.5.5")]
    with pytest.raises(EngineError) as raised:
        deps.complete_lock("probe", locked, {"torch"}, resolved)
    assert "needed but not locked: email==1.0" in str(raised.value)
    deps.complete_lock("probe", [*locked, pin("email", "1.0")], {"torch"}, resolved)  # whole: no error
    with pytest.raises(EngineError, match=r"without a hash: email==1\.0"):
        deps.complete_lock("probe", [*locked, pin("email", "1.0", hashes=0)], {"torch"}, resolved)
