"""Load and validate matrix.yaml into the model's frozen dataclasses (model.py), from YAML read with
positions (yamlpos.py), keeping line numbers for messages.

Validation here is about form (types, unknown keys, names that resolve). Whether a well-formed
matrix is safe to ship is policy.py's business.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from buildtool import refs
from buildtool.arch import Arch, ArchRule, InvalidArch
from buildtool.errors import ConfigError, Location, Problem, did_you_mean
from buildtool.model import (
    FLASH_ATTENTION_SHORTHAND,
    FLASH_ATTENTION_VERSIONS,
    IMAGE_KINDS,
    MODEL_SOURCES,
    NAME,
    SCHEMA_VERSION,
    SECTIONS,
    TIERS,
    Base,
    Combination,
    Gpu,
    Image,
    KernelSpec,
    Matrix,
    MatrixAxes,
    Model,
    Policy,
    Refusal,
    SmokeSettings,
    optional_keys,
    required_keys,
)
from buildtool.yamlpos import Node, parse_yaml

# --- typed reading ---------------------------------------------------------------------------

T = TypeVar("T")


class Reader:
    """Reads typed values out of Nodes; every failure names file, line and key."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def at(self, node: Node) -> Location:
        return Location(self.path, node.line)

    def fail(self, node: Node, message: str, hint: str | None = None) -> ConfigError:
        return ConfigError(Problem(message, self.at(node), hint=hint))

    def mapping(
        self, node: Node, what: str, required: Sequence[str], optional: Sequence[str]
    ) -> dict[str, Node]:
        if not isinstance(node.value, dict):
            raise self.fail(node, f"{what} must be a mapping, not {_kind(node.value)}")
        allowed = [*required, *optional]
        for key, child in node.value.items():
            if key not in allowed:
                hint = did_you_mean(key, allowed) or f"allowed keys: {', '.join(allowed)}"
                line = node.key_lines.get(key, child.line)  # the key's own line, not its value's
                raise ConfigError(
                    Problem(f"unknown key '{key}' in {what}", Location(self.path, line), hint=hint)
                )
        for key in required:
            if key not in node.value:
                raise self.fail(node, f"{what} is missing the required key '{key}'")
        return dict(node.value)

    def scalar(self, node: Node, kind: type[T], what: str) -> T:
        value = node.value
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if kind is str and isinstance(value, int | float) and not isinstance(value, bool):
            # "13.0" written unquoted is a float; accept it as the text the user wrote.
            raise self.fail(node, f'{what} must be a string; write it quoted: "{value}"')
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.fail(node, f"{what} must be {kind.__name__}, not {_kind(value)}")
        return value

    def optional(self, node: Node | None, kind: type[T], what: str) -> T | None:
        if node is None or node.value is None:
            return None
        return self.scalar(node, kind, what)

    def sequence(self, node: Node, what: str) -> list[Node]:
        if not isinstance(node.value, list):
            raise self.fail(node, f"{what} must be a list, not {_kind(node.value)}")
        return list(node.value)

    def strings(self, node: Node, what: str) -> tuple[str, ...]:
        return tuple(self.scalar(n, str, f"an entry of {what}") for n in self.sequence(node, what))

    def name(self, node: Node, what: str) -> str:
        value = self.scalar(node, str, what)
        if not NAME.match(value):
            raise self.fail(
                node,
                f"{what} '{value}' is not a valid name",
                "use lower-case letters, digits and '-' (no dots: buildx bake target names)",
            )
        return value

    def unique(
        self, items: Sequence[T], name_of: Callable[[T], str], line_of: Callable[[T], Location], what: str
    ) -> None:
        seen: dict[str, Location] = {}
        for item in items:
            name = name_of(item)
            if name in seen:
                raise ConfigError(
                    Problem(
                        f"duplicate {what} name '{name}' (first at {seen[name]})",
                        line_of(item),
                        hint="names must be unique",
                    )
                )
            seen[name] = line_of(item)


