from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from buildtool.cli.main import main

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

    @property
    def commit(self) -> str:
        """HEAD's sha: the commit render and build read the templates from (--commit)."""
        return git(self.root, "rev-parse", "HEAD")

    def line_of(self, needle: str) -> int:
        for number, line in enumerate(self.matrix.read_text().splitlines(), 1):
            if needle in line:
                return number
        raise AssertionError(f"{needle!r} not in matrix.yaml")


@pytest.fixture(scope="session", autouse=True)
def layer_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One layer cache for the whole run (the user's ~/.cache is left alone): as on a user's machine,
    a base's layers are measured by the first build that meets them, and remembered after."""
    directory = tmp_path_factory.mktemp("layer-cache")
    previous = os.environ.get("BUILDTOOL_CACHE_DIR")
    os.environ["BUILDTOOL_CACHE_DIR"] = str(directory)
    yield directory
    if previous is None:
        os.environ.pop("BUILDTOOL_CACHE_DIR", None)
    else:
        os.environ["BUILDTOOL_CACHE_DIR"] = previous


@pytest.fixture
def project(tmp_path: Path) -> Project:
    """The repository's matrix.yaml and images/ committed in a checkout of their own: render reads
    a clean revision's templates from the commit, so an edit made after it makes the render -dirty."""
    shutil.copy(REPO / "matrix.yaml", tmp_path / "matrix.yaml")
    shutil.copytree(REPO / "images", tmp_path / "images", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / ".gitignore").write_text("/build/\n")
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-q", "-m", "project", dates=FIXED_DATES)
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
    parser.addoption(
        "--run-vllm",
        action="store_true",
        help="also build and smoke the vLLM worker (about 4 GB more; the scheduled vllm workflow does)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    slow = pytest.mark.skip(reason="slow end-to-end test: run with --run-slow (nox -s tests and CI do)")
    vllm = pytest.mark.skip(
        reason="builds the vLLM worker: run with --run-slow --run-vllm (the scheduled vllm workflow does)"
    )
    for item in items:
        if "slow" in item.keywords and not config.getoption("--run-slow"):
            item.add_marker(slow)
        elif "vllm" in item.keywords and not config.getoption("--run-vllm"):
            item.add_marker(vllm)


# --- container fixtures: the real engine and a real registry:2 --------------------------------

# This machine has /.dockerenv, so testcontainers would hand out bridge addresses to which pushes
# fail; docker_host mode gives localhost:<port>. There is no Ryuk image: fixtures clean up.
os.environ.setdefault("TESTCONTAINERS_CONNECTION_MODE", "docker_host")
os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
TEST_LABEL = "org.runpod-images.test"


def docker_ok() -> None:
    done = subprocess.run(["docker", "info"], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.fail("no Docker engine answers: run ../shared/ci/engine.sh (CI does)", pytrace=False)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RegistryUnderTest:
    container: Any
    address: str  # localhost:PORT

    def digest(self, repository: str, tag: str) -> str | None:
        """The registry's own answer (HTTP API), independent of buildtool's code."""
        import urllib.error
        import urllib.request

        accept = ", ".join(
            [
                "application/vnd.oci.image.index.v1+json",
                "application/vnd.oci.image.manifest.v1+json",
                "application/vnd.docker.distribution.manifest.v2+json",
                "application/vnd.docker.distribution.manifest.list.v2+json",
            ]
        )
        request = urllib.request.Request(
            f"http://{self.address}/v2/{repository}/manifests/{tag}",
            method="HEAD",
            headers={"Accept": accept},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return str(response.headers["Docker-Content-Digest"])
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise

    def tags(self, repository: str) -> list[str]:
        import json as json_module
        import urllib.request

        with urllib.request.urlopen(
            f"http://{self.address}/v2/{repository}/tags/list", timeout=10
        ) as response:
            return sorted(json_module.load(response).get("tags") or [])

    def stop(self) -> None:
        self.container.get_wrapped_container().stop(timeout=2)

    def start(self) -> None:
        from buildtool.registry.local import answers

        self.container.get_wrapped_container().start()
        deadline = time.monotonic() + 30
        while not answers(self.address) and time.monotonic() < deadline:
            time.sleep(0.2)


@contextmanager
def running_registry(
    configure: Callable[[Any], Any] = lambda container: container,
) -> Iterator[RegistryUnderTest]:
    """A real registry:2 on a fixed free port (so that it can be stopped and started again);
    `configure` adds to the testcontainers DockerContainer (environment, volumes)."""
    from testcontainers.core.container import DockerContainer

    from buildtool.registry.local import answers

    docker_ok()
    port = free_port()
    container = configure(
        DockerContainer("registry:2").with_bind_ports(5000, port).with_kwargs(labels={TEST_LABEL: "1"})
    )
    container.start()
    try:
        address = f"localhost:{port}"
        deadline = time.monotonic() + 30
        while not answers(address) and time.monotonic() < deadline:
            time.sleep(0.2)
        yield RegistryUnderTest(container, address)
    finally:
        # With its anonymous volume: the registry's storage (GBs after a push of a torch image),
        # which container.stop() leaves behind run after run until the disk is full.
        container.get_wrapped_container().remove(force=True, v=True)
        remove_images_of(f"localhost:{port}/")


def remove_images_of(prefix: str) -> None:
    """Remove the engine's images whose repository starts with `prefix`: tagged ones, and those
    pulled by digest (the smoke runner runs images as repository@digest)."""
    listed = subprocess.run(
        ["docker", "images", "--digests", "--format", "{{.Repository}} {{.Tag}} {{.Digest}}"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.splitlines()
    mine = []
    for line in listed:
        repository, tag, digest = [*line.split(), "", "", ""][:3]
        if repository.startswith(prefix):
            mine.append(f"{repository}:{tag}" if tag != "<none>" else f"{repository}@{digest}")
    if mine:
        subprocess.run(["docker", "rmi", "--force", *mine], capture_output=True, check=False)


@pytest.fixture
def registry() -> Iterator[RegistryUnderTest]:
    with running_registry() as running:
        yield running


# A fixed time for the `project` fixture's commit: the image's created label is the commit's time,
# and golden files hold it. Not for checkouts that build: a commit made at a fixed time has the same
# sha in every run, and would find its images in a registry that outlived an earlier run.
FIXED_DATES = {"GIT_AUTHOR_DATE": "2001-09-09T01:46:40Z", "GIT_COMMITTER_DATE": "2001-09-09T01:46:40Z"}


def git(root: Path, *args: str, dates: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        ["git", "-C", str(root), *args],
        capture_output=True,
        text=True,
        check=True,
        env={
            **os.environ,
            "GIT_AUTHOR_NAME": "t",
            "GIT_AUTHOR_EMAIL": "t@example.invalid",
            "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@example.invalid",
            **(dates or {}),
        },
    )
    return done.stdout.strip()


def committed_copy(
    source: Path, destination: Path, names: tuple[str, ...] = ("matrix.yaml", "images")
) -> Path:
    """A git checkout of `names` from `source`, with images/_shared from the repository."""
    destination.mkdir(parents=True)
    for name in names:
        if (source / name).is_dir():
            shutil.copytree(source / name, destination / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source / name, destination / name)
    if not (destination / "images" / "_shared").exists():
        shutil.copytree(REPO / "images" / "_shared", destination / "images" / "_shared")
    if not (destination / "smoke").exists():  # the suite every image carries
        shutil.copytree(REPO / "smoke", destination / "smoke", ignore=shutil.ignore_patterns("__pycache__"))
    (destination / ".gitignore").write_text("/build/\n")
    git(destination, "init", "-q")
    git(destination, "add", "-A")
    git(destination, "commit", "-q", "-m", "initial")
    return destination


@pytest.fixture
def tiny(tmp_path: Path) -> Project:
    """The tiny test project as a git checkout (the registry fixtures remove the images it builds)."""
    return Project(committed_copy(REPO / "tests" / "projects" / "tiny", tmp_path / "tiny"))
