"""The wheel users install holds every module: a non-editable install (CI's smoke jobs, pip install
git+...) imports buildtool.policy and smoke.checks like the checkout does."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import REPO

UV = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")


@pytest.mark.slow
def test_the_wheel_holds_every_module_of_the_checkout(tmp_path: Path) -> None:
    assert UV, "uv is a test dependency (pyproject.toml [test])"
    # A clean copy: setuptools would reuse a build/lib/ that an earlier build left in the checkout.
    source = tmp_path / "source"
    patterns = shutil.ignore_patterns(".git", "node_modules", "*.egg-info", ".nox", ".venv")

    def ignore(directory: str, names: list[str]) -> set[str]:
        # The checkout's build/ output only: buildtool/build/ is the build stage's package.
        top = {"build"} if Path(directory) == REPO else set()
        return set(patterns(directory, names)) | (top & set(names))

    shutil.copytree(REPO, source, ignore=ignore)
    done = subprocess.run(
        [UV, "build", "--wheel", "--out-dir", str(tmp_path), str(source)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    wheel = next(tmp_path.glob("*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    # PEP 639: the licence as an SPDX expression (setuptools deprecated the table form, to be refused
    # from 2027-02-18, and warned on every install).
    [metadata] = [n for n in names if n.endswith(".dist-info/METADATA")]
    headers = zipfile.ZipFile(wheel).read(metadata).decode().split("\n\n", 1)[0].splitlines()
    assert "License-Expression: Apache-2.0" in headers
    assert "BuildBackendWarning" not in done.stderr, done.stderr[-2000:]
    for package in ("buildtool", "smoke"):
        for module in (REPO / package).rglob("*.py"):
            assert module.relative_to(REPO).as_posix() in names, (
                f"{module.relative_to(REPO)} is not in {wheel.name}"
            )