def _kind(value: object) -> str:
    return {
        dict: "a mapping",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        type(None): "empty",
    }.get(type(value), type(value).__name__)


# --- sections --------------------------------------------------------------------------------


def _bases(r: Reader, node: Node) -> tuple[Base, ...]:
    out = []
    for entry in r.sequence(node, "bases"):
        m = r.mapping(entry, "a base", required_keys("base"), optional_keys("base"))
        tier = r.scalar(m["tier"], int, "tier")
        if tier not in TIERS:
            raise r.fail(m["tier"], f"tier must be {' or '.join(map(str, TIERS))}, not {tier}")
        out.append(
            Base(
                name=r.name(m["name"], "base name"),
                ref=_reference(r, m["ref"], "ref"),
                tier=tier,
                cuda=r.optional(m.get("cuda"), str, "cuda"),
                cudnn=r.optional(m.get("cudnn"), int, "cudnn"),
                torch=r.optional(m.get("torch"), str, "torch"),
                python=r.scalar(m["python"], str, "python"),
                cuda_compat=bool(r.optional(m.get("cuda_compat"), bool, "cuda_compat")),
                built_on=r.optional(m.get("built_on"), str, "built_on"),
                location=r.at(entry),
                field_lines={k: v.line for k, v in m.items()},
            )
        )
    r.unique(out, lambda b: b.name, lambda b: b.location, "base")
    return tuple(out)


def _gpus(r: Reader, node: Node) -> tuple[Gpu, ...]:
    out = []
    for entry in r.sequence(node, "gpus"):
        m = r.mapping(entry, "a GPU", required_keys("gpu"), optional_keys("gpu"))
        arch = r.scalar(m["arch"], str, "arch")
        try:
            arch = Arch.parse(arch).sm  # one spelling: sm_<major><minor>[a|f]
        except InvalidArch as exc:
            raise r.fail(m["arch"], str(exc), "e.g. sm_90 (H100), sm_80 (A100), sm_100a") from None
        fa = r.optional(m.get("flash_attention"), int, "flash_attention")
        if fa is not None and fa not in FLASH_ATTENTION_VERSIONS:
            versions = ", ".join(map(str, FLASH_ATTENTION_VERSIONS))
            raise r.fail(m["flash_attention"], f"flash_attention must be {versions} or empty, not {fa}")
        out.append(
            Gpu(
                r.scalar(m["name"], str, "GPU name"),
                r.scalar(m["runpod_id"], str, "runpod_id"),
                arch,
                fa,
                r.at(entry),
            )
        )
    r.unique(out, lambda g: g.name, lambda g: g.location, "GPU")
    return tuple(out)


def _images(r: Reader, node: Node, root: Path) -> tuple[Image, ...]:
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
        if handler is not None and not (template / handler).is_file():
            raise r.fail(m["handler"], f"image '{name}': handler {template / handler} does not exist")
        out.append(
            Image(
                name=name,
                template=template,
                kind=kind,  # type: ignore[arg-type]
                version=r.scalar(m["version"], str, "version"),
                description=r.optional(m.get("description"), str, "description") or "",
                args=tuple(sorted(args)),
                handler=handler,
                model=_model(r, m["model"]) if "model" in m else None,
                smoke=_smoke(r, m["smoke"]) if "smoke" in m else None,
                needs_torch=r.optional(m.get("needs_torch"), bool, "needs_torch") is not False,
                kernels=_kernels(r, m["kernels"]) if "kernels" in m else (),
                location=r.at(entry),
            )
        )
    r.unique(out, lambda i: i.name, lambda i: i.location, "image")
    return tuple(out)


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
                function=r.optional(m.get("function"), str, "function") or "flash_attn_func",
                archs=r.strings(m["archs"], "archs") if "archs" in m else (),
            )
        )
    return tuple(out)


