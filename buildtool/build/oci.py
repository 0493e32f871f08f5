"""A built image as the build stage reads it back: the image manifest, config and layer descriptors,
with its blobs read from where they are (the registry BuildKit pushed to, or an OCI layout)."""

from __future__ import annotations

import contextlib
import fnmatch
import gzip
import io
import json
import tarfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from buildtool.files import merge_json_object, read_json_object

if TYPE_CHECKING:
    from buildtool.registry.client import Registry, RemoteManifest


@dataclass(frozen=True)
class Layer:
    digest: str
    size: int  # compressed bytes: what a pull downloads
    media_type: str
    unpacked: int | None = None  # bytes of the layer's tar once decompressed; None: not known


GZIP_TYPES = (
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
)
ZSTD_TYPES = ("application/vnd.oci.image.layer.v1.tar+zstd",)  # BuildKit's compression=zstd, and Hub images
TAR_TYPES = ("application/vnd.oci.image.layer.v1.tar", "application/vnd.docker.image.rootfs.diff.tar")
GZIP_MAGIC, ZSTD_MAGIC = b"\x1f\x8b", b"\x28\xb5\x2f\xfd"
MAGIC_LENGTH = max(len(GZIP_MAGIC), len(ZSTD_MAGIC))
# In the layer cache (Options.cache_dir), shared by every build on the machine: content-addressed.
FILES_FILE = "layer-files.json"  # "<layer digest> <pattern>" -> matching files
SIZES_FILE = "unpacked-sizes.json"  # blob digest -> unpacked bytes


def tar_stream(stream: BinaryIO) -> BinaryIO:
    """A layer's tar bytes, read as a stream, whatever it is compressed with (gzip, zstd, none):
    told by its first bytes, as containerd tells them, not by a media type a registry may relabel."""
    # Read the magic whole: one read may return fewer bytes (a socket, a chunked response).
    head = b""
    while len(head) < MAGIC_LENGTH and (more := stream.read(MAGIC_LENGTH - len(head))):
        head += more
    buffered: Any = io.BufferedReader(_Prepended(head, stream), buffer_size=1 << 20)
    if head.startswith(GZIP_MAGIC):
        return gzip.GzipFile(fileobj=buffered, mode="rb")  # type: ignore[return-value]
    if head.startswith(ZSTD_MAGIC):
        import zstandard  # Python 3.14's compression.zstd; here the package it grew from

        # A layer may hold several frames (BuildKit writes one per chunk when told to): read them all.
        reader: BinaryIO = zstandard.ZstdDecompressor().stream_reader(buffered, read_across_frames=True)
        return reader
    return buffered  # type: ignore[no-any-return]


