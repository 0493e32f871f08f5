"""The image registry behind a Protocol: digests, tag existence, registry-side tag copies.

HttpRegistry speaks the OCI distribution API directly. A tag copy PUTs the very manifest bytes under
the new tag, so the digest is unchanged and no layer moves (`imagetools create` would wrap a single
manifest into a new index: another digest). Credentials are `docker login`'s: config.json `auths`,
`credsStore` and `credHelpers`, with Basic or Bearer token challenges. localhost and 127.0.0.0/8 are
spoken to over plain HTTP, as the Docker engine does.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol, cast

from buildtool import refs
from buildtool.errors import RegistryError, RegistryUnreachable
from buildtool.registry import http

# The slowest commit allowed for; GHCR committed 700 MB in 5-11 s (GoogleContainerTools/jib#4301).
COMMIT_BYTES_PER_SECOND = 16 * 2**20
DOCKER_HUB_API = "registry-1.docker.io"  # docker.io's distribution API host
MANIFEST_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)


@dataclass(frozen=True)
class RemoteManifest:
    digest: str
    media_type: str
    raw: bytes

    @property
    def document(self) -> dict[str, object]:
        return json.loads(self.raw)  # type: ignore[no-any-return]


class Registry(Protocol):
    def manifest(self, ref: str) -> RemoteManifest | None:
        """The manifest `ref` (host/repo:tag or host/repo@digest) points to, or None if none."""

    def copy_tag(self, source: str, tag: str) -> None:
        """Point `tag` at the manifest `source` (host/repo@digest), registry-side: no rebuild, no pull."""

    def blob(self, repository: str, digest: str) -> bytes:
        """A small blob of `repository` (host/repo), read whole: an image config."""

    def open_blob(self, repository: str, digest: str) -> BinaryIO:
        """A blob of `repository` as a stream to read and close: a layer (GBs) is never held whole."""

    def push_layout(
        self, layout: Path, digest: str, tag: str, on_bytes: Callable[[int], None] = lambda _: None
    ) -> int:
        """Upload the image manifest `digest` of the OCI layout directory `layout`, its config and
        layers (those the registry lacks), then put the manifest's exact bytes under `tag`. Returns
        the bytes uploaded; `on_bytes` hears of each chunk as it is sent (negative: a chunk sent
        again, as when a refused request is repeated with credentials)."""


@dataclass(frozen=True)
class Reference:
    host: str
    repository: str
    reference: str  # tag or digest

    @classmethod
    def parse(cls, ref: str) -> Reference:
        try:
            image = refs.parse(ref)
        except refs.InvalidReference as exc:
            raise RegistryError(str(exc)) from None
        host = DOCKER_HUB_API if image.domain == refs.DOCKER_HUB else image.domain
        return cls(host, image.path, image.digest or image.tag_or_latest)

    @property
    def base_url(self) -> str:
        hostname = self.host.split(":")[0]
        insecure = hostname == "localhost" or hostname.startswith("127.")
        return f"{'http' if insecure else 'https'}://{self.host}/v2/{self.repository}"


class HttpRegistry:
    def __init__(self, timeout: float = 60, docker_config: Path | None = None) -> None:
        self.timeout = timeout
        self.docker_config = docker_config or Path(os.environ.get("DOCKER_CONFIG", Path.home() / ".docker"))
        self._tokens: dict[tuple[str, str], str] = {}
        # Variants built in parallel share blobs (their base's layers). registry:2 answers two
        # concurrent uploads of one blob with DIGEST_INVALID: each blob is uploaded by one thread at
        # a time, and the next finds it there.
        self._blob_locks: dict[tuple[str, str, str], threading.Lock] = {}
        self._blob_locks_guard = threading.Lock()
        self._token_locks: dict[tuple[str, str], threading.Lock] = {}
        self._opener = http.opener()

    def manifest(self, ref: str) -> RemoteManifest | None:
        where = Reference.parse(ref)
        status, headers, body = self._call(
            where, "GET", f"/manifests/{where.reference}", "pull", {"Accept": ", ".join(MANIFEST_TYPES)}
        )
        if status == 404:
            return None
        http.raise_for(status, body, ref)
        media_type = headers.get("content-type", "").split(";")[0] or str(
            json.loads(body).get("mediaType", "")
        )
        return RemoteManifest("sha256:" + hashlib.sha256(body).hexdigest(), media_type, body)

    def copy_tag(self, source: str, tag: str) -> None:
        manifest = self.manifest(source)
        if manifest is None:
            raise RegistryError(f"{source} does not exist")
        target = Reference.parse(tag)
        status, _, body = self._call(
            target,
            "PUT",
            f"/manifests/{target.reference}",
            "pull,push",
            {"Content-Type": manifest.media_type},
            manifest.raw,
        )
        http.raise_for(status, body, tag)

    def blob(self, repository: str, digest: str) -> bytes:
        with self.open_blob(repository, digest) as stream:
            return stream.read()

    def open_blob(self, repository: str, digest: str) -> BinaryIO:
        where = Reference.parse(f"{repository}@{digest}")
        response = self._call_open(where, "GET", f"/blobs/{digest}", "pull", {})
        if response.status != 200:
            with response:
                http.raise_for(
                    response.status if response.status >= 400 else 500,
                    response.read(),
                    f"{repository}@{digest}",
                )
        return response  # type: ignore[no-any-return]

    def push_layout(
        self, layout: Path, digest: str, tag: str, on_bytes: Callable[[int], None] = lambda _: None
    ) -> int:
        target = Reference.parse(tag)
        manifest_bytes = _layout_blob(layout, digest).read_bytes()
        manifest = json.loads(manifest_bytes)
        uploaded = 0
        for descriptor in [manifest["config"], *manifest.get("layers", [])]:
            uploaded += self._upload_blob(target, layout, str(descriptor["digest"]), on_bytes)
        media_type = str(manifest.get("mediaType") or "application/vnd.oci.image.manifest.v1+json")
        status, _, body = self._call(
            target,
            "PUT",
            f"/manifests/{target.reference}",
            "pull,push",
            {"Content-Type": media_type},
            manifest_bytes,
        )
        http.raise_for(status, body, tag)
        return uploaded

    def _upload_blob(
        self, target: Reference, layout: Path, digest: str, on_bytes: Callable[[int], None]
    ) -> int:
        """A monolithic upload (POST, then PUT with the digest), unless the registry has the blob."""
        with self._blob_locks_guard:
            lock = self._blob_locks.setdefault((target.host, target.repository, digest), threading.Lock())
        with lock:
            return self._upload_blob_once(target, layout, digest, on_bytes)

    def _upload_blob_once(
        self, target: Reference, layout: Path, digest: str, on_bytes: Callable[[int], None]
    ) -> int:
        status, _, body = self._call(target, "HEAD", f"/blobs/{digest}", "pull,push", {})
        if status == 200:
            return 0
        if status not in (404,):
            http.raise_for(status, body, f"{target.host}/{target.repository}@{digest}")
        path = _layout_blob(layout, digest)
        status, headers, body = self._call(target, "POST", "/blobs/uploads/", "pull,push", {}, b"")
        if status != 202 or "location" not in headers:
            http.raise_for(status if status >= 400 else 500, body, f"upload to {target.repository}")
        location = urllib.parse.urljoin(target.base_url + "/blobs/uploads/", headers["location"])
        separator = "&" if "?" in location else "?"
        size = path.stat().st_size
        # The registry answers the PUT once it has committed the blob: GHCR takes seconds per GB,
        # so the wait for that answer grows with the blob.
        commit_timeout = self.timeout + size / COMMIT_BYTES_PER_SECOND
        try:
            with _Counted(path.open("rb"), on_bytes) as counted:
                stream = cast(BinaryIO, counted)
                status, _, body = self._call(
                    target,
                    "PUT",
                    f"{location}{separator}digest={urllib.parse.quote(digest)}",
                    "pull,push",
                    {"Content-Type": "application/octet-stream", "Content-Length": str(size)},
                    stream,
                    commit_timeout,
                )
        except RegistryUnreachable:
            # The answer was lost (a timeout, a dropped connection) after the registry may have
            # committed the blob: if it holds the blob now, the upload is done.
            if self._has_blob(target, digest):
                return size
            raise
        if status == 404 and self._has_blob(target, digest):
            return size  # a retried commit of an upload that went through (BLOB_UPLOAD_UNKNOWN)
        http.raise_for(status, body, f"{target.host}/{target.repository}@{digest}")
        return size

    def _has_blob(self, target: Reference, digest: str) -> bool:
        return self._call(target, "HEAD", f"/blobs/{digest}", "pull,push", {})[0] == 200

    # --- HTTP with docker-login credentials ------------------------------------------------------

    def _call(
        self,
        where: Reference,
        method: str,
        path: str,
        actions: str,
        headers: dict[str, str],
        data: bytes | BinaryIO | None = None,
        timeout: float | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        """`path` is under the repository's /v2/<name> URL, or a whole URL (an upload location)."""
        with self._call_open(where, method, path, actions, headers, data, timeout) as response:
            return response.status, http.lower_keys(response.headers.items()), response.read()

    def _call_open(
        self,
        where: Reference,
        method: str,
        path: str,
        actions: str,
        headers: dict[str, str],
        data: bytes | BinaryIO | None = None,
        timeout: float | None = None,
    ) -> Any:
        """`_call`'s response, open: a blob's body is streamed from it by the caller."""
        key = (where.host, f"repository:{where.repository}:{actions}")
        url = path if path.startswith(("http://", "https://")) else where.base_url + path
        sent = self._tokens.get(key)
        response = self._open(
            method, url, {**headers, **({"Authorization": sent} if sent else {})}, data, timeout
        )
        if response.status == 401:
            # No credentials were sent, or what was sent has expired (a Bearer token lives minutes).
            # Parallel pushes share one answer per scope: the first thread to be refused fetches it,
            # the others wait for it and use it, and a refused request is repeated once with it.
            challenge = http.lower_keys(response.headers.items()).get("www-authenticate", "")
            response.close()
            token = self._token(key, where.host, challenge, sent)
            if not isinstance(data, bytes | None):
                data.seek(0)  # a streamed body was (partly) read by the refused attempt
            response = self._open(method, url, {**headers, "Authorization": token}, data, timeout)
        return response

    def _token(self, key: tuple[str, str], host: str, challenge: str, refused: str | None) -> str:
        """The credentials for `key` that are newer than the `refused` ones, fetched by one thread."""
        with self._blob_locks_guard:
            lock = self._token_locks.setdefault(key, threading.Lock())
        with lock:
            current = self._tokens.get(key)
            if current is None or current == refused:
                current = self._tokens[key] = self._authorize(host, challenge, key[1])
            return current

    def _send(
        self, method: str, url: str, headers: dict[str, str], data: bytes | BinaryIO | None
    ) -> tuple[int, dict[str, str], bytes]:
        with self._open(method, url, headers, data) as response:
            return response.status, http.lower_keys(response.headers.items()), response.read()

    def _open(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        data: bytes | BinaryIO | None,
        timeout: float | None = None,
    ) -> Any:
        """The response, open (an error status is a response too: its body says why). Reads and
        manifest PUTs, which are safe to repeat, are retried after a transient failure."""
        repeatable = method in ("GET", "HEAD") or (method == "PUT" and "/manifests/" in url)
        delays = http.RETRY_DELAYS if repeatable else ()
        for attempt in range(len(delays) + 1):
            last = attempt == len(delays)
            request = urllib.request.Request(url, data=data, method=method, headers=headers)
            try:
                return self._opener.open(request, timeout=timeout or self.timeout)
            except urllib.error.HTTPError as exc:
                wait = http.retry_wait(
                    exc.code, exc.headers.get("Retry-After"), delays[attempt] if not last else None
                )
                if wait is None:
                    return exc
                exc.close()
            except (TimeoutError, urllib.error.URLError, ConnectionError) as exc:
                reason = getattr(exc, "reason", exc)
                if last or isinstance(reason, (ConnectionRefusedError, socket.gaierror)):
                    raise RegistryUnreachable(f"{url.split('/v2/')[0]}: {reason}") from None
                wait = delays[attempt]
            time.sleep(wait)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _authorize(self, host: str, challenge: str, scope: str) -> str:
        def send(method: str, url: str, headers: dict[str, str]) -> tuple[int, bytes]:
            status, _, body = self._send(method, url, headers, None)
            return status, body

        credentials = http.docker_credentials(self.docker_config, host)
        return http.authorization(host, challenge, scope, credentials, send)


