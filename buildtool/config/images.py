"""The `images:` section of matrix.yaml: each image, its model, kernels and smoke settings."""

from __future__ import annotations

import json
import re
from pathlib import Path

from buildtool.config.keys import (
    IMAGE_KINDS,
    MODEL_SOURCES,
    OUTPUT_KINDS,
    SECRET_NAME_PATTERN,
    optional_keys,
    required_keys,
)
from buildtool.config.model import (
    FLASH_ATTENTION_SHORTHAND,
    Deploy,
    Image,
    KernelSpec,
    Model,
    SmokeSettings,
)
from buildtool.config.reader import Reader, plain
from buildtool.config.yamlpos import Node
from buildtool.errors import did_you_mean


def read_images(r: Reader, node: Node, root: Path) -> tuple[Image, ...]:
    out = []
    for entry in r.sequence(node, "images"):
        m = r.mapping(entry, "an image", required_keys("image"), optional_keys("image"))
        name = r.name(m["name"], "image name")
        kind = r.scalar(m["kind"], str, "kind")
        if kind not in IMAGE_KINDS:
            raise r.fail(
                m["kind"],
                f"unknown image kind '{kind}'",
                did_you_mean(kind, IMAGE_KINDS) or f"one of: {', '.join(IMAGE_KINDS)}",
            )
        template = root / r.scalar(m["template"], str, "template")
        _no_link(r, m["template"], root, template, "template")
        if not (template / "Dockerfile.j2").is_file():
            raise r.fail(
                m["template"],
                f"image '{name}': no Dockerfile.j2 in {template}",
                "create it, or point template at the directory that holds it",
            )
        args: list[tuple[str, str]] = []
        if "args" in m:
            arg_map = m["args"]
            if not isinstance(arg_map.value, dict):
                raise r.fail(arg_map, "args must be a mapping of build-arg name to value")
            for key, value in arg_map.value.items():
                args.append((key, r.scalar(value, str, f"args.{key}")))
        handler = r.optional(m.get("handler"), str, "handler")
        if kind == "serverless-worker" and handler is None:
            raise r.fail(
                entry,
                f"image '{name}' is a serverless-worker but names no handler",
                "add handler: handler.py",
            )
        if handler is not None:
            _no_link(r, m["handler"], root, template / handler, "handler")
        if handler is not None and not (template / handler).is_file():
            raise r.fail(m["handler"], f"image '{name}': handler {template / handler} does not exist")
        model = _model(r, m["model"]) if "model" in m else None
        smoke = _smoke(r, m["smoke"]) if "smoke" in m else None
        if smoke and smoke.model_dir and not (model and model.volume_path):
            raise r.fail(
                m["smoke"],
                f"image '{name}': smoke.model_dir is copied onto the model's volume, but the model "
                "has no volume_path",
                "add model.volume_path: /runpod-volume/models/<name>",
            )
        out.append(
            Image(
                name=name,
                template=template,
                kind=kind,  # type: ignore[arg-type]
                version=r.scalar(m["version"], str, "version"),
                description=r.optional(m.get("description"), str, "description") or "",
                args=tuple(sorted(args)),
                handler=handler,
                model=model,
                smoke=smoke,
                needs_torch=r.key(m, "image", "needs_torch"),
                kernels=_kernels(r, m["kernels"]) if "kernels" in m else (),
                secrets=_secrets(r, m["secrets"]) if "secrets" in m else (),
                deploy=_deploy(r, m["deploy"]) if "deploy" in m else None,
                torch=r.optional(m.get("torch"), str, "torch"),
                location=r.at(entry),
            )
        )
    r.unique(out, lambda i: i.name, lambda i: i.location, "image")
    return tuple(out)


def _no_link(r: Reader, node: Node, root: Path, path: Path, what: str) -> None:
    """A path of the matrix (its grammar keeps it relative, without '..') may not pass through a
    symbolic link: a link would take the build context, or the handler checked, from outside the
    repository, or from a file the commit does not hold."""
    current = root
    for part in path.relative_to(root).parts:
        current = current / part
        if current.is_symlink():
            raise r.fail(
                node,
                f"{what} {current.relative_to(root)} is a symbolic link (to {current.readlink()}): "
                "a build context is the commit's own files",
                "commit the directory or file itself in place of the link",
            )


def _model(r: Reader, node: Node) -> Model:
    m = r.mapping(node, "model", required_keys("model"), optional_keys("model"))
    source = r.scalar(m["source"], str, "model.source")
    if source not in MODEL_SOURCES:
        raise r.fail(m["source"], f"model.source must be 'baked' or 'volume', not '{source}'")
    volume_path = r.optional(m.get("volume_path"), str, "model.volume_path")
    if source == "volume" and not volume_path:
        raise r.fail(
            node,
            "model.source is 'volume' but no volume_path is given",
            "add volume_path: /runpod-volume/models/<name>",
        )
    return Model(
        r.scalar(m["name"], str, "model.name"),
        source,  # type: ignore[arg-type]
        r.scalar(m["size_gb"], float, "model.size_gb"),
        volume_path,
        r.at(node),
        r.optional(m.get("files"), str, "model.files"),
    )


