"""Build, tag, cache and push against the real engine and a real registry:2 (testcontainers)."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
from conftest import Project, RegistryUnderTest, git
from runpod_schema import request_errors

from buildtool import api
from buildtool.build.result import BuildEvent, BuildResult
from buildtool.config.options import Options

pytestmark = pytest.mark.container


def build(project: Project, registry: str, *extra: str, cli) -> tuple[int, str, dict]:  # type: ignore[no-untyped-def,type-arg]
    result = cli("build", "--matrix", str(project.matrix), "--registry", registry, *extra)
    manifest_path = project.root / "build" / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    return result.code, result.out + result.err, manifest


def commit(project: Project, message: str = "change") -> str:
    git(project.root, "commit", "-qam", message)
    return git(project.root, "rev-parse", "HEAD")


def test_push_verify_and_move_tags(cli, tiny: Project, registry: RegistryUnderTest) -> None:  # type: ignore[no-untyped-def]
    code, output, manifest = build(tiny, registry.address, cli=cli)
    assert code == 0, output
    sha = git(tiny.root, "rev-parse", "HEAD")
    assert manifest["revision"] == sha and manifest["failed"] == {}
    assert set(manifest["variants"]) == {"tiny-slim", "tiny-slim-bookworm"}
    for name, entry in manifest["variants"].items():
        base = name.removeprefix("tiny-")
        assert entry["tags"]["immutable"] == f"{registry.address}/tiny:{base}-{sha}"
        assert registry.digest("tiny", f"{base}-{sha}") == entry["digest"]  # pushed and verified
        assert registry.digest("tiny", f"{base}-latest") == entry["digest"]  # moved after
        assert entry["compressed_size"] > 1_000_000
        assert entry["unpacked_size"] > entry["compressed_size"]  # measured from the gzip layers
        assert entry["base"]["digest"].startswith("sha256:")
    assert registry.digest("tiny", "latest") == manifest["variants"]["tiny-slim"]["digest"]  # default only
    assert not (tiny.root / "matrix.lock").exists()  # a build never writes the user's lock
    assert git(tiny.root, "status", "--porcelain") == ""  # so the next run is not dirty


def test_rebuilding_the_same_commit_pushes_nothing(cli, tiny: Project, registry: RegistryUnderTest) -> None:  # type: ignore[no-untyped-def]
    code, output, first = build(tiny, registry.address, cli=cli)
    assert code == 0, output
    tags_before = registry.tags("tiny")
    code, output, second = build(tiny, registry.address, cli=cli)
    assert code == 0, output
    # The registry holds this commit's tags: nothing is built (no bake ran: no new log).
    assert {v["status"] for v in second["variants"].values()} == {"built-earlier"}
    assert "already in the registry" in output and "not rebuilt" in output
    assert {n: v["digest"] for n, v in second["variants"].items()} == {
        n: v["digest"] for n, v in first["variants"].items()
    }
    assert registry.tags("tiny") == tags_before
    # --rebuild builds, and the same commit gives the same digest: nothing new to push.
    code, output, third = build(tiny, registry.address, "--rebuild", cli=cli)
    assert code == 0, output
    assert {v["status"] for v in third["variants"].values()} == {"unchanged"}
    assert {n: v["digest"] for n, v in third["variants"].items()} == {
        n: v["digest"] for n, v in first["variants"].items()
    }
    assert registry.tags("tiny") == tags_before


def test_an_immutable_tag_with_other_content_is_never_overwritten(
    cli,
    tiny: Project,
    registry: RegistryUnderTest,  # type: ignore[no-untyped-def]
) -> None:
    sha = git(tiny.root, "rev-parse", "HEAD")
    squatter = f"{registry.address}/tiny:slim-{sha}"
    subprocess.run(["docker", "tag", "registry:2", squatter], check=True)
    subprocess.run(["docker", "push", "-q", squatter], check=True, capture_output=True)
    subprocess.run(["docker", "rmi", squatter], check=True, capture_output=True)
    other = registry.digest("tiny", f"slim-{sha}")

    code, output, manifest = build(tiny, registry.address, cli=cli)
    assert code == 1
    assert "already holds" in output and "refusing to overwrite" in output and "[tiny-slim]" in output
    assert registry.digest("tiny", f"slim-{sha}") == other  # untouched
    assert "tiny-slim" in manifest["failed"]
    assert "tiny-slim-bookworm" in manifest["variants"]  # the other variant still built
    assert registry.digest("tiny", "slim-bookworm-latest") is None  # moving tags did not move


def test_rebuild_after_prune_comes_from_the_registry_cache(
    cli, tiny: Project, registry: RegistryUnderTest
) -> None:  # type: ignore[no-untyped-def]
    template = tiny.root / "images" / "tiny" / "Dockerfile.j2"
    template.write_text(
        template.read_text().replace(
            "{{ m.directories(", f"RUN echo {uuid.uuid4()} > /opt/cold\n{{{{ m.directories(", 1
        )
    )
    commit(tiny)  # layers no earlier test built: the first build is cold
    code, output, first = build(tiny, registry.address, "--select", "tiny-slim", cli=cli)
    assert code == 0, output
    assert first["variants"]["tiny-slim"]["cached_steps"] == 0
    subprocess.run(["docker", "buildx", "prune", "-af"], check=True, capture_output=True)
    shutil.rmtree(tiny.root / "build")  # nothing local is left
    code, output, second = build(tiny, registry.address, "--select", "tiny-slim", "--rebuild", cli=cli)
    assert code == 0, output
    rebuilt = second["variants"]["tiny-slim"]
    assert rebuilt["cached_steps"] == rebuilt["steps"] == first["variants"]["tiny-slim"]["steps"]
    assert rebuilt["digest"] == first["variants"]["tiny-slim"]["digest"]


def test_a_code_change_rebuilds_only_the_last_layer(cli, tiny: Project, registry: RegistryUnderTest) -> None:  # type: ignore[no-untyped-def]
    code, output, first = build(tiny, registry.address, "--select", "tiny-slim", cli=cli)
    assert code == 0, output
    # The same length as version 1: BuildKit's context transfer takes a file of the same size and
    # time as unchanged, so the edit must show in the file's time (build_dir.context_file_time).
    app = tiny.root / "images" / "tiny" / "app" / "app.py"
    edited = app.read_text().replace("version 1", "version 2")
    assert len(edited) == len(app.read_text())
    app.write_text(edited)
    commit(tiny)
    code, output, second = build(tiny, registry.address, "--select", "tiny-slim", cli=cli)
    assert code == 0, output
    after = second["variants"]["tiny-slim"]
    assert after["steps"] - after["cached_steps"] == 1  # COPY app.py, and nothing before it
    assert after["digest"] != first["variants"]["tiny-slim"]["digest"]


def test_registry_stopped_mid_run_leaves_moving_tags(tiny: Project, registry: RegistryUnderTest) -> None:
    options = Options.for_matrix(tiny.matrix, registry=registry.address)
    first = api.build(options)
    assert first.ok
    before = {t: registry.digest("tiny", t) for t in ("latest", "slim-latest", "slim-bookworm-latest")}
    (tiny.root / "images" / "tiny" / "app" / "app.py").write_text('print("tiny app, version 2")\n')
    commit(tiny)

    def stop_at_push(event: BuildEvent) -> None:
        if event.phase == "pushing":
            registry.stop()

    second: BuildResult = api.build(options, stop_at_push)
    assert not second.ok
    assert second.moved_tags == ()
    assert second.moving_tags_note and "stay where they were" in second.moving_tags_note
    failures = [v.error or "" for v in second.variants if not v.ok]
    assert failures and all("unreachable" in f or "failed" in f for f in failures)
    registry.start()
    assert {t: registry.digest("tiny", t) for t in before} == before


def test_a_failing_run_step_fails_its_variant_only(cli, tiny: Project, registry: RegistryUnderTest) -> None:  # type: ignore[no-untyped-def]
    template = tiny.root / "images" / "tiny" / "Dockerfile.j2"
    template.write_text(
        template.read_text().replace(
            "COPY app/",
            '{% if base.name == "slim" %}\nRUN echo "about to fail" && exit 3\n{% endif %}\nCOPY app/',
        )
    )
    commit(tiny)
    code, output, manifest = build(tiny, registry.address, cli=cli)
    assert code == 1
    assert "[tiny-slim]" in output and "exit code: 3" in output and "RUN echo" in output
    assert "build/logs/tiny-slim.log" in output
    assert "about to fail" in (tiny.root / "build" / "logs" / "tiny-slim.log").read_text()
    assert set(manifest["variants"]) == {"tiny-slim-bookworm"}
    assert set(manifest["failed"]) == {"tiny-slim"}
    assert (
        registry.digest("tiny", "latest") is None and registry.digest("tiny", "slim-bookworm-latest") is None
    )


def test_a_missing_base_image_fails_its_variant_only(cli, tiny: Project, registry: RegistryUnderTest) -> None:  # type: ignore[no-untyped-def]
    tiny.edit(
        '  - {name: slim-bookworm, ref: "python:3.11-slim-bookworm"',
        '  - {name: slim-bookworm, ref: "python:3.11.99-slim-bookworm"',
    )
    commit(tiny)
    code, output, manifest = build(tiny, registry.address, cli=cli)
    assert code == 1
    assert "[tiny-slim-bookworm]" in output and "python:3.11.99-slim-bookworm" in output
    assert "not in the engine and could not be pulled" in output
    assert set(manifest["variants"]) == {"tiny-slim"}


def test_an_unreachable_registry_is_one_clear_failure_per_variant(cli, tiny: Project) -> None:  # type: ignore[no-untyped-def]
    from conftest import free_port

    address = f"localhost:{free_port()}"
    code, output, manifest = build(tiny, address, cli=cli)
    assert code == 1
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and all(f"registry {address} is unreachable" in e for e in errors)
    assert "Traceback" not in output
    assert manifest["variants"] == {}


def test_a_dirty_worktree_never_gets_an_immutable_tag(
    cli, tiny: Project, registry: RegistryUnderTest
) -> None:  # type: ignore[no-untyped-def]
    (tiny.root / "images" / "tiny" / "app" / "app.py").write_text('print("uncommitted")\n')
    code, output, manifest = build(tiny, registry.address, cli=cli)
    assert code == 2 and "uncommitted changes" in output and "--allow-dirty" in output
    assert manifest == {}
    code, output, manifest = build(tiny, registry.address, "--allow-dirty", "--select", "tiny-slim", cli=cli)
    assert code == 0, output
    sha = git(tiny.root, "rev-parse", "HEAD")
    assert manifest["variants"]["tiny-slim"]["tags"]["immutable"].endswith(f"slim-{sha}-dirty")
    assert registry.digest("tiny", f"slim-{sha}") is None
    assert registry.digest("tiny", "slim-latest") is None
    assert "dirty" in output


def test_locked_builds_from_the_recorded_base_digest(cli, tiny: Project, registry: RegistryUnderTest) -> None:  # type: ignore[no-untyped-def]
    code, output, _ = build(tiny, registry.address, "--locked", "--select", "tiny-slim", cli=cli)
    assert code == 1 and "matrix.lock records no digest for python:3.11-slim" in output
    assert "buildtool lock" in output
    locked_now = cli("lock", "--matrix", str(tiny.matrix), "--select", "tiny-slim")
    assert locked_now.code == 0, locked_now.err
    lock = json.loads((tiny.root / "matrix.lock").read_text())
    assert set(lock["bases"]) == {"python:3.11-slim"}
    git(tiny.root, "add", "matrix.lock")
    commit(tiny, "lock the bases")
    code, output, first = build(tiny, registry.address, "--select", "tiny-slim", cli=cli)
    assert code == 0, output
    assert first["variants"]["tiny-slim"]["base"]["digest"] == lock["bases"]["python:3.11-slim"]["digest"]
    code, output, locked = build(
        tiny, registry.address, "--locked", "--rebuild", "--select", "tiny-slim", cli=cli
    )
    assert code == 0, output
    assert locked["variants"]["tiny-slim"]["base"]["digest"] == lock["bases"]["python:3.11-slim"]["digest"]
    assert locked["variants"]["tiny-slim"]["digest"] == first["variants"]["tiny-slim"]["digest"]


def test_build_logs_one_file_per_variant(cli, tiny: Project, registry: RegistryUnderTest) -> None:  # type: ignore[no-untyped-def]
    code, output, _ = build(tiny, registry.address, cli=cli)
    assert code == 0, output
    logs = sorted(p.name for p in (tiny.root / "build" / "logs").glob("*.log"))
    assert logs == ["tiny-slim-bookworm.log", "tiny-slim.log"]
    assert "COPY app/" in (tiny.root / "build" / "logs" / "tiny-slim.log").read_text()


def test_a_base_tag_that_moved_is_reported(cli, tiny: Project, registry: RegistryUnderTest) -> None:  # type: ignore[no-untyped-def]
    stale = "sha256:" + "0" * 64
    (tiny.root / "matrix.lock").write_text(
        json.dumps({"version": 1, "bases": {"python:3.11-slim": {"digest": stale}}})
    )
    git(tiny.root, "add", "matrix.lock")  # the lock is part of the commit an immutable tag names
    git(tiny.root, "commit", "-qm", "lock the base")
    code, output, manifest = build(tiny, registry.address, "--select", "tiny-slim", cli=cli)
    assert code == 0, output
    assert "base python:3.11-slim now points to sha256:" in output and f"matrix.lock has {stale}" in output
    assert manifest["variants"]["tiny-slim"]["base"]["digest"] != stale  # what it was built FROM
    # Reported, never rewritten: the lock is the user's file.
    assert json.loads((tiny.root / "matrix.lock").read_text())["bases"]["python:3.11-slim"]["digest"] == stale


def test_a_token_the_base_image_carries_is_refused_before_the_push(
    cli,  # type: ignore[no-untyped-def]
    tiny: Project,
    registry: RegistryUnderTest,
) -> None:
    """The image-scope policy reads the built image (its config and history), not the Dockerfile:
    a token inherited from the base is refused, exit 2, and nothing of the image is pushed."""
    token = "hf_" + "Zx9" * 12
    leaky = f"python:3.11-slim-leaky-{uuid.uuid4().hex[:8]}"
    dockerfile = f"FROM python:3.11-slim\nENV HF_TOKEN={token}\n"
    subprocess.run(["docker", "build", "-q", "-t", leaky, "-"], input=dockerfile, text=True, check=True)
    try:
        tiny.edit('ref: "python:3.11-slim"', f'ref: "{leaky}"')
        commit(tiny, "a base that leaks a token")
        code, output, manifest = build(tiny, registry.address, "--select", "tiny-slim", cli=cli)
        assert code == 2, output
        assert "[tiny-slim] the built image holds a Hugging Face token in ENV HF_TOKEN" in output
        assert token not in output and token not in json.dumps(manifest)
        assert manifest["failed"]["tiny-slim"]["status"] == "refused" and manifest["variants"] == {}
        # No image tag; the registry build cache (exported by the bake itself) holds layers, not the
        # image's config, where the token is.
        assert [t for t in registry.tags("tiny") if not t.startswith("buildcache")] == []
    finally:
        subprocess.run(["docker", "rmi", "-f", leaky], capture_output=True, check=False)


def test_a_declared_secret_reaches_the_build_as_a_mount_and_never_the_image(
    cli,  # type: ignore[no-untyped-def]
    tiny: Project,
    registry: RegistryUnderTest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    token = "hf_" + "Mn4" * 12
    monkeypatch.setenv("BUILD_TOKEN", token)
    tiny.edit("    needs_torch: false\n", "    needs_torch: false\n    secrets: [BUILD_TOKEN]\n")
    template = tiny.root / "images" / "tiny" / "Dockerfile.j2"
    template.write_text(
        template.read_text().replace(
            "COPY app/",
            "RUN --mount=type=secret,id=BUILD_TOKEN "
            'test "$(cut -c1-3 /run/secrets/BUILD_TOKEN)" = hf_\nCOPY app/',
        )
    )
    commit(tiny, "a build that reads a secret")
    code, output, manifest = build(tiny, registry.address, "--select", "tiny-slim", cli=cli)
    assert code == 0, output  # the mount had the token; the image-secrets rule found none in the image
    assert token not in output and set(manifest["variants"]) == {"tiny-slim"}
    pushed = manifest["variants"]["tiny-slim"]["image"]
    inspect = ["docker", "buildx", "imagetools", "inspect", "--format", "{{json .Image}}", pushed]
    config = json.loads(subprocess.run(inspect, capture_output=True, text=True, check=True).stdout)
    assert "BUILD_TOKEN" in json.dumps(config["history"]) and token not in json.dumps(config)


def test_a_container_disk_too_small_is_refused_on_the_real_engine_and_no_tag_moves(
    cli,  # type: ignore[no-untyped-def]
    tiny: Project,
    registry: RegistryUnderTest,
) -> None:
    """python:3.11-slim plus the app unpacks to ~0.15 GB: with 1 GB of headroom and the 20% margin it
    needs 2 GB, so a declared 1 GB is refused after the build, with the numbers and the fix."""
    tiny.edit(
        "    needs_torch: false\n",
        "    needs_torch: false\n    deploy: {container_disk_gb: 1, download_headroom_gb: 1}\n",
    )
    commit(tiny, "a disk too small")
    code, output, manifest = build(tiny, registry.address, "--select", "tiny-slim", cli=cli)
    assert code == 2, output
    assert "[tiny-slim] container_disk_gb 1 cannot hold this image: it unpacks to 0.1" in output
    assert "needs 2 GB" in output and "set container_disk_gb: 2" in output
    assert f"matrix.yaml:{tiny.line_of('container_disk_gb: 1')}" in output
    assert manifest["failed"]["tiny-slim"]["status"] == "refused"
    # The size is the pushed image's: its immutable tag is there, and no moving tag points to it.
    assert [t for t in registry.tags("tiny") if not t.startswith("buildcache")] == [f"slim-{tiny.commit}"]


def test_deploy_spec_sizes_the_disk_from_the_pushed_image_on_every_run(
    cli,  # type: ignore[no-untyped-def]
    tiny: Project,
    registry: RegistryUnderTest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The spec names the pushed digest and sizes the disk from the measured image: after the build,
    after a re-run that builds nothing, and on a machine that never saw the layers (from the
    registry's blobs)."""
    code, output, manifest = build(tiny, registry.address, "--select", "tiny-slim", cli=cli)
    assert code == 0, output
    entry = manifest["variants"]["tiny-slim"]
    spec_path = tiny.root / "build" / "deploy" / "tiny-slim.json"

    def spec() -> dict:  # type: ignore[type-arg]
        result = cli("deploy-spec", "--matrix", str(tiny.matrix), "--select", "tiny-slim")
        assert result.code == 0, result.out + result.err
        return json.loads(spec_path.read_text())  # type: ignore[no-any-return]

    first = spec()
    for request in first["requests"]:
        assert request_errors(request["operation"], request["body"]) == []
    pod = {r["operation"]: r["body"] for r in first["requests"]}["createPod"]
    assert pod["image"] == entry["image"] == f"{registry.address}/tiny@{entry['digest']}"
    assert first["disk"]["unpacked_bytes"] == entry["unpacked_size"]
    assert pod["disk"] == math.ceil(entry["unpacked_size"] / 1e9 * 1.2)
    # A re-run: built earlier, nothing built; the layers' sizes are known here.
    code, output, again = build(tiny, registry.address, "--select", "tiny-slim", cli=cli)
    assert code == 0 and again["variants"]["tiny-slim"]["status"] == "built-earlier", output
    assert again["variants"]["tiny-slim"]["unpacked_size"] == entry["unpacked_size"]
    assert spec_path.read_bytes() == json.dumps(first, indent=2, sort_keys=True).encode() + b"\n"
    # Another machine: an empty layer cache; deploy-spec reads the registry's blobs.
    monkeypatch.setenv("BUILDTOOL_CACHE_DIR", str(tmp_path / "another-machine"))
    code, output, elsewhere = build(tiny, registry.address, "--select", "tiny-slim", cli=cli)
    assert code == 0 and elsewhere["variants"]["tiny-slim"]["unpacked_size"] is None, output
    assert spec() == first


