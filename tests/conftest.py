from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from buildtool.cli import main

REPO = Path(__file__).resolve().parent.parent
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class Result:
    code: int
    out: str
    err: str


@dataclass
class Project:
    """A copy of the repository's matrix.yaml and images/ in a temporary directory."""

    root: Path

    @property
    def matrix(self) -> Path:
        return self.root / "matrix.yaml"

    def edit(self, old: str, new: str, count: int = 1) -> None:
        text = self.matrix.read_text()
        assert old in text, f"{old!r} not in matrix.yaml"
        self.matrix.write_text(text.replace(old, new, count))

    def line_of(self, needle: str) -> int:
        for number, line in enumerate(self.matrix.read_text().splitlines(), 1):
            if needle in line:
                return number
        raise AssertionError(f"{needle!r} not in matrix.yaml")


@pytest.fixture
def project(tmp_path: Path) -> Project:
    shutil.copy(REPO / "matrix.yaml", tmp_path / "matrix.yaml")
    shutil.copytree(REPO / "images", tmp_path / "images", ignore=shutil.ignore_patterns("__pycache__"))
    return Project(tmp_path)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Run the CLI in-process (fast); returns exit code and captured output."""
    monkeypatch.setenv("COLUMNS", "200")

    def run(*args: str) -> Result:
        code = main(list(args))
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


def run_module(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> Result:
    """Run `python -m buildtool` as a user would: a real process, real exit code and stderr."""
    inherited = {k: v for k, v in os.environ.items() if k != "GITHUB_ACTIONS"}
    full_env = {**inherited, "COLUMNS": "200", **(env or {})}
    done = subprocess.run(
        [sys.executable, "-m", "buildtool", *args],
        capture_output=True,
        text=True,
        cwd=cwd or REPO,
        env={**full_env, "PYTHONPATH": str(REPO)},
        timeout=120,
    )
    return Result(done.returncode, done.stdout, done.stderr)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="also run the slow end-to-end tests (CI does)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow end-to-end test: run with --run-slow (nox -s tests and CI do)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
