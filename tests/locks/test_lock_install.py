"""Image installs that cannot resolve: the lock goes in exactly as written, whatever the index holds
today and whatever pip the base ships, and a lock that lacks a dependency fails the build naming it.

The condition a fresh machine met (issue 27): a locked package (fastapi-cloud-cli) requires another
one with an extra (pydantic[email]>=2.7.4); the lock pins pydantic 2.14.3; pydantic 2.14.4 is
released. Debian 12's pip 23.0.1 in hash mode looks pydantic up again for the extra, takes 2.14.4 and
refuses it as unpinned. Here the same shape with packages made for the test, served by a package
index on this machine's loopback: the lock is written by the real `lock-deps` code (uv) against it,
then a newer release appears, then the image's install line (the real macro) runs in BuildKit,
against the same index copied into the build (file://: bake has no host network to reach loopback).
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import re
import shutil
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REPO, docker_ok

from buildtool.build.engine import BakeOutcome, BuildxEngine
from buildtool.context_files import WorktreeFiles
from buildtool.locks import deps
from buildtool.render import dockerfiles
from smoke import lockcheck

APP, MODELS, EMAIL = "lockdemo-app", "lockdemo-models", "lockdemo-email"
# What the image templates installed with before issue 27: resolution against the index in hash mode.
RESOLVING_INSTALL = (
    "RUN SOURCE_DATE_EPOCH=315532800 pip install --no-cache-dir --require-hashes -r requirements.lock\n"
)


def make_wheel(
    directory: Path, name: str, version: str, requires: tuple[str, ...] = (), extras: tuple[str, ...] = ()
) -> Path:
    """A pure-Python wheel, written by hand (no build backend), as a release on an index is."""
    dist = name.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    metadata += "".join(f"Provides-Extra: {extra}\n" for extra in extras)
    metadata += "".join(f"Requires-Dist: {requirement}\n" for requirement in requires)
    files = {
        f"{dist}/__init__.py": f"VERSION = {version!r}\n",
        f"{info}/METADATA": metadata,
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    files[f"{info}/RECORD"] = "\n".join([*record, f"{info}/RECORD,,"]) + "\n"
    wheel = directory / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in files.items():
            archive.writestr(zipfile.ZipInfo(path, (1980, 1, 1, 0, 0, 0)), text)
    return wheel


@dataclass
class PackageIndex:
    """A PEP 503 simple index on 127.0.0.1, served from a directory, that can publish releases."""

    root: Path
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/simple"

    def publish(
        self, name: str, version: str, requires: tuple[str, ...] = (), extras: tuple[str, ...] = ()
    ) -> None:
        files = self.root / "files"
        files.mkdir(parents=True, exist_ok=True)
        make_wheel(files, name, version, requires, extras)
        project = self.root / "simple" / name
        project.mkdir(parents=True, exist_ok=True)
        links = []
        for wheel in sorted(files.glob(f"{name.replace('-', '_')}-*.whl")):
            sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
            links.append(f'<a href="../../files/{wheel.name}#sha256={sha}">{wheel.name}</a><br>')
        (project / "index.html").write_text("<html><body>\n" + "\n".join(links) + "\n</body></html>\n")


@pytest.fixture
def index(tmp_path: Path) -> Iterator[PackageIndex]:
    served = PackageIndex(tmp_path / "index")
    served.root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(served.root), **kwargs)  # type: ignore[arg-type]

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    served.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield served
    finally:
        server.shutdown()
        server.server_close()


def publish_the_locked_world(index: PackageIndex) -> None:
    index.publish(EMAIL, "1.0")
    index.publish(MODELS, "1.0", requires=(f'{EMAIL}>=1.0 ; extra == "email"',), extras=("email",))
    index.publish(APP, "1.0", requires=(f"{MODELS}[email]>=1.0",))


def write_lock(index: PackageIndex, directory: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The lock as `buildtool lock-deps` writes it (the real code and uv), against the test index."""
    monkeypatch.setenv("UV_DEFAULT_INDEX", index.url)
    monkeypatch.setenv("UV_CACHE_DIR", str(directory / "uv-cache"))
    (directory / deps.INPUT_NAME).write_text(f"{APP}==1.0\n")
    text = deps.generate(deps.LockJob("lockdemo", directory, "3.11", ()))
    (directory / deps.LOCK_NAME).write_text(text)
    return text


def install_line() -> str:
    """The install instruction every image template renders (images/_shared/macros.j2)."""
    env = dockerfiles._environment(REPO / "images" / "worker-embed", WorktreeFiles())
    return env.from_string('{% import "macros.j2" as m %}{{ m.pip_install_locked() }}').render()


# The pips a base can ship: Ubuntu 22.04's, Debian 12's (the runpod/pytorch stand-in's), and a current
# one (get-pip's). Each is installed from its hash lock in tests/locks/, whatever the image has.
PIPS = ("22.0.2", "23.0.1", "25.3")


