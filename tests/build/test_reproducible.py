"""Reproducible images: the same commit gives the same digest anywhere, or is not rebuilt.

Real engine, real registry:2 containers. A "fresh machine" is simulated as far as one engine allows:
a fresh `git clone` (new file times), no build cache (`docker buildx prune -af`), no build
directory, and an empty registry.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import Project, RegistryUnderTest, git, running_registry

pytestmark = pytest.mark.container


def build(root: Path, registry: str, *extra: str, cli) -> tuple[int, str, dict]:  # type: ignore[no-untyped-def,type-arg]
    result = cli("build", "--matrix", str(root / "matrix.yaml"), "--registry", registry, *extra)
    manifest_path = root / "build" / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    return result.code, result.out + result.err, manifest


def fresh_clone(source: Path, destination: Path) -> Path:
    git(destination.parent, "clone", "-q", str(source), str(destination))
    return destination


def forget_build_cache() -> None:
    subprocess.run(["docker", "buildx", "prune", "-af"], check=True, capture_output=True)


def digests(manifest: dict) -> dict[str, str]:  # type: ignore[type-arg]
    return {name: entry["digest"] for name, entry in manifest["variants"].items()}


def test_two_builds_of_a_commit_from_nothing_give_the_same_digest(
    cli,  # type: ignore[no-untyped-def]
    tiny: Project,
    registry: RegistryUnderTest,
    tmp_path: Path,
) -> None:
    """The tiny image pip-installs a locked package (.pyc files), writes a file in a RUN step and
    copies files from the checkout: every kind of layer whose bytes could depend on the clock."""
    # One variant: the two tiny variants share steps, and one would reuse the other's in a run.
    code, output, first = build(tiny.root, registry.address, "--select", "tiny-slim", cli=cli)
    assert code == 0, output
    assert first["variants"]["tiny-slim"]["status"] == "pushed"

    forget_build_cache()
    clone = fresh_clone(tiny.root, tmp_path / "elsewhere")  # other file times, no build/
    with running_registry() as empty:
        code, output, second = build(clone, empty.address, "--select", "tiny-slim", cli=cli)
        assert code == 0, output
        rebuilt = second["variants"]["tiny-slim"]
        assert rebuilt["status"] == "pushed"
        assert rebuilt["cached_steps"] == 0 and rebuilt["steps"] >= 4  # built, not taken from a cache
        assert digests(second) == digests(first)
        sha = git(clone, "rev-parse", "HEAD")
        assert empty.digest("tiny", f"slim-{sha}") == first["variants"]["tiny-slim"]["digest"]


def test_an_edit_built_on_an_engine_that_built_the_commit_before_gives_the_digest_from_nothing(
    cli,  # type: ignore[no-untyped-def]
    tiny: Project,
    registry: RegistryUnderTest,
    tmp_path: Path,
) -> None:
    """The way CI and developers build: commit after commit on one engine, never pruned. buildx keys
    BuildKit's copy of a context by the directory's name, and BuildKit's incremental transfer gave a
    directory whose files changed since the last transfer the time of the transfer: `COPY app/ /app/`
    copied it into the layer, and another machine built another digest for the same commit."""
    code, output, _ = build(tiny.root, registry.address, "--select", "tiny-slim", cli=cli)
    assert code == 0, output
    app = tiny.root / "images" / "tiny" / "app" / "app.py"
    app.write_text(app.read_text().replace("version 1", "version 2"))
    git(tiny.root, "commit", "-qam", "the one-line change")
    code, output, edited = build(tiny.root, registry.address, "--select", "tiny-slim", cli=cli)
    assert code == 0, output
    assert edited["variants"]["tiny-slim"]["status"] == "pushed"

    forget_build_cache()
    clone = fresh_clone(tiny.root, tmp_path / "elsewhere")
    with running_registry() as empty:
        code, output, from_nothing = build(clone, empty.address, "--select", "tiny-slim", cli=cli)
        assert code == 0, output
        assert digests(from_nothing) == digests(edited)


def test_a_re_run_on_a_fresh_engine_builds_nothing_and_exits_0(
    cli,  # type: ignore[no-untyped-def]
    tiny: Project,
    registry: RegistryUnderTest,
    tmp_path: Path,
) -> None:
    """A CI re-run: the same commit on a fresh runner, the registry holding the tags."""
    code, output, first = build(tiny.root, registry.address, cli=cli)
    assert code == 0, output
    forget_build_cache()
    clone = fresh_clone(tiny.root, tmp_path / "rerun")
    code, output, again = build(clone, registry.address, cli=cli)
    assert code == 0, output
    assert {v["status"] for v in again["variants"].values()} == {"built-earlier"}
    assert digests(again) == digests(first)
    assert not (clone / "build" / "logs").exists()  # no bake ran
    assert not (clone / "build" / "oci").exists()
    assert "already in the registry" in output and "from the commit of" in output
    assert registry.digest("tiny", "latest") == first["variants"]["tiny-slim"]["digest"]


def test_a_tag_squatted_by_another_image_is_not_taken_for_this_commit(
    cli,  # type: ignore[no-untyped-def]
    tiny: Project,
    registry: RegistryUnderTest,
) -> None:
    """Only an image whose labels say it is this variant from this commit counts as built."""
    sha = git(tiny.root, "rev-parse", "HEAD")
    squatter = f"{registry.address}/tiny:slim-{sha}"
    subprocess.run(["docker", "tag", "python:3.11-slim", squatter], check=True)
    subprocess.run(["docker", "push", "-q", squatter], check=True, capture_output=True)
    subprocess.run(["docker", "rmi", squatter], check=True, capture_output=True)
    code, output, manifest = build(tiny.root, registry.address, "--select", "tiny-slim", cli=cli)
    assert code == 1
    assert "refusing to overwrite" in output and "--check-reproducible" in output
    assert "tiny-slim" in manifest["failed"]
    # The refused image got no engine tag (the build exports a layout, never into the engine).
    inspect = subprocess.run(["docker", "image", "inspect", squatter], capture_output=True, check=False)
    assert inspect.returncode != 0


def test_check_reproducible_passes_on_a_reproducible_image(
    cli,  # type: ignore[no-untyped-def]
    tiny: Project,
    registry: RegistryUnderTest,
) -> None:
    code, output, _ = build(
        tiny.root, registry.address, "--select", "tiny-slim", "--check-reproducible", cli=cli
    )
    assert code == 0, output
    assert "tiny-slim: reproducible: the rebuild from nothing gave sha256:" in output


def test_check_reproducible_names_the_layer_and_the_file_that_differ(
    cli,  # type: ignore[no-untyped-def]
    tiny: Project,
    registry: RegistryUnderTest,
) -> None:
    template = tiny.root / "images" / "tiny" / "Dockerfile.j2"
    template.write_text(
        template.read_text().replace("COPY app/", "RUN date +%s%N > /opt/built-at\nCOPY app/", 1)
    )
    git(tiny.root, "commit", "-qam", "a step that depends on the clock")
    code, output, _ = build(
        tiny.root, registry.address, "--select", "tiny-slim", "--check-reproducible", cli=cli
    )
    assert code == 1
    assert "[tiny-slim] not reproducible: the registry holds sha256:" in output
    assert "RUN date +%s%N > /opt/built-at" in output  # the step that made the layer
    assert "opt/built-at: content" in output
    # The other layers agree: only the clock's layer (and the COPY above it, by its parent) differ.
    assert "opt/deps.txt" not in output