def test_the_baked_model_is_measured_in_the_built_image(
    cli,  # type: ignore[no-untyped-def]
    tiny: Project,
    registry: RegistryUnderTest,
) -> None:
    """model.size_gb says 0.001 GB, the image holds 3 MB of weights (and 5 MB written then deleted
    by a later step, which the unpacked image does not hold): refused on the measured 0.003 GB."""
    template = tiny.root / "images" / "tiny" / "Dockerfile.j2"
    template.write_text(
        template.read_text().replace(
            "COPY app/",
            "RUN mkdir -p /opt/weights/old && head -c 3000000 /dev/urandom > /opt/weights/model.bin "
            "&& head -c 5000000 /dev/urandom > /opt/weights/old/stale.bin\n"
            "RUN rm -r /opt/weights/old\nCOPY app/",
        )
    )
    model = "    model: {name: w, source: baked, size_gb: 0.001, files: 'opt/weights/*'}\n"
    tiny.edit("    needs_torch: false\n", "    needs_torch: false\n" + model)
    tiny.edit("policy:\n", "policy:\n  max_baked_model_gb: 0.0025\n")
    commit(tiny, "weights")
    code, output, manifest = build(tiny, registry.address, "--select", "tiny-slim", cli=cli)
    assert code == 2, output
    assert "model 'w' is 3.0 MB in the built image (1 files; size_gb says 0.001)" in output
    assert manifest["failed"]["tiny-slim"]["status"] == "refused"
    # Under the limit it builds, and the declared size that understates it is a warning.
    tiny.edit("max_baked_model_gb: 0.0025", "max_baked_model_gb: 0.01")
    commit(tiny, "a higher limit")
    code, output, manifest = build(tiny, registry.address, "--select", "tiny-slim", cli=cli)
    assert code == 0, output
    assert "baked-model-size: model 'w' is 3.0 MB in the built image, but size_gb says 0.001" in output


