"""The dockerfile scope's own instruction reader against dockerfile_parse, whose algorithm it follows
(each distinct line examined once, so that 1,000 variants of a template share the work)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from conftest import REPO
from dockerfile_parse import DockerfileParser
from hypothesis import given, settings
from hypothesis import strategies as st

from buildtool import api
from buildtool.config.options import Options
from buildtool.policy.dockerfile import instructions


def parsed(text: str) -> list[tuple[str, str, int]]:
    structure = DockerfileParser(fileobj=io.BytesIO(text.encode("utf-8"))).structure
    return [
        (i["instruction"], i["value"], i["startline"] + 1) for i in structure if i["instruction"] != "COMMENT"
    ]


EDGES = [
    "FROM x\nRUN a \\\n  b\n",
    "# syntax=docker/dockerfile:1\n# escape=`\nFROM x\nRUN a `\n  b\nRUN c \\\nCOPY d e\n",
    "FROM x\nRUN a \\\n# a comment inside\n  b \\\n\n  c\nRUN\n",
    "  from   x AS y\nrun --mount=type=bind,from=y,target=/t \\\n    true",
    "FROM x\r\nRUN a \\\r\n b\r\n",
    "\n\n# only comments\n#\nARG A=1\nFROM ${A}\n",
    "FROM x\nRUN a \\   \n    \\\n  \\\nEXPOSE 1\n",
    "FROM x\n# escape=`\nRUN a `\n  b\n",  # a directive after an instruction is a comment
    "FROM x\nRUN \\\n   b\n",  # a value that starts on the next line
]


@pytest.mark.parametrize("text", EDGES)
def test_the_reader_reads_what_dockerfile_parse_reads(text: str) -> None:
    assert instructions(text, {}) == parsed(text)


def test_the_repositorys_rendered_dockerfiles_read_alike(tmp_path: Path) -> None:
    checked = api.check(Options.for_matrix(REPO / "matrix.yaml", build_dir=tmp_path / "build"))
    shared: dict = {}  # one for all the variants, as in a render
    for v in checked.rendering.variants:
        assert instructions(v.dockerfile, shared) == parsed(v.dockerfile), v.name


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                "FROM x",
                "RUN a \\",
                "  b",
                "# c",
                "",
                "   ",
                "COPY --from=y a b",
                "ARG A=1 \\",
                "`",
                "x `",
                "# escape=`",
                "RUN \\",
                "# syntax=z",
                "\tRUN\t",
                "LABEL a=b \\  ",
            ]
        ),
        max_size=12,
    ),
    st.sampled_from(["\n", "\r\n"]),
    st.booleans(),
)
def test_any_arrangement_of_lines_reads_alike(lines: list[str], newline: str, trailing: bool) -> None:
    text = newline.join(lines) + (newline if trailing else "")
    assert instructions(text, {}) == parsed(text)