def _smoke(r: Reader, node: Node) -> SmokeSettings:
    import json

    m = r.mapping(node, "smoke", required_keys("smoke"), optional_keys("smoke"))
    raw = m["input"].value
    if not isinstance(raw, dict):
        raise r.fail(m["input"], "smoke.input must be a mapping (the job's input)")
    shape = tuple(
        r.scalar(n, int, "an entry of smoke.output_shape")
        for n in r.sequence(m["output_shape"], "smoke.output_shape")
    )
    return SmokeSettings(json.dumps(_plain(m["input"]), sort_keys=True), shape)


def _plain(node: Node) -> Any:
    if isinstance(node.value, dict):
        return {k: _plain(v) for k, v in node.value.items()}
    if isinstance(node.value, list):
        return [_plain(v) for v in node.value]
    return node.value


def _combinations(r: Reader, node: Node, what: str) -> tuple[Combination, ...]:
    out = []
    for entry in r.sequence(node, what):
        m = r.mapping(
            entry, f"an entry of matrix.{what}", required_keys("combination"), optional_keys("combination")
        )
        values = tuple((k, r.scalar(m[k], str, k)) for k in ("image", "base") if k in m)
        gpus = r.strings(m["gpus"], "gpus") if "gpus" in m else None
        if not values:
            raise r.fail(entry, f"an entry of matrix.{what} names neither image nor base")
        out.append(Combination(values, gpus, r.at(entry)))
    return tuple(out)


def _axes(r: Reader, node: Node) -> MatrixAxes:
    m = r.mapping(node, "matrix", required_keys("axes"), optional_keys("axes"))
    gpus_node = m.get("gpus")
    gpus: tuple[str, ...] | None = None
    if gpus_node is not None and gpus_node.value != "all":
        gpus = r.strings(gpus_node, "matrix.gpus")
    return MatrixAxes(
        image=r.strings(m["image"], "matrix.image"),
        base=r.strings(m["base"], "matrix.base"),
        gpus=gpus,
        include=_combinations(r, m["include"], "include") if "include" in m else (),
        exclude=_combinations(r, m["exclude"], "exclude") if "exclude" in m else (),
        location=r.at(node),
        gpus_location=r.at(gpus_node) if gpus_node is not None else None,
    )


def _refusals(r: Reader, node: Node, what: str, key: str) -> tuple[Refusal, ...]:
    out = []
    repositories = key == "repository"
    for entry in r.sequence(node, what):
        section = "refused repository" if repositories else "refused arch"
        m = r.mapping(entry, f"an entry of policy.{what}", required_keys(section), optional_keys(section))
        value = _reference(r, m[key], key) if repositories else _arch_rule(r, m[key])
        mirrors = (
            tuple(_reference(r, n, "mirrors") for n in r.sequence(m["mirrors"], "mirrors"))
            if "mirrors" in m
            else ()
        )
        out.append(Refusal(value, r.scalar(m["reason"], str, "reason"), r.at(entry), mirrors))
    return tuple(out)


def _arch_rule(r: Reader, node: Node) -> str:
    text = r.scalar(node, str, "arch")
    try:
        ArchRule.parse(text)
    except InvalidArch as exc:
        raise r.fail(node, str(exc), "e.g. sm_100 (one capability) or 10.x (a generation)") from None
    return text


def _reference(r: Reader, node: Node, what: str) -> str:
    """An image reference as written, after checking that it is one (refs.parse)."""
    text = r.scalar(node, str, what)
    try:
        refs.parse(text)
    except refs.InvalidReference as exc:
        raise r.fail(
            node, f"{what} {exc}", "write it as docker pull takes it, e.g. runpod/pytorch:<tag>"
        ) from None
    return text