def _kernels(r: Reader, node: Node) -> tuple[KernelSpec, ...]:
    out = []
    for entry in r.sequence(node, "kernels"):
        if entry.value == FLASH_ATTENTION_SHORTHAND:
            out.append(KernelSpec(FLASH_ATTENTION_SHORTHAND))
            continue
        if isinstance(entry.value, str):
            raise r.fail(
                entry,
                f"unknown kernel shorthand '{entry.value}'",
                f"'{FLASH_ATTENTION_SHORTHAND}', or a mapping with name, repo_id and revision",
            )
        m = r.mapping(entry, "a kernel", required_keys("kernel"), optional_keys("kernel"))
        out.append(
            KernelSpec(
                name=r.name(m["name"], "kernel name"),
                repo_id=r.scalar(m["repo_id"], str, "repo_id"),
                revision=r.scalar(m["revision"], str, "revision"),
                function=r.key(m, "kernel", "function"),
                archs=r.strings(m["archs"], "archs") if "archs" in m else (),
            )
        )
    return tuple(out)


def _smoke(r: Reader, node: Node) -> SmokeSettings:

    m = r.mapping(node, "smoke", required_keys("smoke"), optional_keys("smoke"))
    raw = m["input"].value
    if not isinstance(raw, dict):
        raise r.fail(m["input"], "smoke.input must be a mapping (the job's input)")
    shape = tuple(
        r.scalar(n, int, "an entry of smoke.output_shape")
        for n in (r.sequence(m["output_shape"], "smoke.output_shape") if "output_shape" in m else [])
    )
    kind = r.key(m, "smoke", "output")
    if kind not in OUTPUT_KINDS:
        raise r.fail(
            m["output"],
            f"unknown smoke.output '{kind}'",
            did_you_mean(kind, OUTPUT_KINDS) or f"one of: {', '.join(OUTPUT_KINDS)}",
        )
    if kind == "embeddings" and not shape:
        raise r.fail(node, "smoke.output embeddings needs output_shape", "e.g. output_shape: [2, 384]")
    model_dir = r.optional(m.get("model_dir"), str, "smoke.model_dir")
    return SmokeSettings(
        json.dumps(plain(m["input"]), sort_keys=True),
        shape,
        kind,
        model_dir,
        requires_gpu=r.optional(m.get("requires_gpu"), bool, "smoke.requires_gpu") is True,
        imports=r.strings(m["imports"], "smoke.imports") if "imports" in m else (),
    )


def _secrets(r: Reader, node: Node) -> tuple[str, ...]:
    names = r.strings(node, "secrets")
    for name, item in zip(names, r.sequence(node, "secrets"), strict=True):
        if not re.fullmatch(SECRET_NAME_PATTERN, name):
            raise r.fail(item, f"secret name '{name}' is not an upper-case name", "e.g. HF_TOKEN")
    return names


PORT = re.compile(r"^[0-9]{1,5}/(http|tcp|udp)$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _deploy(r: Reader, node: Node) -> Deploy:
    m = r.mapping(node, "deploy", required_keys("deploy"), optional_keys("deploy"))
    workers_min, workers_max = r.key(m, "deploy", "workers_min"), r.key(m, "deploy", "workers_max")
    if workers_min > workers_max:
        raise r.fail(node, f"workers_min ({workers_min}) is above workers_max ({workers_max})")
    ports = r.strings(m["ports"], "ports") if "ports" in m else ()
    for port, item in zip(ports, r.sequence(m["ports"], "ports") if ports else [], strict=True):
        if not PORT.match(port):
            raise r.fail(item, f"port '{port}' is not port/protocol", "e.g. 8888/http or 22/tcp")
    env: list[tuple[str, str]] = []
    if "env" in m:
        mapping = r.mapping(m["env"], "deploy.env", (), list(m["env"].value or {}))
        for key, value in mapping.items():
            if not ENV_NAME.match(key):
                raise r.fail(value, f"'{key}' is not an environment variable name")
            env.append((key, r.scalar(value, str, f"deploy.env.{key}")))
    return Deploy(
        r.key(m, "deploy", "container_disk_gb"),
        r.key(m, "deploy", "download_headroom_gb"),
        r.at(node),
        workers_min=workers_min,
        workers_max=workers_max,
        idle_timeout_s=r.key(m, "deploy", "idle_timeout_s"),
        queue_delay_s=r.key(m, "deploy", "queue_delay_s"),
        gpu_count=r.key(m, "deploy", "gpu_count"),
        network_volume=r.optional(m.get("network_volume"), str, "network_volume"),
        ports=ports,
        env=tuple(sorted(env)),
        env_location=r.at(m["env"]) if "env" in m else None,
    )