def test_a_cache_export_the_registry_refuses_warns_and_the_image_is_still_pushed(
    cli,  # type: ignore[no-untyped-def]
    tiny: Project,
    registry: RegistryUnderTest,
) -> None:
    """A registry that refuses the cache manifest (as a fresh registry:2 does when two builds commit
    a shared blob at once: 400 MANIFEST_BLOB_UNKNOWN) costs the cache, never the build."""
    import re

    from refusing_proxy import refusing_proxy

    upstream = registry.address.replace("localhost", "127.0.0.1")
    with refusing_proxy(upstream, "PUT", re.compile(r"/manifests/buildcache-")) as proxy:
        code, output, manifest = build(tiny, proxy.address, cli=cli)
    assert code == 0, output
    assert proxy.refused and all("/manifests/buildcache-" in r for r in proxy.refused)
    sha = git(tiny.root, "rev-parse", "HEAD")
    for name, entry in manifest["variants"].items():
        base = name.removeprefix("tiny-")
        assert registry.digest("tiny", f"{base}-{sha}") == entry["digest"]  # pushed through the proxy
        assert registry.digest("tiny", f"buildcache-{base}") is None  # the cache is not there
        warning = next(n for n in entry["notes"] if "build cache was not exported" in n)
        assert f"{proxy.address}/tiny:buildcache-{base}" in warning and "400" in warning
    assert output.count("build cache was not exported") == 2  # one warning per variant