def _policy(r: Reader, node: Node) -> Policy:
    if not isinstance(node.value, dict):
        raise r.fail(node, f"policy must be a mapping, not {_kind(node.value)}")
    fixed = {k: v for k, v in node.value.items() if k in SECTIONS["policy"]}
    m = r.mapping(
        Node(fixed, node.line, node.key_lines), "policy", required_keys("policy"), optional_keys("policy")
    )
    rule_options = tuple(
        (key, _plain(value), Location(r.path, node.key_lines.get(key, value.line)))
        for key, value in node.value.items()
        if key not in fixed
    )
    tiers = tuple(
        r.scalar(n, int, "an allowed tier") for n in r.sequence(m["allowed_tiers"], "allowed_tiers")
    )
    return Policy(
        allowed_tiers=tiers,
        tier3_registries=r.strings(m["tier3_registries"], "tier3_registries")
        if "tier3_registries" in m
        else ("ghcr.io",),
        refused_repositories=_refusals(r, m["refused_repositories"], "refused_repositories", "repository"),
        refused_archs=_refusals(r, m["refused_archs"], "refused_archs", "arch"),
        max_baked_model_gb=r.optional(m.get("max_baked_model_gb"), float, "max_baked_model_gb") or 10.0,
        model_loaders=r.strings(m["model_loaders"], "model_loaders") if "model_loaders" in m else (),
        rule_options=rule_options,
    )


def _check_names(r: Reader, matrix: Matrix) -> None:
    """Every name the matrix axes use must exist in its catalogue."""
    axes = matrix.axes
    catalogues = {"image": [i.name for i in matrix.images], "base": [b.name for b in matrix.bases]}
    gpu_names = [g.name for g in matrix.gpus]

    def need(name: str, known: list[str], what: str, where: Location) -> None:
        if name not in known:
            hint = did_you_mean(name, known) or f"known {what}s: {', '.join(known)}"
            raise ConfigError(Problem(f"unknown {what} '{name}'", where, hint=hint))

    for axis in ("image", "base"):
        for name in getattr(axes, axis):
            need(name, catalogues[axis], axis, axes.location)
    for gpu in axes.gpus or ():
        need(gpu, gpu_names, "GPU", axes.gpus_location or axes.location)
    for combo in (*axes.include, *axes.exclude):
        for key, value in combo.values:
            need(value, catalogues[key], key, combo.location)
        for gpu in combo.gpus or ():
            need(gpu, gpu_names, "GPU", combo.location)
    for base in matrix.bases:
        if base.built_on is not None:
            need(base.built_on, catalogues["base"], "base", base.where("built_on"))


def _registry(r: Reader, node: Node | None) -> str | None:
    value = r.optional(node, str, "registry")
    if value is None or node is None:
        return None
    from buildtool.naming import check_registry

    return check_registry(value, "registry", r.at(node))


def load_matrix(path: Path) -> Matrix:
    """Read and validate matrix.yaml. Raises ConfigError with file and line on bad input."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            Problem(f"cannot read the matrix: {exc.strerror}", Location(path), hint="pass --matrix PATH")
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(Problem("the matrix is not UTF-8 text", Location(path))) from None
    r = Reader(path)
    root = r.mapping(
        parse_yaml(text, path), "the matrix file", required_keys("matrix file"), optional_keys("matrix file")
    )
    version = r.scalar(root["version"], int, "version")
    if version != SCHEMA_VERSION:
        raise r.fail(
            root["version"],
            f"unsupported matrix version {version}",
            f"this buildtool reads version {SCHEMA_VERSION}",
        )
    matrix = Matrix(
        path=path,
        source_url=r.scalar(root["source"], str, "source"),
        registry=_registry(r, root.get("registry")),
        default_variant=r.optional(root.get("default_variant"), str, "default_variant"),
        bases=_bases(r, root["bases"]),
        gpus=_gpus(r, root["gpus"]),
        images=_images(r, root["images"], path.parent),
        axes=_axes(r, root["matrix"]),
        policy=_policy(r, root["policy"]),
    )
    _check_names(r, matrix)
    return matrix
