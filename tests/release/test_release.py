"""Release promotion against a real registry:2: tested digests get X.Y.Z, X.Y and X."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import Project, RegistryUnderTest, git
from runpod_schema import request_errors

from smoke.result import Check, SuiteResult

pytestmark = pytest.mark.container


def built(cli, tiny: Project, registry: RegistryUnderTest) -> dict:  # type: ignore[no-untyped-def,type-arg]
    result = cli("build", "--matrix", str(tiny.matrix), "--registry", registry.address)
    assert result.code == 0, result.out + result.err
    return json.loads((tiny.root / "build" / "manifest.json").read_text())  # type: ignore[no-any-return]


def smoke_result(
    directory: Path, variant: str, digest: str, passed: bool, only: tuple[str, ...] = ()
) -> Path:
    """A smoke result in the suite's own schema, as buildtool smoke stamps it with the digest."""
    check = Check(
        "environment.torch-version", "pass" if passed else "fail", "as declared" if passed else "wrong"
    )
    result = SuiteResult(variant, {"device": "cpu"}, "2026-11-22T00:00:00+00:00", 1.0, (check,), only=only)
    json_path, _ = result.write(directory, variant)
    document = json.loads(json_path.read_text())
    document["image"] = {"tag": "", "digest": digest}
    json_path.write_text(json.dumps(document))
    return json_path


def passed_results(tiny: Project, manifest: dict, failing: tuple[str, ...] = ()) -> None:  # type: ignore[type-arg]
    for name, entry in manifest["variants"].items():
        smoke_result(tiny.root / "build" / "smoke", name, entry["digest"], name not in failing)


def release(cli, tiny: Project, registry: RegistryUnderTest, tag: str, *extra: str):  # type: ignore[no-untyped-def]
    return cli("release", tag, "--matrix", str(tiny.matrix), "--registry", registry.address, *extra)


def test_promote_then_re_promote(cli, tiny: Project, registry: RegistryUnderTest) -> None:  # type: ignore[no-untyped-def]
    manifest = built(cli, tiny, registry)
    passed_results(tiny, manifest)
    git(tiny.root, "tag", "v1.2.3")
    first = release(cli, tiny, registry, "v1.2.3")
    assert first.code == 0, first.out + first.err
    slim = manifest["variants"]["tiny-slim"]["digest"]
    bookworm = manifest["variants"]["tiny-slim-bookworm"]["digest"]
    for tag in ("slim-1.2.3", "slim-1.2", "slim-1", "1.2.3", "1.2", "1"):
        assert registry.digest("tiny", tag) == slim, tag
    for tag in ("slim-bookworm-1.2.3", "slim-bookworm-1.2", "slim-bookworm-1"):
        assert registry.digest("tiny", tag) == bookworm, tag
    document = json.loads((tiny.root / "build" / "release.json").read_text())
    assert document["version"] == "1.2.3" and len(document["moved"]) == 9
    # Each promoted digest's deploy spec, sized from its measured image.
    for name, entry in manifest["variants"].items():
        spec = json.loads(Path(document["deploy_specs"][name]).read_text())
        assert spec["image"] == entry["image"] and spec["disk"]["unpacked_bytes"] == entry["unpacked_size"]
        assert all(request_errors(r["operation"], r["body"]) == [] for r in spec["requests"])
    tags_before = registry.tags("tiny")

    again = release(cli, tiny, registry, "v1.2.3")
    assert again.code == 0, again.out + again.err
    assert "moved 0 tag(s), 9 already in place" in again.out
    assert registry.tags("tiny") == tags_before


def test_a_failed_smoke_result_is_not_promoted(cli, tiny: Project, registry: RegistryUnderTest) -> None:  # type: ignore[no-untyped-def]
    manifest = built(cli, tiny, registry)
    passed_results(tiny, manifest, failing=("tiny-slim-bookworm",))
    git(tiny.root, "tag", "v2.0.0")
    result = release(cli, tiny, registry, "v2.0.0")
    assert result.code == 1
    assert "[tiny-slim-bookworm]" in result.err and "smoke failed for sha256:" in result.err
    assert registry.digest("tiny", "slim-bookworm-2.0.0") is None
    assert registry.digest("tiny", "slim-2.0.0") == manifest["variants"]["tiny-slim"]["digest"]


def test_a_smoke_run_limited_by_only_does_not_release_its_digest(
    cli, tiny: Project, registry: RegistryUnderTest
) -> None:  # type: ignore[no-untyped-def]
    manifest = built(cli, tiny, registry)
    passed_results(tiny, manifest)
    limited = manifest["variants"]["tiny-slim-bookworm"]["digest"]
    smoke_result(tiny.root / "build" / "smoke", "tiny-slim-bookworm", limited, True, only=("environment",))
    git(tiny.root, "tag", "v2.1.0")
    result = release(cli, tiny, registry, "v2.1.0")
    assert result.code == 1
    said = (
        f"[tiny-slim-bookworm] not promoted: smoke ran in part for {limited} (limited to --only environment)"
    )
    assert said in result.err
    assert registry.digest("tiny", "slim-bookworm-2.1.0") is None
    assert registry.digest("tiny", "slim-2.1.0") == manifest["variants"]["tiny-slim"]["digest"]


def test_an_existing_version_is_never_moved(cli, tiny: Project, registry: RegistryUnderTest) -> None:  # type: ignore[no-untyped-def]
    first = built(cli, tiny, registry)
    passed_results(tiny, first)
    git(tiny.root, "tag", "v3.1.0")
    assert release(cli, tiny, registry, "v3.1.0").code == 0
    (tiny.root / "images" / "tiny" / "app" / "app.py").write_text('print("tiny app, version 2")\n')
    git(tiny.root, "commit", "-qam", "change")
    second = built(cli, tiny, registry)
    passed_results(tiny, second)
    sha = git(tiny.root, "rev-parse", "HEAD")
    refused = release(cli, tiny, registry, "v3.1.0", "--commit", sha)
    assert refused.code == 2
    assert "already points to" in refused.err and "a released version never moves" in refused.err
    assert registry.digest("tiny", "slim-3.1.0") == first["variants"]["tiny-slim"]["digest"]
    assert registry.digest("tiny", "slim-3.1") == first["variants"]["tiny-slim"]["digest"]  # nothing moved


def test_a_pre_release_gets_only_its_own_tag_and_dry_run_moves_nothing(
    cli,
    tiny: Project,
    registry: RegistryUnderTest,  # type: ignore[no-untyped-def]
) -> None:
    manifest = built(cli, tiny, registry)
    passed_results(tiny, manifest)
    git(tiny.root, "tag", "v4.0.0rc1")
    dry = release(cli, tiny, registry, "v4.0.0rc1", "--dry-run")
    assert dry.code == 0 and "nothing moved" in dry.out
    assert registry.digest("tiny", "slim-4.0.0rc1") is None
    assert release(cli, tiny, registry, "v4.0.0rc1").code == 0
    assert registry.digest("tiny", "slim-4.0.0rc1") == manifest["variants"]["tiny-slim"]["digest"]
    assert registry.digest("tiny", "slim-4.0") is None and registry.digest("tiny", "4") is None


def test_a_commit_that_was_never_built_is_refused(cli, tiny: Project, registry: RegistryUnderTest) -> None:  # type: ignore[no-untyped-def]
    git(tiny.root, "tag", "v5.0.0")
    result = release(cli, tiny, registry, "v5.0.0")
    assert result.code == 1 and "not built for" in result.err
