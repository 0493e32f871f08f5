"""The reproducible-layers rule: the Dockerfile shapes that give a layer the build's own clock are
refused with their line, the shapes the templates use pass. What each shape does was measured on
BuildKit 0.13 (two builds from nothing, layer by layer: docs/building.md); the tiny project's
from-nothing rebuild (tests/build/test_reproducible.py) holds the accepted shapes to the engine."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import REPO

from buildtool import api
from buildtool.config.matrix import load_matrix
from buildtool.config.options import Options
from buildtool.policy.dockerfile import RenderedDockerfile, reproducible_layers
from buildtool.policy.registry import Context

SHELL = 'SHELL ["/bin/sh", "-c", "touch /.buildtool-step && ...", "buildtool-run"]'


def findings(text: str) -> list[tuple[int | None, str]]:
    context = Context(load_matrix(REPO / "matrix.yaml"))
    dockerfile = RenderedDockerfile(text, Path("build/v/Dockerfile"), {})
    return [
        (f.problem.location.line if f.problem.location else None, f.problem.message)
        for f in reproducible_layers(dockerfile, context)
    ]


ACCEPTED = [
    f"FROM x\n{SHELL}\nRUN mkdir -p /app /opt/smoke/smoke\nWORKDIR /app\n"
    "COPY app/ /app/\nCOPY smoke/ /opt/smoke/smoke/\n",
    f"FROM x\n{SHELL}\nCOPY app/ /app/\nWORKDIR /app\nCOPY more/ ./\n",  # /app made by the first COPY
    f"FROM x\n{SHELL}\nCOPY --link opt/ /opt/\n",  # --link onto a directory under /
    f"FROM x\n{SHELL}\nRUN echo ok && mkdir -p /srv/data/cache; echo made\n"
    "WORKDIR /srv/data/cache\nWORKDIR ..\n",
    "FROM scratch AS empty\nFROM x\n"
    + SHELL
    + "\nRUN --mount=type=bind,source=a.lock,target=/tmp/a.lock pip install -r /tmp/a.lock\n",
    f'FROM x\n{SHELL}\nCOPY ["app/", "/app/"]\n',
]


@pytest.mark.parametrize("text", ACCEPTED)
def test_the_shapes_that_rebuild_alike_pass(text: str) -> None:
    assert findings(text) == []


REFUSED = [
    # (Dockerfile, the line refused, words of the message)
    (f"FROM x\n{SHELL}\nWORKDIR /app\nCOPY app/ ./\n", 3, "WORKDIR /app makes /app"),
    (f"FROM x\n{SHELL}\nRUN mkdir /app\nCOPY handler.py /app/\n", 4, "copies a file"),
    (f"FROM x\n{SHELL}\nCOPY smoke/ /opt/smoke/smoke/\n", 3, "/opt/smoke/smoke is not made by then"),
    (f"FROM x\n{SHELL}\nRUN mkdir -p /opt/s\nCOPY --link smoke/ /opt/s/\n", 4, "--link makes its parents"),
    (
        f"FROM x\n{SHELL}\nRUN mkdir -p /app\nCOPY app/ /app\n",
        4,
        "COPY app/ /app",
    ),  # onto a name, not a directory
    ("FROM x\nRUN pip install torch\n", 2, "RUN before the reproducible shell"),
    (f'FROM x\n{SHELL}\nRUN ["python", "-c", "1"]\n', 3, "exec form"),
    # A new stage starts without the shell and without the directories of the one before.
    (
        f"FROM x AS one\n{SHELL}\nRUN mkdir -p /app\nFROM x\n{SHELL}\nCOPY app/ /app/x/\n",
        6,
        "/app/x is not made",
    ),
]


@pytest.mark.parametrize(("text", "line", "words"), REFUSED)
def test_a_shape_that_takes_the_builds_clock_is_refused_at_its_line(text: str, line: int, words: str) -> None:
    found = findings(text)
    assert [at for at, _ in found] == [line], found
    assert words in found[0][1]


def test_the_fix_names_the_macro_and_the_docs() -> None:
    context = Context(load_matrix(REPO / "matrix.yaml"))
    text = f"FROM x\n{SHELL}\nWORKDIR /srv/app\n"
    (finding,) = reproducible_layers(RenderedDockerfile(text, Path("Dockerfile"), {}), context)
    assert '{{ m.directories("/srv/app") }}' in (finding.problem.hint or "")
    assert "docs/building.md" in (finding.problem.hint or "")


def test_the_repositorys_templates_pass_and_a_handler_copied_as_a_file_is_refused(tmp_path: Path) -> None:
    """What `buildtool check` says of the shipped templates, and of the shape they had before."""
    # A refusal would raise: every rule passes the shipped templates.
    checked = api.check(Options.for_matrix(REPO / "matrix.yaml", build_dir=tmp_path / "build"))
    context = Context(load_matrix(REPO / "matrix.yaml"))
    workers = [v for v in checked.rendering.variants if "COPY app/ /app/" in v.dockerfile]
    assert len(workers) >= 3  # worker-embed, -diffusion, -vllm
    for v in workers:
        before = v.dockerfile.replace("COPY app/ /app/", "COPY handler.py .")
        found = list(reproducible_layers(RenderedDockerfile(before, Path("Dockerfile"), {}), context))
        assert [f.problem.message for f in found if "handler.py" in f.problem.message], v.name