def test_the_cache_form_ecr_takes_is_an_image_manifest_buildkit_reads_back(
    registry: RegistryUnderTest, tmp_path: Path
) -> None:
    """The cache-to buildtool writes for an ECR registry, on the real engine against registry:2 (no
    ECR here): BuildKit takes the attributes, pushes the cache as one OCI image manifest (the form
    ECR accepts, not the index it refuses) and builds from it once its local cache is gone."""
    import urllib.request

    from buildtool.build.engine import BakeOutcome, BuildxEngine
    from buildtool.render.output import cache_export

    ref = f"{registry.address}/probe:buildcache"
    (tmp_path / "Dockerfile").write_text(f"FROM python:3.11-slim\nRUN echo {uuid.uuid4()} > /probe\n")
    target = {
        "context": ".",
        "dockerfile": "Dockerfile",
        "output": ["type=oci,tar=false,dest=out"],
        "cache-from": [f"type=registry,ref={ref}"],
        "cache-to": [cache_export(ref, "image-manifest")],
    }
    (tmp_path / "docker-bake.json").write_text(json.dumps({"target": {"probe": target}}))

    engine = BuildxEngine()

    def bake() -> BakeOutcome:
        outcome = engine.bake(tmp_path / "docker-bake.json", "probe", {}, tmp_path / "probe.log")
        assert outcome.ok, outcome.error
        assert outcome.cache_export_error is None  # exported, not an ignored failure
        return outcome

    bake()
    request = urllib.request.Request(
        f"http://{registry.address}/v2/probe/manifests/buildcache",
        headers={
            "Accept": "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json"
        },
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        manifest = json.load(response)
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["config"]["mediaType"] == "application/vnd.buildkit.cacheconfig.v0"
    subprocess.run(["docker", "buildx", "prune", "-af"], check=True, capture_output=True)
    [run] = [step for step in bake().dockerfile_steps if "RUN echo" in step.name]
    assert run.cached  # from the registry's cache: nothing local was left
