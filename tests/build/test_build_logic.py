"""The build stage's decisions against a fake engine and registry (tests/fakes.py): what is pushed,
what is left alone, what is refused, when moving tags move. The real engine and registry:2 tests
(test_build.py) stay and run in CI; these run in seconds."""

from __future__ import annotations

import json
import os
from pathlib import Path

from conftest import Project, git
from fakes import FakeEngine, FakeRegistry

from buildtool import api
from buildtool.build.result import BuildResult
from buildtool.build.stage import build
from buildtool.config.options import Options
from buildtool.naming import Revision

REGISTRY = "registry.test/org"


def run(tiny: Project, engine: FakeEngine, registry: FakeRegistry, dirty: bool = False) -> BuildResult:
    if dirty:  # an uncommitted change: the revision is the commit's, -dirty
        app = tiny.root / "images" / "tiny" / "app" / "app.py"
        app.write_text(app.read_text() + "# changed\n")
    options = Options.for_matrix(
        tiny.matrix, registry=REGISTRY, revision=Revision(tiny.commit, False), jobs=1
    )
    checked, rendering = api.render(options)
    engine.registry = registry  # where the fake BuildKit pushes
    return build(rendering, options, engine, registry, check_image=api.image_policy(checked))


def moved(registry: FakeRegistry) -> list[str]:
    return [tag for call, tag in registry.calls if call == "copy_tag"]


def test_a_first_build_pushes_every_variant_then_moves_its_tags(tiny: Project) -> None:
    registry = FakeRegistry()
    result = run(tiny, FakeEngine(), registry)
    assert [v.status for v in result.variants] == ["pushed", "pushed"], [v.error for v in result.variants]
    for v in result.variants:
        assert registry.tags[v.immutable_tag] == v.digest
        assert all(registry.tags[t] == v.digest for t in v.moving_tags)
        assert v.compressed_size and v.compressed_size > 0
        assert v.pushed_bytes > 0  # what the engine's push sent: a first push sends every blob
    assert set(result.moved_tags) == {t for v in result.variants for t in v.moving_tags}
    assert (tiny.root / "build" / "manifest.json").is_file()


def test_a_variant_that_fails_keeps_every_moving_tag_where_it_was(tiny: Project) -> None:
    registry = FakeRegistry()
    result = run(tiny, FakeEngine(fail='process "/bin/sh -c false" did not complete successfully'), registry)
    assert {v.status for v in result.variants} == {"failed"}
    assert "did not complete successfully" in (result.variants[0].error or "")
    assert result.moved_tags == () and "moving tags stay where they were" in (result.moving_tags_note or "")
    assert not moved(registry) and not registry.tags


def test_a_missing_base_is_pulled_through_the_engine_and_the_build_retried(tiny: Project) -> None:
    engine = FakeEngine(base_present=False)
    result = run(tiny, engine, FakeRegistry())
    assert all(v.ok for v in result.variants), [v.error for v in result.variants]
    assert engine.calls[:3] == ["bake tiny-slim", "pull python:3.11-slim", "bake tiny-slim"]


def test_an_immutable_tag_holding_other_content_is_never_overwritten(tiny: Project) -> None:
    registry = FakeRegistry()
    first = run(tiny, FakeEngine("v1"), registry)
    before = {v.immutable_tag: v.digest for v in first.variants}
    second = run(tiny, FakeEngine("v2"), registry, dirty=False)
    # The commit's tags are there, and the labels a real image carries are not in the fake's
    # config: the build goes ahead, produces other content, and refuses to overwrite.
    assert {v.status for v in second.variants} == {"failed"}
    assert "refusing to overwrite it" in (second.variants[0].error or "")
    assert {t: registry.tags[t] for t in before} == before


def test_a_dirty_worktree_pushes_dirty_tags_and_moves_nothing(tiny: Project) -> None:
    registry = FakeRegistry()
    result = run(tiny, FakeEngine(), registry, dirty=True)
    assert all(v.immutable_tag.endswith(f"{tiny.commit}-dirty") for v in result.variants)
    assert result.moved_tags == () and "dirty worktree" in (result.moving_tags_note or "")