def build(
    context: Path, index: PackageIndex, install: str, pip: str = "23.0.1"
) -> tuple[BakeOutcome, dict[str, str], str]:
    """Build FROM python:3.11-slim with pip `pip` and the index as the only one it knows; the
    installed set and pip's version come back."""
    docker_ok()
    shutil.copy(REPO / "tests" / "locks" / f"pip-{pip}.lock", context / "pip.lock")
    (context / "smoke").mkdir(exist_ok=True)
    shutil.copy(REPO / "smoke" / "lockcheck.py", context / "smoke" / "lockcheck.py")
    # The same index, as files: bake (buildx 0.13) has no host network to reach the loopback server.
    shutil.rmtree(context / "index", ignore_errors=True)
    shutil.copytree(index.root, context / "index")
    (context / "Dockerfile").write_text(
        "FROM python:3.11-slim AS built\n"
        "ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1\n"
        "COPY pip.lock .\n"
        "RUN python3 -m pip install --require-hashes -r pip.lock\n"
        "COPY index /index\n"
        "ENV PIP_INDEX_URL=file:///index/simple\n"
        "WORKDIR /app\n"
        f"{install}"
        "RUN python3 -m pip list --format=freeze > /installed.txt && python3 -m pip --version > /pip.txt\n"
        "FROM scratch\n"
        "COPY --from=built /installed.txt /pip.txt /\n"
    )
    out = context / "out"
    bake = {
        "target": {
            "lockdemo": {
                "context": ".",
                "dockerfile": "Dockerfile",
                "no-cache": True,  # a fresh machine: nothing of an earlier run is reused
                "output": [f"type=local,dest={out}"],
            }
        }
    }
    (context / "docker-bake.json").write_text(json.dumps(bake))
    outcome = BuildxEngine().bake(context / "docker-bake.json", "lockdemo", {}, context / "build.log")
    installed: dict[str, str] = {}
    ran = ""
    if outcome.ok:
        for line in (out / "installed.txt").read_text().splitlines():
            name, _, version = line.partition("==")
            installed[name.lower()] = version
        ran = (out / "pip.txt").read_text().split()[1]
    return outcome, installed, ran


@pytest.mark.container
@pytest.mark.parametrize("pip", PIPS)
def test_a_newer_release_of_a_package_asked_for_with_an_extra_does_not_stop_the_install(
    index: PackageIndex, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pip: str
) -> None:
    publish_the_locked_world(index)
    context = tmp_path / "context"
    context.mkdir()
    lock = write_lock(index, context, monkeypatch)
    assert {p.name: p.version for p in deps.parse_lock(lock)} == {APP: "1.0", MODELS: "1.0", EMAIL: "1.0"}
    index.publish(MODELS, "1.1", requires=(f'{EMAIL}>=1.0 ; extra == "email"',), extras=("email",))
    outcome, installed, ran = build(context, index, install_line(), pip)
    assert outcome.ok, outcome.error
    assert ran == pip
    assert installed[APP] == "1.0" and installed[MODELS] == "1.0" and installed[EMAIL] == "1.0"


