"""Renders and builds are exclusive and crash-safe (issue 29): a second run waits for the first,
and a render killed at any point leaves the previous rendering whole; the next run cleans up."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import REPO, Project, git

from buildtool.build_dir import exclusive
from buildtool.cli.main import main

GPU = "{name: H100, runpod_id"
MARK = "H100X"


def start_render(project: Project) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    env.pop("GITHUB_ACTIONS", None)
    command = [sys.executable, "-m", "buildtool", "render", "--matrix", str(project.matrix)]
    return subprocess.Popen(
        [*command, "--registry", "localhost:5000"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def whole_rendering(build: Path) -> bool | None:
    """Which of the two matrices the rendering on disk is (True: MARK's), or None before any; fails
    on a mix, or on a target of the bake file without its Dockerfile. Reads only what a user reads:
    build/docker-bake.json and build/<target>/Dockerfile."""
    if not (build / "docker-bake.json").exists():
        return None
    bake = json.loads((build / "docker-bake.json").read_text())
    seen = set()
    for target in bake["target"]:
        dockerfile = (build / target / "Dockerfile").read_text()
        assert dockerfile.count("\nFROM ") >= 1
        if "org.runpod-images.gpus" in dockerfile:
            seen.add(MARK in dockerfile)
    assert len(seen) == 1, f"a mixed rendering: some Dockerfiles say {MARK}, some do not"
    return seen.pop()


def test_a_second_run_waits_for_the_first_and_says_so(project: Project) -> None:
    build = project.root / "build"
    notes: list[str] = []
    with exclusive(build, notes.append):
        process = start_render(project)
        time.sleep(3)
        assert process.poll() is None, process.communicate()  # still waiting for the lock
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert "waiting for buildtool pid" in out and str(build / ".buildtool.lock") in out
    assert whole_rendering(build) is not None


def test_two_runs_in_threads_take_turns(project: Project) -> None:
    build = project.root / "build"
    order: list[str] = []

    def hold(name: str) -> None:
        with exclusive(build):
            order.append(f"{name} in")
            time.sleep(0.3)
            order.append(f"{name} out")

    threads = [threading.Thread(target=hold, args=(n,)) for n in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert order in (["a in", "a out", "b in", "b out"], ["b in", "b out", "a in", "a out"])


@pytest.mark.slow
def test_a_render_killed_at_random_points_leaves_a_whole_rendering(project: Project) -> None:
    """Killed 40 times at random points, alternating between two versions of the matrix: after each
    kill the rendering in use is whole (one version throughout), and a last render succeeds."""
    # A large context file makes the write phase a good part of a render's time.
    (project.root / "images" / "worker-embed" / "weights.bin").write_bytes(os.urandom(24 << 20))
    git(project.root, "add", "-A")
    git(project.root, "commit", "-qm", "weights")
    build = project.root / "build"
    started = time.monotonic()
    process = start_render(project)
    assert process.wait(timeout=300) == 0, process.communicate()
    duration = time.monotonic() - started
    rng = random.Random(29)
    seen: set[bool | None] = set()
    for attempt in range(40):
        project.edit(
            *(
                ("version: 0.1.0", "version: 0.1.1")
                if attempt % 2 == 0
                else ("version: 0.1.1", "version: 0.1.0")
            )
        )
        process = start_render(project)
        time.sleep(rng.uniform(0.3, 1.1) * duration)
        process.send_signal(signal.SIGKILL)
        process.communicate()
        seen.add(whole_rendering(build))
    assert len(seen) >= 1
    process = start_render(project)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    assert whole_rendering(build) is False  # the last edit (H100 again): its rendering, whole
    assert len(list((build / ".renders").iterdir())) == 1  # what killed runs left is gone
    assert not [p for p in build.iterdir() if p.name.startswith((".link-", ".render-", ".old-"))]


FILE_OPERATIONS = (
    (Path, "write_bytes"),
    (Path, "mkdir"),
    (Path, "chmod"),
    (Path, "rename"),
    (Path, "replace"),
    (Path, "symlink_to"),
    (Path, "unlink"),
    (shutil, "rmtree"),
)


def render_dying_at(project: Project, operation: int | None) -> int:
    """Render in a forked process that dies (os._exit: no finally, no cleanup, like kill -9) just
    before its `operation`-th file operation; None: count them and live. Returns the count."""
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover (the child)
        os.close(read)
        calls = 0

        def wrap(owner: object, name: str) -> None:
            original = getattr(owner, name)

            def counted(*args: object, **kwargs: object) -> object:
                nonlocal calls
                calls += 1
                if calls == operation:
                    os._exit(137)
                return original(*args, **kwargs)

            setattr(owner, name, counted)

        for owner, name in FILE_OPERATIONS:
            wrap(owner, name)
        code = main(["render", "--matrix", str(project.matrix), "--registry", "localhost:5000"])
        os.write(write, str(calls).encode())
        os._exit(code)
    os.close(write)
    _, status = os.waitpid(child, 0)
    count = os.read(read, 64).decode()
    os.close(read)
    if operation is None:
        assert os.waitstatus_to_exitcode(status) == 0
        return int(count)
    assert os.waitstatus_to_exitcode(status) == 137, "the render finished before the operation"
    return operation


@pytest.mark.slow
def test_a_render_dying_before_any_of_its_file_operations_leaves_a_whole_rendering(project: Project) -> None:
    """Every point of a render: die before each file operation in turn (a sample of the many file
    writes, every operation of the switch); the rendering on disk stays whole, the next succeeds."""
    build = project.root / "build"
    assert render_dying_at(project, None) > 0
    project.edit(GPU, GPU.replace("H100", MARK))
    total = render_dying_at(project, None)  # how many operations a render of the other matrix takes
    project.edit(GPU.replace("H100", MARK), GPU)
    assert render_dying_at(project, None) > 0
    points = sorted(
        {
            *random.Random(29).sample(range(1, total + 1), min(total, 25)),
            *range(max(1, total - 30), total + 1),
        }
    )
    for point in points:
        project.edit(GPU, GPU.replace("H100", MARK))
        render_dying_at(project, point)
        assert whole_rendering(build) is not None, f"nothing whole after dying at operation {point}"
        project.edit(GPU.replace("H100", MARK), GPU)
        assert render_dying_at(project, None) > 0, f"the render after one that died at {point} failed"
        assert whole_rendering(build) is False
