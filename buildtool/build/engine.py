"""The container engine behind a Protocol: BuildKit through `docker buildx bake`, and the docker CLI.

Another engine (podman, a remote buildx builder) implements the same methods.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from buildtool import refs
from buildtool.build import step_failure
from buildtool.errors import EngineError, Problem


@dataclass(frozen=True)
class Step:
    """One BuildKit vertex: a Dockerfile step or an internal one (load context, export cache)."""

    name: str
    cached: bool
    completed: bool
    error: str | None

    @property
    def in_dockerfile(self) -> bool:
        """'[2/5] RUN ...' and the like: a step that builds a layer. Not FROM (a base resolved, not
        built: never reported cached), nor BuildKit's '[internal] ...' or export steps."""
        if not self.name.startswith("[") or self.name.startswith("[internal]"):
            return False
        instruction = self.name.split("] ", 1)[-1].split(" ", 1)[0].upper()
        return instruction != "FROM"


@dataclass(frozen=True)
class BakeOutcome:
    ok: bool
    metadata: Mapping[str, object]  # the target's entry of --metadata-file
    steps: tuple[Step, ...]
    error: str | None  # BuildKit's own words for the failure

    @property
    def digest(self) -> str | None:
        value = self.metadata.get("containerimage.digest")
        return value if isinstance(value, str) else None

    @property
    def cache_export_error(self) -> str | None:
        """BuildKit's words when the registry cache export failed, which cache-to's ignore-error=true
        lets the build survive (two builds exporting shared layers at once can fail it)."""
        return next((s.error for s in self.steps if s.name.startswith("exporting cache") and s.error), None)

    @property
    def dockerfile_steps(self) -> tuple[Step, ...]:
        return tuple(s for s in self.steps if s.in_dockerfile)

    def base_digest(self, ref: str) -> str | None:
        """The digest BuildKit resolved `ref` to: its step reads '[1/5] FROM docker.io/<ref>@sha256:...'."""
        wanted = refs.try_parse(ref)
        for step in self.steps:
            _, _, source = step.name.partition("] FROM ")
            named = refs.try_parse(source.strip())
            if wanted and named and named.digest and named.same_image(wanted):
                return named.digest
        return None


@dataclass(frozen=True)
class StoredConfig:
    """An image's config as the engine's store holds it, before any push: what the rules over a
    config read (ENV, labels, the build args each RUN recorded)."""

    env: tuple[str, ...]
    labels: Mapping[str, str]
    history: tuple[Mapping[str, object], ...]  # {"created_by": ...} per step, as the config has it


_PUSHED_DIGEST = re.compile(r"digest: (sha256:[0-9a-f]{64})")


@dataclass(frozen=True)
class Pushed:
    digest: str | None  # the manifest's digest, as the registry took it
    error: str | None = None  # the engine's words, when the push failed
    sent: int = 0  # bytes of the layers it uploaded (not those the registry had)


@dataclass
class Progress:
    """What a build has done so far, for the progress display."""

    steps_done: int = 0
    steps_total: int = 0
    cached: int = 0
    current: str = ""