def _layout_blob(layout: Path, digest: str) -> Path:
    algorithm, _, hex_digest = digest.partition(":")
    path = layout / "blobs" / algorithm / hex_digest
    if not path.is_file():
        raise RegistryError(f"the OCI layout {layout} has no blob {digest}")
    return path


def compressed_size(
    registry: Registry, repository: str, manifest: RemoteManifest, platform: str = "linux/amd64"
) -> int:
    """Bytes a pull downloads: the config and layers of the image manifest (for an index, of the
    manifest for `platform`). `repository` is host/repo."""
    doc = manifest.document
    children = doc.get("manifests")
    if isinstance(children, list):
        os_name, _, arch = platform.partition("/")
        for child in children:
            plat = child.get("platform", {})
            if plat.get("os") == os_name and plat.get("architecture") == arch:
                inner = registry.manifest(f"{repository}@{child['digest']}")
                return compressed_size(registry, repository, inner, platform) if inner else 0
        return 0
    layers = doc.get("layers", [])
    config = doc.get("config", {})
    assert isinstance(layers, list) and isinstance(config, dict)
    return int(config.get("size", 0)) + sum(int(layer.get("size", 0)) for layer in layers)


class _Counted(io.RawIOBase):
    """A file being uploaded, telling `on_bytes` of each chunk read from it (and, on a rewind for a
    repeated request, of the chunks to be sent again, as a negative count)."""

    def __init__(self, stream: BinaryIO, on_bytes: Callable[[int], None]) -> None:
        self._stream, self._on_bytes, self._read = stream, on_bytes, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self._read += len(data)
        if data:
            self._on_bytes(len(data))
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        position = self._stream.seek(offset, whence)
        if position < self._read:
            self._on_bytes(position - self._read)
            self._read = position
        return position

    def tell(self) -> int:
        return self._stream.tell()

    def close(self) -> None:
        self._stream.close()
        super().close()
