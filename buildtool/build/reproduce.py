"""Is a build reproducible? Build a variant again from nothing and compare with the digest the
registry holds; when the two differ, say which layer differs and which files in it.

"From nothing": BuildKit's cache is not used (no-cache), the registry cache is neither read nor
written, and the image is exported to a fresh OCI layout (build/reproduce/<variant>/). Only the base
image comes from the engine, by the digest the first build used. Nothing else in the engine or the
registry is touched, so other builds on the same engine are not disturbed.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from buildtool.build.engine import Engine
from buildtool.build.oci import tar_stream
from buildtool.errors import RegistryError
from buildtool.policy.dockerfile import REPRODUCIBLE_SHELL_MARK
from buildtool.registry.client import Registry

REPRODUCE_DIR = "reproduce"
MAX_FILES_SHOWN = 20


@dataclass(frozen=True)
class FileDifference:
    path: str
    what: str  # "only in the first build", "content", "mtime 1700000000 vs 1700000123", ...


@dataclass(frozen=True)
class LayerDifference:
    index: int  # among the image's layers, 0 = the base's first
    created_by: str  # the Dockerfile step that made it (the config's history)
    first: str  # layer digests
    second: str
    files: tuple[FileDifference, ...]
    more_files: int = 0  # differences not listed


@dataclass(frozen=True)
class Reproduction:
    variant: str
    expected: str  # the digest of the first build (the registry's)
    rebuilt: str | None  # None: the rebuild failed
    error: str | None = None
    layers: tuple[LayerDifference, ...] = ()
    config_keys: tuple[str, ...] = ()  # top-level config keys that differ (besides rootfs)

    @property
    def reproducible(self) -> bool:
        return self.rebuilt == self.expected

    def explain(self) -> str:
        if self.error:
            return f"the rebuild from nothing failed: {self.error}"
        if self.reproducible:
            return f"reproducible: the rebuild from nothing gave {self.expected}"
        lines = [f"not reproducible: the registry holds {self.expected}, the rebuild gave {self.rebuilt}"]
        if self.config_keys:
            lines.append(f"image config differs in: {', '.join(self.config_keys)}")
        for layer in self.layers:
            lines.append(
                f"layer {layer.index} ({layer.created_by}): {layer.first[:19]} vs {layer.second[:19]}"
            )
            lines += [f"  {f.path}: {f.what}" for f in layer.files]
            if layer.more_files:
                lines.append(f"  ... and {layer.more_files} more")
        return "\n".join(lines)


class _Blobs:
    """Blobs of one image: from an OCI layout when it has them, else from the registry."""

    def __init__(self, layout: Path | None, registry: Registry | None, repository: str | None) -> None:
        self.layout, self.registry, self.repository = layout, registry, repository

    def get(self, digest: str) -> bytes:
        with self.open(digest) as stream:
            return stream.read()

    def manifest(self, digest: str) -> bytes:
        """An image manifest: a registry serves it from /manifests/, not as a blob."""
        held = self.layout / "blobs" / "sha256" / digest.removeprefix("sha256:") if self.layout else None
        if held is not None and held.is_file():
            return held.read_bytes()
        if self.registry is None or self.repository is None:
            raise RegistryError(f"manifest {digest} is neither in the layout nor reachable")
        remote = self.registry.manifest(f"{self.repository}@{digest}")
        if remote is None:
            raise RegistryError(f"the registry has no manifest {digest} in {self.repository}")
        return remote.raw

    def open(self, digest: str) -> BinaryIO:
        """The blob as a stream: layers are read through, never held whole."""
        if self.layout is not None:
            path = self.layout / "blobs" / "sha256" / digest.removeprefix("sha256:")
            if path.is_file():
                return path.open("rb")
        if self.registry is None or self.repository is None:
            raise RegistryError(f"blob {digest} is neither in the layout nor reachable")
        return self.registry.open_blob(self.repository, digest)


def check_reproducible(
    build_dir: Path,
    variant: str,
    expected: str,
    repository: str,
    engine: Engine,
    registry: Registry,
    overrides: dict[str, str] | None = None,
) -> Reproduction:
    """Rebuild `variant` (a target of build_dir/docker-bake.json) from nothing and compare."""
    relative = f"{REPRODUCE_DIR}/{variant}"
    destination = build_dir / relative
    shutil.rmtree(destination, ignore_errors=True)
    settings = {
        **(overrides or {}),
        "no-cache": "true",
        "cache-from": "",
        "cache-to": "",
        "output": f"type=oci,tar=false,dest={destination.resolve()},oci-mediatypes=true",
    }
    log = build_dir / "logs" / f"{variant}.reproduce.log"
    outcome = engine.bake(build_dir / "docker-bake.json", variant, settings, log)
    if not outcome.ok or outcome.digest is None:
        return Reproduction(variant, expected, None, error=f"{outcome.error} (log: {log})")
    if outcome.digest == expected:
        shutil.rmtree(destination, ignore_errors=True)
        return Reproduction(variant, expected, outcome.digest)
    first = _Blobs(None, registry, repository)
    second = _Blobs(destination, None, None)
    layers, keys = compare_images(first, expected, second, outcome.digest)
    return Reproduction(variant, expected, outcome.digest, layers=layers, config_keys=keys)


def compare_images(
    first: _Blobs, first_digest: str, second: _Blobs, second_digest: str
) -> tuple[tuple[LayerDifference, ...], tuple[str, ...]]:
    manifests = [json.loads(b.manifest(d)) for b, d in ((first, first_digest), (second, second_digest))]
    configs: list[dict[str, Any]] = [
        json.loads(b.get(m["config"]["digest"])) for b, m in zip((first, second), manifests, strict=True)
    ]
    keys = tuple(
        sorted(
            k
            for k in set(configs[0]) | set(configs[1])
            if k != "rootfs" and configs[0].get(k) != configs[1].get(k)
        )
    )
    steps = [h.get("created_by", "") for h in configs[1].get("history", []) if not h.get("empty_layer")]
    out = []
    layers = [m.get("layers", []) for m in manifests]
    for index in range(max(len(layers[0]), len(layers[1]))):
        a = layers[0][index]["digest"] if index < len(layers[0]) else "none"
        b = layers[1][index]["digest"] if index < len(layers[1]) else "none"
        if a == b:
            continue
        files: list[FileDifference] = []
        if a != "none" and b != "none":
            files = diff_entries(layer_entries(first.open(a)), layer_entries(second.open(b)))
        step = steps[index] if index < len(steps) else "?"
        out.append(
            LayerDifference(
                index,
                _short(step),
                a,
                b,
                tuple(files[:MAX_FILES_SHOWN]),
                max(0, len(files) - MAX_FILES_SHOWN),
            )
        )
    return tuple(out), keys


def _short(step: str) -> str:
    """'RUN /bin/sh -c date > /x # buildkit' -> 'RUN date > /x', as written in the Dockerfile."""
    step = step.removesuffix("# buildkit").strip()
    if f"{REPRODUCIBLE_SHELL_MARK} " in step:  # the templates' shell: the step's own command follows it
        flags = [w for w in step.split()[1:] if w.startswith("--")]
        step = " ".join(["RUN", *flags, step.split(f"{REPRODUCIBLE_SHELL_MARK} ", 1)[1]])
    step = step.replace("/bin/sh -c ", "").strip()
    return step if len(step) <= 90 else step[:87] + "..."


Entry = tuple[str, int, int, int, int, str, str]  # type, mode, uid, gid, mtime, sha256, link


def layer_entries(stream: BinaryIO) -> dict[str, Entry]:
    """Each path of a layer tarball (gzip, zstd or plain, read through once and closed) with what
    makes it differ."""
    entries: dict[str, Entry] = {}
    with stream, tarfile.open(fileobj=tar_stream(stream), mode="r|") as archive:
        for member in archive:
            content = ""
            if member.isfile():
                digest = hashlib.sha256()
                extracted = archive.extractfile(member)
                while extracted is not None and (chunk := extracted.read(1 << 20)):
                    digest.update(chunk)
                content = digest.hexdigest()
            kind = (
                "file"
                if member.isfile()
                else "dir"
                if member.isdir()
                else "link"
                if member.issym()
                else "other"
            )
            entries[member.name] = (
                kind,
                member.mode,
                member.uid,
                member.gid,
                int(member.mtime),
                content,
                member.linkname,
            )
    return entries


def diff_entries(first: dict[str, Entry], second: dict[str, Entry]) -> list[FileDifference]:
    names = ("type", "mode", "uid", "gid", "mtime", "content", "link")
    out = []
    for path in sorted(set(first) | set(second)):
        a, b = first.get(path), second.get(path)
        if a is None:
            out.append(FileDifference(path, "only in the rebuild"))
        elif b is None:
            out.append(FileDifference(path, "only in the first build"))
        elif a != b:
            parts = []
            for name, x, y in zip(names, a, b, strict=True):
                if x != y:
                    parts.append(name if name == "content" else f"{name} {x} vs {y}")
            out.append(FileDifference(path, ", ".join(parts)))
    return out