def test_a_built_image_holding_a_token_is_refused_before_anything_is_pushed(tiny: Project) -> None:
    """The config's rules read the image in the engine's store: a token never reaches the registry."""
    token = "hf_" + "Ab3" * 12
    registry = FakeRegistry()
    engine = FakeEngine(env=(f"HF_TOKEN={token}", "PATH=/usr/bin"))
    result = run(tiny, engine, registry)
    assert {v.status for v in result.variants} == {"refused"}
    problem = result.variants[0].problem
    assert problem is not None and problem.variant == result.variants[0].variant
    assert "a Hugging Face token in ENV HF_TOKEN: 'hf_A...' (39 characters)" in problem.message
    assert token not in problem.message and "RUNPOD_SECRET_" in (problem.hint or "")
    assert not [c for c in engine.calls if c.startswith("push")] and not registry.tags
    manifest = (tiny.root / "build" / "manifest.json").read_text()
    assert '"status": "refused"' in manifest and token not in manifest


def test_an_image_a_layer_rule_refused_is_refused_again_on_a_re_run(tiny: Project) -> None:
    """A rule over layers reads the pushed image: the immutable tag holds it, no moving tag moves to
    it, and a re-run of the commit (which finds the tag and builds nothing new) refuses it again."""
    tiny.edit("policy:\n", "policy:\n  max_image_gb: 0.0000001\n")
    git(tiny.root, "commit", "-qam", "a size limit")
    registry = FakeRegistry()
    engine = FakeEngine()
    first = run(tiny, engine, registry)
    assert {v.status for v in first.variants} == {"refused"} and not moved(registry)
    assert set(registry.tags) == {v.immutable_tag for v in first.variants}
    again = run(tiny, engine, registry)
    assert {v.status for v in again.variants} == {"refused"} and not moved(registry)
    assert len([c for c in engine.calls if c.startswith("push")]) == 2  # once per variant, the first time


def test_a_secret_named_variable_with_a_value_is_refused_and_a_reference_is_not(tiny: Project) -> None:
    refused = run(tiny, FakeEngine(env=("DB_PASSWORD=hunter2",)), FakeRegistry())
    assert "a value for DB_PASSWORD in ENV DB_PASSWORD" in (refused.variants[0].error or "")
    fine = run(
        tiny, FakeEngine(env=("HF_TOKEN=", "API_KEY=${API_KEY}", "GPG_KEY=A035C8C19219BA82")), FakeRegistry()
    )
    assert all(v.status == "pushed" for v in fine.variants), [v.error for v in fine.variants]


def test_settings_whose_names_contain_token_are_not_secrets(tiny: Project) -> None:
    settings = ("TOKENIZERS_PARALLELISM=false", "MAX_TOKENS=4096", "PAD_TOKEN_ID=0", "USE_AUTH_TOKEN=true")
    fine = run(tiny, FakeEngine(env=settings), FakeRegistry())
    assert all(v.status == "pushed" for v in fine.variants), [v.error for v in fine.variants]
    refused = run(
        tiny, FakeEngine(env=("AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMIbPxRfiCYEXAMPLEKEY",)), FakeRegistry()
    )
    assert "a value for AWS_SECRET_ACCESS_KEY" in (refused.variants[0].error or "")


def test_an_image_over_policy_max_image_gb_is_refused_before_its_push(tiny: Project) -> None:
    tiny.edit("policy:\n", "policy:\n  max_image_gb: 0.0000001\n")  # 100 bytes: the fake image is bigger
    registry = FakeRegistry()
    result = run(tiny, FakeEngine(), registry)
    assert {v.status for v in result.variants} == {"refused"}
    assert "GB compressed, over policy.max_image_gb (1e-07 GB)" in (result.variants[0].error or "")
    assert not moved(registry)
    tiny.edit("  max_image_gb: 0.0000001\n", "  max_image_gb: 1\n")  # the policy changed: it passes now
    again = run(tiny, FakeEngine(), registry)  # an edited matrix.yaml: -dirty tags, pushed over
    assert {v.status for v in again.variants} == {"pushed"}


