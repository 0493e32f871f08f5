"""In-memory stand-ins behind buildtool's Protocols, for fast unit tests of the logic around them.
The real engine and registry:2 tests (test_build, test_registry, test_release) stay, and run in CI."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from buildtool import refs
from buildtool.errors import RegistryError
from buildtool.registry import RemoteManifest

MANIFEST = "application/vnd.oci.image.manifest.v1+json"


class FakeRegistry:
    """Tags and manifests by repository, as a registry keeps them; every call is recorded."""

    def __init__(self) -> None:
        self.manifests: dict[str, bytes] = {}  # digest -> raw manifest
        self.tags: dict[str, str] = {}  # host/repo:tag -> digest
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
        raise RegistryError(f"{repository}: no blob {digest} in the fake")

    def push_layout(self, layout: Path, digest: str, tag: str) -> int:
        raise RegistryError("the fake registry takes no layouts")
