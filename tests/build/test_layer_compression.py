"""Layers compressed with zstd (BuildKit's compression=zstd; images on Docker Hub that use it) are
read as gzip ones are: their unpacked size (which sizes a deployment's container disk), the files
they hold, and the reproducibility check's file comparison."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
import zstandard
from conftest import docker_ok
from fakes import layout_image

from buildtool.build.oci import tar_stream, unpacked_size
from buildtool.build.reproduce import layer_entries

ZSTD_LAYER = "application/vnd.oci.image.layer.v1.tar+zstd"


def tar_of(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_a_zstd_layer_of_several_frames_is_measured_and_read_whole() -> None:
    layer = tar_of({"app/model.bin": b"w" * 300_000, "app/handler.py": b"print('hi')\n"})
    half = len(layer) // 2
    compressor = zstandard.ZstdCompressor()
    # Two frames, as a chunked writer makes them: the layer is read across both.
    packed = compressor.compress(layer[:half]) + compressor.compress(layer[half:])
    assert unpacked_size(io.BytesIO(packed), ZSTD_LAYER) == len(layer)
    assert set(layer_entries(io.BytesIO(packed))) == {"app/model.bin", "app/handler.py"}
    for data in (packed, gzip.compress(layer), layer):  # told by their first bytes
        assert tar_stream(io.BytesIO(data)).read() == layer
    assert unpacked_size(io.BytesIO(packed), "application/vnd.oci.image.layer.v1.tar+bzip2") is None


class Trickle(io.RawIOBase):
    """A network stream at its meanest: every read returns at most one byte."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        byte = self._data.read(1)
        buffer[: len(byte)] = byte
        return len(byte)


def test_a_layer_whose_first_read_is_short_is_still_told_by_its_magic() -> None:
    layer = tar_of({"app/model.bin": b"w" * 50_000})
    for packed in (gzip.compress(layer), zstandard.ZstdCompressor().compress(layer)):
        assert unpacked_size(Trickle(packed), ZSTD_LAYER) == len(layer)  # type: ignore[arg-type]
        assert tar_stream(Trickle(packed)).read() == layer  # type: ignore[arg-type]
    assert tar_stream(Trickle(layer)).read() == layer  # type: ignore[arg-type]
    assert tar_stream(io.BytesIO(b"")).read() == b""  # an empty layer is an empty tar stream


def export_layout(context: Path, destination: Path, compression: str) -> str:
    """The image `docker buildx build` exports as an OCI layout with this compression (every layer,
    the base's too: force-compression); its manifest's digest."""
    archive = destination.with_suffix(".tar")
    output = f"type=oci,dest={archive},compression={compression},force-compression=true,oci-mediatypes=true"
    subprocess.run(
        ["docker", "buildx", "build", "--provenance=false", "--output", output, str(context)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    destination.mkdir()
    with tarfile.open(archive) as tar:
        tar.extractall(destination, filter="data")
    (manifest,) = json.loads((destination / "index.json").read_text())["manifests"]
    return str(manifest["digest"])


@pytest.mark.container
def test_an_image_built_with_zstd_layers_reads_as_its_gzip_twin(tmp_path: Path) -> None:
    docker_ok()
    context = tmp_path / "context"
    context.mkdir()
    (context / "Dockerfile").write_text(
        "FROM python:3.11-slim\n"
        "RUN mkdir -p /app && head -c 200000 /dev/urandom > /app/weights.bin && echo ok > /app/ready.txt\n"
    )
    images = {}
    for compression in ("gzip", "zstd"):
        layout = tmp_path / compression
        digest = export_layout(context, layout, compression)
        images[compression] = layout_image(layout, digest, tmp_path / f"cache-{compression}")
    gz, zst = images["gzip"], images["zstd"]
    assert {layer.media_type for layer in zst.layers} == {ZSTD_LAYER}
    assert zst.diff_ids == gz.diff_ids  # the same tar streams, compressed two ways
    assert zst.unpacked_size is not None and zst.unpacked_size == gz.unpacked_size
    assert [zst.measured[x.digest] for x in zst.layers] == [gz.measured[x.digest] for x in gz.layers]
    assert (
        zst.files_matching("app/*")
        == gz.files_matching("app/*")
        == {
            "app/weights.bin": 200_000,
            "app/ready.txt": 3,
        }
    )
    # The diff_id is the sha256 of the tar stream read back: zstd decompression is whole and exact.
    top = zst.layers[-1]
    with (tmp_path / "zstd" / "blobs" / "sha256" / top.digest.removeprefix("sha256:")).open("rb") as blob:
        assert "sha256:" + hashlib.sha256(tar_stream(blob).read()).hexdigest() == zst.diff_ids[-1]