class Engine(Protocol):
    def local_image_digest(self, ref: str) -> str | None:
        """The digest of `ref` in the engine's image store, or None if it is not there."""

    def pull(self, ref: str) -> str | None:
        """Pull `ref`; None on success, else the engine's error text."""

    def image_layers(self, ref: str) -> tuple[str, ...] | None:
        """The layer diff ids of `ref` in the engine's image store (its rootfs), or None."""

    def image_config(self, ref: str) -> StoredConfig | None:
        """What the engine's image store holds of `ref`'s config (None: no such image)."""

    def push(self, ref: str, on_progress: Callable[[int, int], None] | None = None) -> Pushed:
        """Push `ref` from the engine's image store: only the layers the registry lacks go, with
        (bytes sent, bytes in all) told as they go."""

    def bake(
        self,
        bake_file: Path,
        target: str,
        overrides: Mapping[str, str],
        log: Path,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> BakeOutcome:
        """Build one bake target to the output its bake file names (BuildKit pushing it), or to
        `overrides`' output."""


class BuildxEngine:
    """docker + buildx CLI. The docker driver with the containerd image store resolves bases from the
    engine's store, exports registry caches and pushes images (a docker-container or remote builder
    does the same)."""

    def __init__(self, docker: str = "docker") -> None:
        if shutil.which(docker) is None:
            raise EngineError(
                Problem(
                    f"no '{docker}' command on PATH: building needs the Docker CLI with buildx",
                    hint="install Docker (or run ../shared/ci/engine.sh on the CI machines)",
                )
            )
        self.docker = docker
        self._client: Any = None  # docker SDK client, made on first use

    def _run(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.docker, *args], capture_output=True, text=True, timeout=timeout, check=False
        )

    def local_image_digest(self, ref: str) -> str | None:
        # The Engine API over the socket: half the time of a `docker image inspect` process.
        import docker
        import docker.errors

        if self._client is None:
            self._client = docker.from_env()
        try:
            image = self._client.images.get(ref)
        except docker.errors.ImageNotFound:
            return None
        repo_digests = image.attrs.get("RepoDigests") or []
        # The registry's digest when it came from one; else the local image's own.
        pinned = refs.try_parse(str(repo_digests[0])) if repo_digests else None
        return pinned.digest if pinned and pinned.digest else str(image.id)

    def image_layers(self, ref: str) -> tuple[str, ...] | None:
        import docker
        import docker.errors

        if self._client is None:
            self._client = docker.from_env()
        try:
            layers = self._client.images.get(ref).attrs.get("RootFS", {}).get("Layers")
        except docker.errors.ImageNotFound:
            return None
        return tuple(str(layer) for layer in layers) if isinstance(layers, list) else None

    def image_config(self, ref: str) -> StoredConfig | None:
        import docker
        import docker.errors

        if self._client is None:
            self._client = docker.from_env()
        try:
            image = self._client.images.get(ref)
            history = self._client.api.history(ref)
        except docker.errors.ImageNotFound:
            return None
        config = image.attrs.get("Config") or {}
        # The API lists the newest step first, and names a step's instruction CreatedBy.
        steps = tuple({"created_by": str(h.get("CreatedBy", ""))} for h in reversed(history or []))
        return StoredConfig(tuple(config.get("Env") or ()), dict(config.get("Labels") or {}), steps)

    def push(self, ref: str, on_progress: Callable[[int, int], None] | None = None) -> Pushed:
        import docker
        import docker.errors

        if self._client is None:
            self._client = docker.from_env()
        repository, tag = ref.rsplit(":", 1)
        layers: dict[str, tuple[int, int]] = {}
        digest = None
        try:
            # docker's own credentials (config.json, credsStore, credHelpers) go with the request.
            for event in self._client.api.push(repository, tag, stream=True, decode=True):
                if "error" in event:
                    said = (event.get("errorDetail") or {}).get("message") or event["error"]
                    return Pushed(None, str(said))
                detail = event.get("progressDetail") or {}
                if event.get("status") == "Pushing" and detail.get("total"):
                    layers[str(event.get("id"))] = (int(detail.get("current") or 0), int(detail["total"]))
                    if on_progress:
                        on_progress(sum(d for d, _ in layers.values()), sum(s for _, s in layers.values()))
                # The digest: in `aux` (the classic store), or in the last status line (the
                # containerd store: "<tag>: digest: sha256:... size: N").
                said = _PUSHED_DIGEST.search(str(event.get("status", "")))
                digest = (event.get("aux") or {}).get("Digest") or (said.group(1) if said else digest)
        except docker.errors.APIError as exc:
            return Pushed(None, str(exc.explanation or exc))
        sent = sum(total for _, total in layers.values())
        return Pushed(
            str(digest) if digest else None, None if digest else "the engine reported no digest", sent
        )

    def pull(self, ref: str) -> str | None:
        done = self._run("pull", "--quiet", ref)
        return None if done.returncode == 0 else _last_error(done.stderr)

    def bake(
        self,
        bake_file: Path,
        target: str,
        overrides: Mapping[str, str],
        log: Path,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> BakeOutcome:
        # Inside the rendering the bake file's link resolves to (build_dir.py): contexts are its own
        # directories, whatever render runs later.
        bake_file = bake_file.resolve()
        metadata_file = log.with_suffix(".metadata.json")
        metadata_file.unlink(missing_ok=True)
        command = [
            self.docker,
            "buildx",
            "bake",
            "--file",
            bake_file.name,
            "--progress",
            "rawjson",
            "--metadata-file",
            str(metadata_file.resolve()),
        ]
        for key, value in sorted(overrides.items()):
            command += ["--set", f"{target}.{key}={value}"]
        command.append(target)
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("w", encoding="utf-8") as log_file:
            process = subprocess.Popen(
                command, cwd=bake_file.parent, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
            )
            assert process.stderr is not None
            tracker = _Tracker(log_file, on_progress)
            reader = threading.Thread(target=tracker.consume, args=(process.stderr,), daemon=True)
            reader.start()
            code = process.wait()
            reader.join()
        metadata: dict[str, object] = {}
        if metadata_file.is_file():
            metadata = json.loads(metadata_file.read_text() or "{}").get(target, {})
        steps = tracker.steps()
        error = (
            None if code == 0 else (tracker.failure() or _last_error(tracker.tail) or f"buildx exited {code}")
        )
        return BakeOutcome(code == 0, metadata, steps, error)


# BuildKit's words for a failed RUN quote the whole command line, the templates' reproducible shell
# (macros.j2) included: "/bin/sh -c touch /.buildtool-step && ... buildtool-run <the step>".
_REPRODUCIBLE_SHELL = re.compile(r'/bin/sh -c touch /\.buildtool-step .*? buildtool-run (?=[^"]*")')


def _without_shell(error: str) -> str:
    """`error` with the reproducible shell's own text left out: the step as the template wrote it."""
    return _REPRODUCIBLE_SHELL.sub("/bin/sh -c ", error)


def _last_error(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(("ERROR", "error"))]
    return (errors[-1] if errors else lines[-1] if lines else "").removeprefix("ERROR: ")


def json_objects(stream: IO[str]) -> Iterator[object]:
    """The JSON objects of `--progress rawjson` (pretty-printed, each opening with '{' and closing
    with '}' at column 0); any other line (buildx's final 'ERROR: ...') comes back as a string."""
    buffer: list[str] = []
    for line in stream:
        if not buffer and not line.startswith("{"):
            if line.strip():
                yield line.rstrip("\n")
            continue
        buffer.append(line)
        if line.rstrip() == "}":
            try:
                yield json.loads("".join(buffer))
            except json.JSONDecodeError:
                continue  # a '}' inside a value: keep reading
            buffer = []


STEP_LINES_KEPT = 200  # of each step's output, for the failure's explanation


@dataclass
class _Tracker:
    """Turns rawjson progress into a readable log, step counts and the failing step's error."""

    log: IO[str]
    on_progress: Callable[[Progress], None] | None
    vertexes: dict[str, dict[str, object]] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    tail: str = ""
    output: dict[str, deque[str]] = field(default_factory=dict)  # each vertex's last lines
    failed_vertex: str | None = None

    def consume(self, stream: IO[str]) -> None:
        for obj in json_objects(stream):
            if isinstance(obj, str):
                self.tail += obj + "\n"
                self.log.write(obj + "\n")
                continue
            if isinstance(obj, dict):
                self._status(obj)
        self.log.flush()

    def _status(self, status: dict[str, object]) -> None:
        for vertex in status.get("vertexes") or []:  # type: ignore[attr-defined]
            digest = vertex["digest"]
            previous = self.vertexes.get(digest, {})
            self.vertexes[digest] = {**previous, **vertex}
            self.names[digest] = vertex.get("name", "")
            if vertex.get("completed") and not previous.get("completed"):
                mark = (
                    "CACHED"
                    if vertex.get("cached")
                    else ("ERROR " + vertex["error"] if vertex.get("error") else "DONE")
                )
                self.log.write(f"#{self.names[digest]} {mark}\n")
            # A step cancelled because something else failed is not the cause: buildx's last words are.
            cancelled = "context canceled" in str(vertex.get("error"))
            if (
                vertex.get("error")
                and self.error is None
                and vertex.get("name", "").startswith("[")
                and not cancelled
            ):
                self.error = f"step '{vertex['name']}' failed: {_without_shell(vertex['error'])}"
                self.failed_vertex = digest
        for entry in status.get("logs") or []:  # type: ignore[attr-defined]
            text = base64.b64decode(entry.get("data", "")).decode("utf-8", "replace")
            name = self.names.get(entry.get("vertex", ""), "")
            kept = self.output.setdefault(entry.get("vertex", ""), deque(maxlen=STEP_LINES_KEPT))
            for line in text.splitlines():
                self.log.write(f"{name}: {line}\n")
                self.tail = (self.tail + line + "\n")[-4000:]
                kept.append(line)
        if self.on_progress:
            mine = [step for step in self.steps() if step.in_dockerfile]
            running = [step.name for step in self.steps() if not step.completed]
            self.on_progress(
                Progress(
                    sum(step.completed for step in mine),
                    len(mine),
                    sum(step.cached for step in mine),
                    running[0] if running else "",
                )
            )

    def failure(self) -> str | None:
        """The failing step and, where its output says, why (pip's or lockcheck's words)."""
        if self.error is None:
            return None
        lines = list(self.output.get(self.failed_vertex or "", ()))
        detail = step_failure.explain(lines)
        return f"{self.error}: {detail}" if detail else self.error

    def steps(self) -> tuple[Step, ...]:
        return tuple(
            Step(str(v.get("name", "")), bool(v.get("cached")), bool(v.get("completed")), v.get("error"))  # type: ignore[arg-type]
            for v in self.vertexes.values()
        )