class _Prepended(io.RawIOBase):
    """`head` (bytes already read from `rest`), then the rest of `rest`."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self._head, self._rest = head, rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._head:
            count = min(len(buffer), len(self._head))
            buffer[:count], self._head = self._head[:count], self._head[count:]
            return count
        data = self._rest.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def unpacked_size(stream: BinaryIO, media_type: str) -> int | None:
    """The bytes of a layer once decompressed, by decompressing it (gzip's own size field holds only
    the size modulo 4 GiB, and CUDA layers are bigger); None for a layer type it cannot read."""
    if media_type not in (*GZIP_TYPES, *ZSTD_TYPES, *TAR_TYPES):
        return None
    total = 0
    with stream:
        readable = tar_stream(stream)
        while chunk := readable.read(1 << 20):
            total += len(chunk)
    return total


def _remember(cache_path: Path, additions: Mapping[str, Any]) -> None:
    """Add to the layer cache. It only saves time: a cache that cannot be written (a read-only or
    missing $HOME, as in some CI containers) must not fail the build, so the facts are measured
    again next time instead."""
    with contextlib.suppress(OSError):
        merge_json_object(cache_path, additions)


def unpacked_sizes(
    cache_path: Path, layers: list[dict[str, Any]], open_blob: Callable[[str], BinaryIO]
) -> dict[str, int | None]:
    """Each layer's unpacked size, remembered in `cache_path` (content-addressed: a base's layers are
    measured once); `open_blob(digest)` reads a layer not measured yet, from a layout or a registry."""
    cache = read_json_object(cache_path)
    measured: dict[str, int] = {}
    sizes: dict[str, int | None] = {}
    for d in layers:
        digest = str(d["digest"])
        if digest not in cache and digest not in measured:
            media_type = str(d.get("mediaType", ""))
            size = unpacked_size(open_blob(digest), media_type) if media_type else None
            if size is not None:
                measured[digest] = size
        known = measured.get(digest, cache.get(digest))
        sizes[digest] = int(known) if known is not None else None
    _remember(cache_path, measured)
    return sizes


BlobOpener = Callable[[str], BinaryIO]  # a blob's digest -> its bytes, as a stream


@dataclass(frozen=True)
class OciImage:
    variant: str
    digest: str  # of the image manifest
    config: Mapping[str, Any]  # the image config's `config`: Env, Labels, User, Entrypoint, ...
    history: tuple[Mapping[str, Any], ...]  # the image config's `history`: one entry per step
    layers: tuple[Layer, ...]
    config_size: int
    diff_ids: tuple[str, ...] = ()  # the layers' uncompressed digests (the config's rootfs)
    base_layers: int = 0  # how many leading layers are its base's (0: not known)
    open_blob: BlobOpener | None = None  # where its layers are read from, when they can be
    cache_dir: Path | None = None  # where layer facts are remembered
    # Layers' unpacked sizes measured since it was read (a rule asked): digest -> bytes.
    measured: dict[str, int] = field(default_factory=dict, compare=False, repr=False)

    @property
    def files_readable(self) -> bool:
        return self.open_blob is not None and self.cache_dir is not None

    def files_matching(self, pattern: str) -> dict[str, int]:
        """Regular files whose path matches `pattern` (fnmatch; `*` spans `/`) in the layers above
        its base, as the unpacked image holds them (later layers win, whiteouts delete): path ->
        bytes. Each layer is read once per pattern, then remembered in the layer cache (by digest:
        a layer an earlier build read is not read again)."""
        assert self.open_blob is not None and self.cache_dir is not None, "no blobs to read files from"
        cache_path = self.cache_dir / FILES_FILE
        cache = read_json_object(cache_path)
        scanned: dict[str, Any] = {}
        files: dict[str, int] = {}
        for layer in self.layers[self.base_layers :]:
            key = f"{layer.digest} {pattern}"
            if key not in cache:
                scanned[key] = cache[key] = _scan_layer(self.open_blob(layer.digest), pattern)
            for gone in cache[key]["deleted"]:
                files = {p: n for p, n in files.items() if p != gone and not p.startswith(gone + "/")}
            files.update(cache[key]["files"])
        _remember(cache_path, scanned)
        return files

    def above(self, base_layers: tuple[str, ...] | None) -> tuple[int, int] | None:
        """(how many of its layers are the base's, compressed bytes of the config and the layers
        above them): what moves to a host that holds the base. None if the base is not known."""
        if not base_layers:
            return None
        shared = 0
        for mine, theirs in zip(self.diff_ids, base_layers, strict=False):
            if mine != theirs:
                break
            shared += 1
        return shared, self.config_size + sum(layer.size for layer in self.layers[shared:])

    @property
    def compressed_size(self) -> int:
        """Bytes a pull downloads: config and layers (the registry's count, registry.compressed_size)."""
        return self.config_size + sum(layer.size for layer in self.layers)

    @property
    def known_unpacked_size(self) -> int | None:
        """Bytes on the container disk once pulled and unpacked, if every layer's is known without
        reading it (the layer cache, or measured since): None otherwise."""
        sizes = [self.measured.get(layer.digest, layer.unpacked) for layer in self.layers]
        return None if None in sizes else sum(s or 0 for s in sizes)

    @property
    def unpacked_size(self) -> int | None:
        """Bytes on the container disk once pulled and unpacked: layers not measured yet are read
        (GBs for a base on a new machine: asked for only by a rule that needs it), and remembered.
        None if a layer cannot be read or measured."""
        known = self.known_unpacked_size
        if known is not None or self.open_blob is None or self.cache_dir is None:
            return known
        unknown = [
            {"digest": layer.digest, "mediaType": layer.media_type}
            for layer in self.layers
            if layer.unpacked is None and layer.digest not in self.measured
        ]
        sizes = unpacked_sizes(self.cache_dir / SIZES_FILE, unknown, self.open_blob)
        self.measured.update({d: s for d, s in sizes.items() if s is not None})
        return self.known_unpacked_size

    @property
    def env(self) -> dict[str, str]:
        pairs = (str(item).partition("=") for item in self.config.get("Env") or ())
        return {name: value for name, _, value in pairs}

    @property
    def labels(self) -> dict[str, str]:
        return {str(k): str(v) for k, v in (self.config.get("Labels") or {}).items()}


def _scan_layer(blob: BinaryIO, pattern: str) -> dict[str, Any]:
    """A layer's regular files matching `pattern`, and what its whiteouts delete (OCI image spec:
    `.wh.<name>` deletes <name>; `.wh..wh..opq` empties its directory of lower layers' files)."""
    files: dict[str, int] = {}
    deleted: list[str] = []
    with blob as stream, tarfile.open(fileobj=tar_stream(stream), mode="r|") as tar:
        for member in tar:
            name = member.name.removeprefix("./").rstrip("/")
            directory, _, base = name.rpartition("/")
            if base == ".wh..wh..opq":
                deleted.append(directory)
            elif base.startswith(".wh."):
                deleted.append(f"{directory}/{base[4:]}".lstrip("/"))
            elif member.isreg() and fnmatch.fnmatchcase(name, pattern):
                files[name] = member.size
    return {"files": files, "deleted": deleted}


def blob_path(layout: Path, digest: str) -> Path:
    algorithm, _, hexdigest = digest.partition(":")
    return layout / "blobs" / algorithm / hexdigest


def image_from(
    variant: str,
    digest: str,
    manifest: Mapping[str, Any],
    config: Mapping[str, Any],
    unpacked: Mapping[str, int | None] | None = None,
) -> OciImage:
    """An image from its manifest and config documents (a layout's, or a registry's)."""
    unpacked = unpacked or {}
    layers = tuple(
        Layer(
            str(d["digest"]),
            int(d.get("size", 0)),
            str(d.get("mediaType", "")),
            unpacked.get(str(d["digest"])),
        )
        for d in manifest.get("layers", [])
    )
    return OciImage(
        variant,
        digest,
        config.get("config") or {},
        tuple(config.get("history") or ()),
        layers,
        int(manifest["config"].get("size", 0)),
        tuple(str(d) for d in (config.get("rootfs") or {}).get("diff_ids") or ()),
    )


def known_sizes(cache_dir: Path, layers: object) -> dict[str, int | None]:
    """What the layer cache knows of each layer's unpacked size (nothing is read)."""
    cache = read_json_object(cache_dir / SIZES_FILE)
    digests = (
        [str(d.get("digest")) for d in layers if isinstance(d, dict)] if isinstance(layers, list) else []
    )
    return {d: int(cache[d]) if isinstance(cache.get(d), int) else None for d in digests}


def registry_image(
    registry: Registry, repository: str, manifest: RemoteManifest, variant: str, cache_dir: Path
) -> OciImage:
    """The image a registry holds (`repository` is host/repo): its config read now, its layers only
    when a rule reads files or sizes the layer cache does not know. Raises RegistryError, or
    ValueError/KeyError for a manifest that is not an image's."""
    document: Mapping[str, Any] = manifest.document
    config = json.loads(registry.blob(repository, str(document["config"]["digest"])))
    image = image_from(
        variant, manifest.digest, document, config, known_sizes(cache_dir, document.get("layers"))
    )
    return replace(image, open_blob=lambda d: registry.open_blob(repository, d), cache_dir=cache_dir)


def registry_unpacked_size(
    registry: Registry, repository: str, manifest: RemoteManifest, cache_path: Path
) -> int | None:
    """An image's unpacked size from the registry's manifest (`repository` is host/repo): layers the
    cache knows cost nothing, others are downloaded once and measured. None for an index."""
    layers = manifest.document.get("layers")
    if not isinstance(layers, list):
        return None
    sizes = unpacked_sizes(cache_path, layers, lambda d: registry.open_blob(repository, d))
    return None if None in sizes.values() else sum(s or 0 for s in sizes.values())


def cached_unpacked_size(cache_path: Path, layers: object) -> int | None:
    """An image's unpacked size if the cache knows every layer of it (nothing is downloaded)."""
    if not isinstance(layers, list):
        return None
    try:
        cache = json.loads(cache_path.read_text())
        return sum(int(cache[str(d["digest"])]) for d in layers)
    except (OSError, ValueError, KeyError, TypeError):
        return None
