"""The smoke stage: run the smoke suite (smoke/, copied into every image) inside each built image.

Reads build/manifest.json (the build stage's output), starts each image's immutable tag with
testcontainers (GPU device requests when this host has NVIDIA GPUs, the CPU otherwise), runs
`python -m smoke`, copies its JSON and JUnit results out to build/smoke/, and stamps the JSON with
the image's digest, so that a release can tell which digest passed.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tarfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from buildtool import refs
from buildtool.errors import ConfigError, Location, Problem, SelectionError
from buildtool.files import write_atomically
from smoke.selection import KERNEL_GROUPS, Selection, catalogue

RESULTS_IN_CONTAINER = "/tmp/smoke-results"
SMOKE_PYTHONPATH = "/opt/smoke"
CONTAINER_TIMEOUT = 1800.0  # seconds one image's suite may run
BUDGET_OVERRUN = 300.0  # past a --budget: checks in progress, a benchmark process's last shape
RUNPOD_VOLUME = "/runpod-volume"  # where RunPod mounts a serverless worker's network volume
# What the build measured of each image, stamped into its results for the report's pull-time table.
SIZE_KEYS = ("compressed_size", "unpacked_size", "layers", "base_layers", "above_base_size")


@dataclass(frozen=True)
class BuiltImage:
    variant: str
    tag: str  # the immutable tag
    digest: str
    sizes: tuple[tuple[str, int | None], ...] = ()  # what the build measured: compressed_size, layers, ...
    revision: str | None = None  # the commit it was built from (build/manifest.json)

    @property
    def reference(self) -> str:
        """What runs: the repository at the built digest, never a tag that could have moved (the
        engine pulls it when it does not hold it)."""
        return str(refs.parse(self.tag).by_digest(self.digest))


@dataclass(frozen=True)
class SmokeOutcome:
    variant: str
    image: BuiltImage
    passed: bool
    counts: dict[str, int]
    failed_checks: tuple[str, ...]
    json_path: Path | None
    xml_path: Path | None
    error: str | None = None  # the suite did not run to the end (crash, timeout)


def built_images(build_dir: Path, select: tuple[str, ...] = ()) -> list[BuiltImage]:
    path = build_dir / "manifest.json"
    if not path.is_file():
        raise ConfigError(Problem("no build/manifest.json", Location(path), hint="run buildtool build first"))
    manifest = json.loads(path.read_text())
    import fnmatch

    images = [
        BuiltImage(
            name,
            entry["tags"]["immutable"],
            entry["digest"],
            tuple((k, entry.get(k)) for k in SIZE_KEYS),
            manifest.get("revision"),
        )
        for name, entry in sorted(manifest["variants"].items())
        if not select or any(fnmatch.fnmatchcase(name, p) for p in select)
    ]
    if not images:
        raise ConfigError(
            Problem(
                "no built variant to smoke-test" + (f" matches {select}" if select else ""),
                Location(path),
                hint="run buildtool build for it first",
            )
        )
    return images


class VolumeError(Exception):
    """The smoke model could not be copied onto its volume."""


def model_volume(image: BuiltImage) -> str | None:
    """A Docker volume, as RunPod's network volume would be, holding the image's smoke model
    (SMOKE_MODEL_DIR) at the model's volume path (SMOKE_MODEL_VOLUME) with the `.models_provisioned`
    sentinel, so the worker reuses it; None for an image that loads no model from a volume."""
    import docker
    import docker.errors

    client = docker.from_env()
    try:
        attrs = client.images.get(image.reference).attrs
    except docker.errors.ImageNotFound:
        attrs = client.images.pull(image.reference).attrs
    env = dict(str(item).partition("=")[::2] for item in (attrs.get("Config") or {}).get("Env") or ())
    source, target = env.get("SMOKE_MODEL_DIR"), env.get("SMOKE_MODEL_VOLUME")
    if not source or not target:
        return None
    name = f"smoke-{image.variant}-{uuid.uuid4().hex[:8]}"
    client.volumes.create(name, labels={"org.runpod-images.role": "smoke"})
    fill = 'mkdir -p "$1" && cp -a "$2"/. "$1"/ && touch "$1/.models_provisioned"'
    try:
        client.containers.run(
            image.reference,
            ["sh", "-c", fill, "sh", target, source],
            entrypoint=[],
            volumes={name: {"bind": RUNPOD_VOLUME, "mode": "rw"}},
            remove=True,
        )
    except docker.errors.DockerException as exc:
        _remove_volume(name)
        raise VolumeError(f"cannot fill the model volume of {image.reference}: {exc}") from None
    return name


def _remove_volume(name: str) -> None:
    import docker
    import docker.errors

    with contextlib.suppress(docker.errors.DockerException):  # gone already
        docker.from_env().volumes.get(name).remove(force=True)


def host_has_gpu() -> bool:
    return Path("/dev/nvidiactl").exists() or shutil.which("nvidia-smi") is not None


def run_in_image(
    image: BuiltImage,
    out_dir: Path,
    *,
    gpu: bool,
    timeout: float = CONTAINER_TIMEOUT,
    extra_args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> SmokeOutcome:
    # This runner removes its containers itself (stop() below), so testcontainers' reaper (Ryuk),
    # an image of its own to pull, is not needed; a user's own setting wins.
    os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
    import docker.errors
    import docker.types
    from testcontainers.core.container import DockerContainer

    command = ["python3", "-m", "smoke", "--out", RESULTS_IN_CONTAINER, *extra_args]
    container = (
        DockerContainer(image.reference).with_command(command).with_env("PYTHONPATH", SMOKE_PYTHONPATH)
    )
    for key, value in (env or {}).items():
        container = container.with_env(key, value)
    try:
        volume = model_volume(image)
    except VolumeError as exc:
        return SmokeOutcome(image.variant, image, False, {}, (), None, None, str(exc))
    except docker.errors.DockerException as exc:  # the image itself: not there, not pullable
        return SmokeOutcome(
            image.variant, image, False, {}, (), None, None, f"cannot start {image.reference}: {exc}"
        )
    if volume is not None:
        container = container.with_volume_mapping(volume, RUNPOD_VOLUME, "rw")
    kwargs: dict[str, Any] = {"labels": {"org.runpod-images.role": "smoke"}}
    if gpu:
        kwargs["device_requests"] = [docker.types.DeviceRequest(count=-1, capabilities=[["gpu"]])]
    container = container.with_kwargs(**kwargs)
    try:
        container.start()
    except docker.errors.DockerException as exc:
        return SmokeOutcome(
            image.variant, image, False, {}, (), None, None, f"cannot start {image.reference}: {exc}"
        )
    try:
        wrapped = container.get_wrapped_container()
        try:
            status = wrapped.wait(timeout=timeout)
        except Exception as exc:  # requests' ReadTimeout, or the engine going away
            return SmokeOutcome(image.variant, image, False, {}, (), None, None, f"did not finish: {exc}")
        logs = wrapped.logs().decode("utf-8", "replace")
        try:
            stream, _ = wrapped.get_archive(RESULTS_IN_CONTAINER)
        except Exception:
            tail = "\n".join(logs.strip().splitlines()[-15:])
            return SmokeOutcome(
                image.variant,
                image,
                False,
                {},
                (),
                None,
                None,
                f"the suite wrote no results (exit {status.get('StatusCode')}):\n{tail}",
            )
        return _collect(image, stream, out_dir)
    finally:
        container.stop()
        if volume is not None:
            _remove_volume(volume)


def _collect(image: BuiltImage, stream: Any, out_dir: Path) -> SmokeOutcome:
    out_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as archive:
        for member in archive.getmembers():
            extracted = archive.extractfile(member) if member.isfile() else None
            if extracted is not None:
                files[Path(member.name).name] = extracted.read()
    result_json = next((n for n in files if n.endswith(".json")), None)
    result_xml = next((n for n in files if n.endswith(".xml")), None)
    if result_json is None or result_xml is None:
        return SmokeOutcome(image.variant, image, False, {}, (), None, None, "the suite wrote no results")
    document = json.loads(files[result_json])
    document["image"] = {"tag": image.tag, "digest": image.digest, **dict(image.sizes)}
    if image.revision:
        document["image"]["revision"] = image.revision
    json_path, xml_path = out_dir / f"{image.variant}.json", out_dir / f"{image.variant}.xml"
    write_atomically(json_path, json.dumps(document, indent=2, sort_keys=True) + "\n")
    write_atomically(xml_path, files[result_xml].decode())
    failed = tuple(c["name"] for c in document["checks"] if c["status"] == "fail")
    return SmokeOutcome(
        image.variant, image, bool(document["passed"]), document["counts"], failed, json_path, xml_path
    )


def smoke(
    build_dir: Path,
    select: tuple[str, ...] = (),
    *,
    quick: bool = False,
    bench: bool = False,
    only: tuple[str, ...] = (),
    budget: float | None = None,
    on_start: Callable[[BuiltImage], None] = lambda _: None,
) -> list[SmokeOutcome]:
    """`only`: patterns for python -m smoke --only, checked here first, before any container starts
    (the kernels' names are each image's own: any `*.kernel.<name>` is let through). `budget`:
    python -m smoke --budget, per image; the container may then run that long, and a while more."""
    problems = Selection(only).unmatched(catalogue(bench=bench), KERNEL_GROUPS)
    if problems:
        raise SelectionError([Problem(what, hint=fix) for what, fix in problems])
    gpu = host_has_gpu()
    extra_args = (("--quick",) if quick else ()) + (("--bench",) if bench else ())
    extra_args += tuple(arg for pattern in only for arg in ("--only", pattern))
    timeout = CONTAINER_TIMEOUT
    if budget is not None:
        extra_args += ("--budget", f"{budget:g}")
        timeout = max(CONTAINER_TIMEOUT, budget + BUDGET_OVERRUN)
    outcomes = []
    for image in built_images(build_dir, select):
        on_start(image)
        outcomes.append(
            run_in_image(image, build_dir / "smoke", gpu=gpu, timeout=timeout, extra_args=extra_args)
        )
    return outcomes
