"""One image-reference parser: normalised as the distribution grammar and the Docker engine do."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from buildtool import refs

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("written", "name", "tag", "digest"),
    [
        ("python:3.11-slim", "docker.io/library/python", "3.11-slim", None),
        ("library/python:3.11-slim", "docker.io/library/python", "3.11-slim", None),
        ("docker.io/python:3.11-slim", "docker.io/library/python", "3.11-slim", None),
        ("index.docker.io/library/python", "docker.io/library/python", None, None),
        ("registry-1.docker.io/nvidia/cuda:13.0.0-devel", "docker.io/nvidia/cuda", "13.0.0-devel", None),
        ("registry.hub.docker.com/nvidia/cuda", "docker.io/nvidia/cuda", None, None),
        (f"nvidia/cuda@{DIGEST}", "docker.io/nvidia/cuda", None, DIGEST),
        (f"nvidia/cuda:13.0.0@{DIGEST}", "docker.io/nvidia/cuda", "13.0.0", DIGEST),
        (
            "nvcr.io/nvidia/cuda:13.0.0-devel-ubuntu22.04",
            "nvcr.io/nvidia/cuda",
            "13.0.0-devel-ubuntu22.04",
            None,
        ),
        ("localhost:5000/tiny:slim-abc", "localhost:5000/tiny", "slim-abc", None),
        ("localhost/tiny", "localhost/tiny", None, None),
        ("[::1]:5000/tiny", "[::1]:5000/tiny", None, None),
        ("ghcr.io/org/sub/image:1", "ghcr.io/org/sub/image", "1", None),
    ],
)
def test_references_normalise_as_the_engine_reads_them(
    written: str, name: str, tag: str | None, digest: str | None
) -> None:
    image = refs.parse(written)
    assert (image.name, image.tag, image.digest) == (name, tag, digest)


@pytest.mark.parametrize(
    ("written", "says"),
    [
        ("NVIDIA/cuda:13.0.0", "registry hosts are written in lower case"),
        ("nvidia/CUDA:13.0.0", "repository names are lower case"),
        ("Docker.io/nvidia/cuda", "registry hosts are written in lower case"),
        ("nvidia/cuda:bad tag", "has spaces"),
        ("nvidia/cuda:-x", "is not a tag"),
        ("nvidia/cuda@sha256:xyz", "is not a digest"),
        ("nvidia//cuda", "is not a repository path"),
        ("", "has spaces or is empty"),
    ],
)
def test_what_is_not_a_reference_says_why(written: str, says: str) -> None:
    with pytest.raises(refs.InvalidReference, match=says):
        refs.parse(written)


def test_familiar_names_are_what_users_write() -> None:
    assert refs.parse("docker.io/library/python:3.11").familiar == "python"
    assert refs.parse("index.docker.io/runpod/pytorch:x").familiar == "runpod/pytorch"
    assert refs.parse("ghcr.io/org/x:1").familiar == "ghcr.io/org/x"


def test_is_under_a_registry_or_namespace() -> None:
    image = refs.parse("ghcr.io/acme/custom:1")
    assert image.is_under("ghcr.io") and image.is_under("ghcr.io/acme") and not image.is_under("ghcr.io/ac")
    assert refs.parse("python:3").is_under("index.docker.io")


HUB_HOSTS = st.sampled_from(
    ["", "docker.io/", "index.docker.io/", "registry-1.docker.io/", "registry.hub.docker.com/"]
)


@settings(max_examples=300, deadline=1000)
@given(
    host=HUB_HOSTS,
    library=st.booleans(),
    tag=st.one_of(st.none(), st.from_regex(r"[a-z0-9][a-z0-9._-]{0,20}", fullmatch=True)),
    digest=st.one_of(st.none(), st.from_regex(r"[0-9a-f]{64}", fullmatch=True)),
)
def test_every_spelling_of_a_hub_image_is_one_name(
    host: str, library: bool, tag: str | None, digest: str | None
) -> None:
    written = f"{host}{'library/' if library else ''}python"
    written += f":{tag}" if tag else ""
    written += f"@sha256:{digest}" if digest else ""
    image = refs.parse(written)
    assert image.name == "docker.io/library/python"
    assert (image.tag, image.digest) == (tag, f"sha256:{digest}" if digest else None)
    assert refs.parse(str(image)) == image  # formatting and parsing agree