def test_a_container_disk_too_small_for_the_unpacked_image_is_refused_with_the_numbers(tiny: Project) -> None:
    deploy = "    deploy: {container_disk_gb: 1, download_headroom_gb: 1}\n"
    tiny.edit("    needs_torch: false\n", "    needs_torch: false\n" + deploy)
    registry = FakeRegistry()
    result = run(tiny, FakeEngine(), registry)
    assert {v.status for v in result.variants} == {"refused"}
    message = result.variants[0].error or ""
    assert "container_disk_gb 1 cannot hold this image: it unpacks to 0.00 GB" in message
    assert "plus 1 GB of download headroom and a 20% margin needs 2 GB" in message
    assert "set container_disk_gb: 2" in (result.variants[0].problem.hint or "")  # type: ignore[union-attr]
    assert not moved(registry)
    tiny.edit("container_disk_gb: 1,", "container_disk_gb: 2,")
    fits = run(tiny, FakeEngine(), registry)
    assert {v.status for v in fits.variants} == {"pushed"}
    # The unpacked size is measured from the layers (here the fake's one gzip layer) and recorded.
    assert fits.variants[0].unpacked_size == len(f"{fits.variants[0].variant}:v1")
    sizes = json.loads((Path(os.environ["BUILDTOOL_CACHE_DIR"]) / "unpacked-sizes.json").read_text())
    assert fits.variants[0].unpacked_size in sizes.values()


def _measure_into(job: tuple[Path, int]) -> list[str]:
    """One builder measuring its own layers into the shared cache (run in its own process)."""
    import gzip
    import io

    from buildtool.build.oci import unpacked_sizes

    cache, worker = job
    digests = []
    for n in range(25):
        data = gzip.compress(f"worker {worker} layer {n} ".encode() * (n + 1))
        digest = f"sha256:{worker:04d}{n:060d}"
        layer = {"digest": digest, "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip"}
        unpacked_sizes(cache, [layer], lambda _d, data=data: io.BytesIO(data))
        digests.append(digest)
    return digests


def test_layer_sizes_measured_by_parallel_builds_are_all_kept(tmp_path: Path) -> None:
    """Variants built at once (--jobs) and builds side by side share the layer-size cache beside
    the layouts: what each measured is still there afterwards, so nothing is measured twice."""
    import multiprocessing

    cache = tmp_path / "oci" / "unpacked-sizes.json"
    with multiprocessing.get_context("fork").Pool(4) as pool:
        measured = [d for digests in pool.map(_measure_into, [(cache, w) for w in range(4)]) for d in digests]
    kept = json.loads(cache.read_text())
    assert sorted(kept) == sorted(measured) and len(kept) == 100


def test_a_layer_measured_once_is_not_read_again_from_another_build_dir(tmp_path: Path) -> None:
    """A fresh clone (a new build/) meets the same base layers: their sizes come from the layer
    cache, not from decompressing GBs again."""
    import shutil

    from fakes import layout_image, write_layout

    first = tmp_path / "clone-1" / "build" / "oci" / "v"
    digest = write_layout(first, "a layer " * 1000)
    cache = tmp_path / "cache"
    measured = layout_image(first, digest, cache)
    assert measured.unpacked_size == len("a layer " * 1000)  # read and measured: remembered
    second = tmp_path / "clone-2" / "build" / "oci" / "v"
    shutil.copytree(first, second)
    (layer,) = measured.layers
    (second / "blobs" / "sha256" / layer.digest.removeprefix("sha256:")).unlink()  # cannot be read
    again = layout_image(second, digest, cache)
    assert again.unpacked_size == measured.unpacked_size == len("a layer " * 1000)


def test_a_layer_cache_that_cannot_be_written_does_not_fail_the_build(tmp_path: Path) -> None:
    """The cache only saves time: with $HOME read-only or missing (CI containers), the image is still
    read and measured."""
    from fakes import layout_image, write_layout

    layout = tmp_path / "build" / "oci" / "v"
    digest = write_layout(layout, "a layer " * 100)
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("")
    image = layout_image(layout, digest, not_a_directory / "cache")
    assert image.unpacked_size == len("a layer " * 100)
