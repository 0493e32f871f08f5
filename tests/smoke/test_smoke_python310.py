"""Bare GPU hosts run the suite with whatever python3 they have: Ubuntu 22.04's is 3.10, which runs
it; an older one is refused in one line, never a traceback. Run with real interpreters of those
versions (pyenv's, or any python3.X on PATH)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import REPO


def interpreter(version: str) -> str | None:
    """A working python<version> on this machine, or None."""
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates = [shutil.which(f"python{version}")]
    candidates += [str(p / "bin" / "python") for p in sorted(root.glob(f"versions/{version}.*"))]
    for candidate in filter(None, candidates):
        done = subprocess.run([candidate, "--version"], capture_output=True, text=True, check=False)
        if done.returncode == 0 and done.stdout.startswith(f"Python {version}."):
            return candidate
    return None


def run(python: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([python, *args], capture_output=True, text=True, cwd=REPO, env=env, check=False)


def test_python_3_10_lists_the_checks_and_imports_every_module_of_the_suite() -> None:
    python = interpreter("3.10")
    if python is None:
        pytest.skip("no Python 3.10 interpreter on this machine")
    listed = run(python, "-m", "smoke", "--list")
    assert listed.returncode == 0, listed.stderr
    assert "environment.driver" in listed.stdout.split()
    # Every module imports on 3.10; only the packages a bare 3.10 lacks here (torch) may be missing.
    modules = sorted(
        ".".join(p.relative_to(REPO).with_suffix("").parts) for p in (REPO / "smoke").rglob("*.py")
    )
    script = (
        "import importlib, sys\n"
        "for name in sys.argv[1:]:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except ModuleNotFoundError as exc:\n"
        "        if exc.name not in ('torch', 'numpy', 'kernels', 'runpod'):\n"
        "            raise\n"
    )
    imported = run(python, "-c", script, *modules)
    assert imported.returncode == 0, imported.stderr[-2000:]


def test_an_older_python_is_refused_in_one_line() -> None:
    python = interpreter("3.9")
    if python is None:
        pytest.skip("no Python 3.9 interpreter on this machine")
    done = run(python, "-m", "smoke", "--list")
    assert done.returncode == 1 and done.stdout == ""
    assert (
        done.stderr.count("\n") == 1
        and "python -m smoke needs Python 3.10 or newer; this is 3.9" in done.stderr
    )
