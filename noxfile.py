"""nox sessions: lint, tests, render (the checks), build (the main job), bench.

nox -s tests     the whole suite, container and slow end-to-end tests included (CI runs this)
nox -s build     render, check, build and push the selected variants (default: the default variant)
"""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True
PYTHON = "3.11"


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    session.install("-e", ".[lint,test]")
    session.run("ruff", "check", "buildtool", "smoke", "tests", "bench", "noxfile.py")
    session.run("ruff", "format", "--check", "--diff", "buildtool", "smoke", "bench", "noxfile.py")
    session.run("mypy")


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Everything, container tests and slow end-to-end tests too; needs ../shared/ci/engine.sh."""
    session.install("-e", ".[test]")
    session.run(
        "pytest",
        "--run-slow",
        *session.posargs,
        env={"TESTCONTAINERS_CONNECTION_MODE": "docker_host", "TESTCONTAINERS_RYUK_DISABLED": "true"},
    )


@nox.session(python=PYTHON)
def fuzz(session: nox.Session) -> None:
    """The hypothesis properties over hostile matrix input at 10,000 examples (each time-bounded)."""
    session.install("-e", ".[test]")
    session.run("pytest", "tests/test_fuzz.py", "-q", env={"FUZZ_EXAMPLES": "10000"})


@nox.session(python=PYTHON)
def build(session: nox.Session) -> None:
    """The main job: render, check, build and push. Default: the matrix's default_variant to the
    embedded registry (or $REGISTRY). Pass buildtool build options after --, e.g. -- --select '*'."""
    session.install("-e", ".")
    session.run("buildtool", "build", *(session.posargs or ["--default"]))


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Benchmarks (ratios measured in one run); empties the engine's build cache. -- --skip-builds for
    the render figures only."""
    session.install("-e", ".")
    session.run("python", "bench/bench_pipeline.py", *session.posargs)


@nox.session(python=PYTHON)
def lock(session: nox.Session) -> None:
    """Each image's requirements.lock from its requirements.in (uv, with hashes); -- --image NAME."""
    session.install("-e", ".[lock]")
    session.run("buildtool", "lock-deps", *session.posargs)


@nox.session(python=PYTHON)
def render(session: nox.Session) -> None:
    """plan + check + render; pass --select PATTERN after --."""
    session.install("-e", ".")
    session.run("buildtool", "plan", *session.posargs)
    session.run("buildtool", "check", *session.posargs)
    session.run("buildtool", "render", *session.posargs)