@pytest.mark.container
def test_the_resolving_install_the_templates_had_fails_on_the_same_index(
    index: PackageIndex, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The control: the condition above is real. The install line of the templates before issue 27
    fails on this index with pip 23.0.1, as it did on a fresh machine."""
    publish_the_locked_world(index)
    context = tmp_path / "context"
    context.mkdir()
    write_lock(index, context, monkeypatch)
    index.publish(MODELS, "1.1", requires=(f'{EMAIL}>=1.0 ; extra == "email"',), extras=("email",))
    outcome, _, _ = build(context, index, f"COPY requirements.lock .\n{RESOLVING_INSTALL}", "23.0.1")
    assert not outcome.ok
    log = (context / "build.log").read_text()
    assert "all requirements must have their versions pinned with ==" in log and f"{MODELS}[email]" in log


@pytest.mark.container
def test_a_lock_that_lacks_a_dependency_fails_the_build_naming_it(
    index: PackageIndex, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    publish_the_locked_world(index)
    context = tmp_path / "context"
    context.mkdir()
    lock = write_lock(index, context, monkeypatch)
    # Hand-edited (or written by another tool): lockdemo-email left out.
    (context / deps.LOCK_NAME).write_text(_without_pin(lock, EMAIL))
    outcome, _, _ = build(context, index, install_line())
    assert not outcome.ok
    assert outcome.error is not None
    assert (
        f"{MODELS} 1.0 [email] (asked by {APP} 1.0) requires {EMAIL}>=1.0, which is not installed"
        in outcome.error
    )
    assert "buildtool lock-deps" in outcome.error


@pytest.mark.container
def test_a_file_that_does_not_match_its_hash_fails_the_build_naming_the_package(
    index: PackageIndex, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The index serves another file than the one locked (a re-upload, a tampered mirror): pip's own
    words reach the build's message, with the package they name."""
    publish_the_locked_world(index)
    context = tmp_path / "context"
    context.mkdir()
    lock = write_lock(index, context, monkeypatch)
    sha = re.search(rf"{EMAIL}==1\.0 \\\n    --hash=sha256:([0-9a-f]{{64}})", lock)
    assert sha is not None
    (context / deps.LOCK_NAME).write_text(lock.replace(sha[1], "0" * 64))
    outcome, _, _ = build(context, index, install_line())
    assert not outcome.ok and outcome.error is not None
    assert "pip: THESE PACKAGES DO NOT MATCH THE HASHES FROM THE REQUIREMENTS FILE" in outcome.error
    assert f"{EMAIL}==1.0 from file:///index/files/lockdemo_email-1.0-py3-none-any.whl" in outcome.error


def _without_pin(lock: str, name: str) -> str:
    """The lock with one package's entry (its pin line, hashes and annotations) removed."""
    out: list[str] = []
    skipping = False
    for line in lock.splitlines():
        if line.startswith(f"{name}=="):
            skipping = True
            continue
        if skipping and line.startswith(" "):
            continue
        skipping = False
        out.append(line)
    return "\n".join(out) + "\n"


# --- smoke/lockcheck.py on its own: distributions on a path made for the test -----------------


def dist_info(
    site: Path, name: str, version: str, requires: tuple[str, ...] = (), extras: tuple[str, ...] = ()
) -> None:
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    text = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    text += "".join(f"Provides-Extra: {extra}\n" for extra in extras)
    text += "".join(f"Requires-Dist: {requirement}\n" for requirement in requires)
    (info / "METADATA").write_text(text)


def test_lockcheck_follows_extras_and_pins(tmp_path: Path) -> None:
    site = tmp_path / "site"
    dist_info(site, APP, "1.0", (f"{MODELS}[email]>=1.0", "gone>=2 ; python_version < '3'"))
    dist_info(site, MODELS, "1.1", (f'{EMAIL}>=1.0 ; extra == "email"', "base-lib>=2"))
    dist_info(site, "base-lib", "1.5")  # shipped by the base, at a version MODELS does not accept
    lock = f"{APP}==1.0 \\\n    --hash=sha256:00\n{MODELS}==1.0 \\\n    --hash=sha256:11\n    # via {APP}\n"
    found = lockcheck.problems(lock, lockcheck.installed([str(site)]))
    assert found == [
        f"the lock pins {MODELS}==1.0, but 1.1 is installed",
        f"{MODELS} 1.1 requires base-lib>=2, but 1.5 is installed",
        f"{MODELS} 1.1 [email] (asked by {APP} 1.0) requires {EMAIL}>=1.0, which is not installed",
    ]


def test_lockcheck_passes_a_whole_lock_and_ignores_pins_for_other_platforms(tmp_path: Path) -> None:
    site = tmp_path / "site"
    dist_info(site, APP, "1.0", (f"{MODELS}>=1.0",))
    dist_info(site, MODELS, "1.0")
    lock = (
        f"{APP}==1.0 --hash=sha256:00\n{MODELS}==1.0 --hash=sha256:11\nwinonly==1 ; sys_platform == 'win32'\n"
    )
    assert lockcheck.problems(lock, lockcheck.installed([str(site)])) == []


def lockcheck_alone(directory: Path, lock_text: str) -> subprocess.CompletedProcess[str]:
    """smoke/lockcheck.py as the build runs it: a file on its own, not the smoke package."""
    lock = directory / "requirements.lock"
    lock.write_text(lock_text)
    script = directory / "lockcheck.py"
    shutil.copy(REPO / "smoke" / "lockcheck.py", script)
    return subprocess.run(
        [sys.executable, str(script), str(lock)], capture_output=True, text=True, check=False, cwd=directory
    )


def test_lockcheck_runs_standalone_and_says_how_to_fix(tmp_path: Path) -> None:
    """As the build runs it: a file on its own, not the smoke package."""
    done = lockcheck_alone(tmp_path, "surely-not-installed-here==1.0 --hash=sha256:00\n")
    assert done.returncode == 1
    assert "lockcheck: surely-not-installed-here==1.0 is in the lock but not installed" in done.stdout
    assert "buildtool lock-deps" in done.stdout


def test_lockcheck_matches_an_extra_however_its_name_is_spelled(tmp_path: Path) -> None:
    """lib declares the extra 'use_fast' and its marker says extra == "use_fast"; app asks for
    lib[use_fast]. The packaging pip 24.0 and older vendor compares extra names as written, so the
    normalised 'use-fast' alone would never match and speedup's absence would pass unseen."""
    site = tmp_path / "site"
    dist_info(site, "app", "1.0", ("lib[use_fast]>=1",))
    dist_info(site, "lib", "1.0", ('speedup>=2 ; extra == "use_fast"',), extras=("use_fast",))
    lock = "app==1.0 --hash=sha256:00\nlib==1.0 --hash=sha256:11\n"
    assert lockcheck.problems(lock, lockcheck.installed([str(site)])) == [
        "lib 1.0 [use-fast] (asked by app 1.0) requires speedup>=2, which is not installed"
    ]


def test_lockcheck_names_a_line_of_the_lock_that_is_no_requirement(tmp_path: Path) -> None:
    done = lockcheck_alone(tmp_path, "this is == not a requirement\n")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "lockcheck: not a requirement in the lock: 'this is == not a requirement'" in done.stdout
