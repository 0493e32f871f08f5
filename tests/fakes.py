"""In-memory stand-ins behind buildtool's Protocols, for fast unit tests of the logic around them.
The real engine and registry:2 tests (test_build, test_registry, test_release) stay, and run in CI."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
from pathlib import Path
from typing import Any, BinaryIO

from buildtool import refs
from buildtool.errors import RegistryError
from buildtool.registry.client import RemoteManifest

MANIFEST = "application/vnd.oci.image.manifest.v1+json"


class FakeRegistry:
    """Tags and manifests by repository, as a registry keeps them; every call is recorded."""

    def __init__(self) -> None:
        self.manifests: dict[str, bytes] = {}  # digest -> raw manifest
        self.tags: dict[str, str] = {}  # host/repo:tag -> digest
        self.blobs: dict[str, bytes] = {}
        self.calls: list[tuple[str, str]] = []

    def put(self, ref: str, content: str) -> str:
        """A manifest under `ref` (host/repo:tag); its digest."""
        raw = json.dumps({"schemaVersion": 2, "mediaType": MANIFEST, "annotations": {"c": content}}).encode()
        digest = "sha256:" + hashlib.sha256(raw).hexdigest()
        self.manifests[digest] = raw
        self.tags[ref] = digest
        return digest

    def manifest(self, ref: str) -> RemoteManifest | None:
        self.calls.append(("manifest", ref))
        parsed = refs.parse(ref)
        digest = parsed.digest or self.tags.get(ref)
        if digest is None or digest not in self.manifests:
            return None
        return RemoteManifest(digest, MANIFEST, self.manifests[digest])

    def copy_tag(self, source: str, tag: str) -> None:
        self.calls.append(("copy_tag", tag))
        digest = refs.parse(source).digest
        if digest not in self.manifests:
            raise RegistryError(f"{source} does not exist")
        self.tags[tag] = digest

    def blob(self, repository: str, digest: str) -> bytes:
        if digest not in self.blobs:
            raise RegistryError(f"{repository}: no blob {digest}")
        return self.blobs[digest]

    def open_blob(self, repository: str, digest: str) -> BinaryIO:
        return io.BytesIO(self.blob(repository, digest))


class FakeEngine:
    """Builds a one-layer image (its content: the variant name and `content`) into its store under
    the target's tag unless the output says store=false, and pushes from there to `registry`; the
    base is resolved only once it has been "pulled"."""

    def __init__(
        self,
        content: str = "v1",
        base_present: bool = True,
        fail: str | None = None,
        env: tuple[str, ...] = (),
    ) -> None:
        self.content = content
        self.env = env  # the built image's ENV, besides the labels the bake file asks for
        self.base_present = base_present
        self.fail = fail  # BuildKit's words, when the build itself fails
        self.calls: list[str] = []
        self.registry: FakeRegistry | None = None  # where push() sends
        self.stored: dict[str, tuple[str, bytes, dict[str, bytes], dict[str, object]]] = {}

    def local_image_digest(self, ref: str) -> str | None:
        return "sha256:" + "b" * 64 if self.base_present else None

    def image_layers(self, ref: str) -> tuple[str, ...] | None:
        return None  # a fake base has no layers to share

    def image_config(self, ref: str) -> Any:
        from buildtool.build.engine import StoredConfig

        if ref not in self.stored:
            return None
        config: Any = self.stored[ref][3]
        return StoredConfig(tuple(config["Env"]), dict(config["Labels"]), ({"created_by": "RUN x"},))

    def push(self, ref: str, on_progress: Any = None) -> Any:
        from buildtool.build.engine import Pushed

        assert self.registry is not None, "a push needs the fake registry"
        self.calls.append(f"push {ref}")
        digest, manifest, blobs, _ = self.stored[ref]
        sent = sum(len(data) for name, data in blobs.items() if name not in self.registry.blobs)
        self.registry.blobs.update(blobs)
        self.registry.manifests[digest] = manifest
        self.registry.tags[ref] = digest
        return Pushed(digest, sent=sent)

    def pull(self, ref: str) -> str | None:
        self.calls.append(f"pull {ref}")
        self.base_present = True
        return None

    def bake(self, bake_file, target, overrides, log, on_progress=None):  # type: ignore[no-untyped-def]
        from buildtool.build.engine import BakeOutcome, Step

        self.calls.append(f"bake {target}")
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("fake bake\n")
        if not self.base_present:
            return BakeOutcome(False, {}, (), "failed to resolve source metadata for the base: not found")
        if self.fail:
            return BakeOutcome(False, {}, (), self.fail)
        asked = json.loads(bake_file.read_text())["target"][target]
        output = dict(p.split("=", 1) for p in overrides.get("output", asked["output"][0]).split(","))
        config = {"Labels": asked.get("labels", {}), "Env": list(self.env)}
        digest, manifest, blobs = image_blobs(f"{target}:{self.content}", config)
        if output.get("store", "true") == "true":  # into the engine's image store, as BuildKit does
            self.stored[asked["tags"][0]] = (digest, manifest, blobs, config)
        steps = (
            Step(f"[1/2] FROM docker.io/base@sha256:{'b' * 64}", False, True, None),
            Step("[2/2] RUN x", True, True, None),
        )
        return BakeOutcome(True, {"containerimage.digest": digest}, steps, None)


def image_blobs(content: str, config: dict[str, object] | None = None) -> tuple[str, bytes, dict[str, bytes]]:
    """An image whose single layer is `content` and whose config's `config` is `config`: (the
    manifest's digest, the manifest, its config and layer blobs by digest)."""
    blobs: dict[str, bytes] = {}

    def blob(data: bytes) -> dict[str, object]:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        return {"digest": digest, "size": len(data)}

    packed = gzip.compress(content.encode(), mtime=0)
    layer = {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **blob(packed)}
    document = json.dumps({"config": config or {}, "history": [{"created_by": f"RUN {content[:60]}"}]})
    config_blob = {"mediaType": "application/vnd.oci.image.config.v1+json", **blob(document.encode())}
    manifest = json.dumps(
        {"schemaVersion": 2, "mediaType": MANIFEST, "config": config_blob, "layers": [layer]}
    ).encode()
    return "sha256:" + hashlib.sha256(manifest).hexdigest(), manifest, blobs


def write_layout(layout: Path, content: str, config: dict[str, object] | None = None) -> str:
    """An OCI layout holding image_blobs(content, config); the manifest's digest."""
    digest, manifest, blobs = image_blobs(content, config)
    directory = layout / "blobs" / "sha256"
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in [*blobs.items(), (digest, manifest)]:
        (directory / name.removeprefix("sha256:")).write_bytes(data)
    described = {"mediaType": MANIFEST, "digest": digest, "size": len(manifest)}
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [described]}))
    return digest


def layout_image(layout: Path, digest: str, cache_dir: Path) -> Any:
    """The image `digest` of an OCI layout, read as the build stage reads a registry's: its layers
    opened only when a size or a file is asked for."""
    from dataclasses import replace

    from buildtool.build.oci import blob_path, image_from, known_sizes

    manifest = json.loads(blob_path(layout, digest).read_bytes())
    config = json.loads(blob_path(layout, manifest["config"]["digest"]).read_bytes())
    image = image_from("v", digest, manifest, config, known_sizes(cache_dir, manifest["layers"]))
    return replace(image, open_blob=lambda d: blob_path(layout, d).open("rb"), cache_dir=cache_dir)
