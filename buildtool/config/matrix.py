"""Load and validate matrix.yaml into the model's frozen dataclasses (model.py), from YAML read with
positions (yamlpos.py), keeping line numbers for messages.

Validation here is about form (types, unknown keys, names that resolve). Whether a well-formed
matrix is safe to ship is the policy package's business. Typed reading: reader.py; the images
section: images.py.
"""

from __future__ import annotations

from pathlib import Path

from buildtool.arch import Arch, InvalidArch
from buildtool.config.images import read_images
from buildtool.config.keys import (
    CACHE_MANIFESTS,
    FLASH_ATTENTION_VERSIONS,
    SCHEMA_VERSION,
    SECTIONS,
    TIERS,
    default,
    optional_keys,
    required_keys,
)
from buildtool.config.model import (
    Base,
    Combination,
    Gpu,
    Matrix,
    MatrixAxes,
    Policy,
    Refusal,
)
from buildtool.config.reader import Reader, kind_of, plain, read_arch_rule, read_reference
from buildtool.config.text import check_text
from buildtool.config.yamlpos import Node, parse_yaml
from buildtool.errors import ConfigError, Location, Problem, did_you_mean

# --- typed reading ---------------------------------------------------------------------------


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
                ref=read_reference(r, m["ref"], "ref"),
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
        value = read_reference(r, m[key], key) if repositories else read_arch_rule(r, m[key])
        mirrors = (
            tuple(read_reference(r, n, "mirrors") for n in r.sequence(m["mirrors"], "mirrors"))
            if "mirrors" in m
            else ()
        )
        out.append(Refusal(value, r.scalar(m["reason"], str, "reason"), r.at(entry), mirrors))
    return tuple(out)


def _policy(r: Reader, node: Node) -> Policy:
    if not isinstance(node.value, dict):
        raise r.fail(node, f"policy must be a mapping, not {kind_of(node.value)}")
    fixed = {k: v for k, v in node.value.items() if k in SECTIONS["policy"]}
    m = r.mapping(
        Node(fixed, node.line, node.key_lines), "policy", required_keys("policy"), optional_keys("policy")
    )
    rule_options = tuple(
        (key, plain(value), Location(r.path, node.key_lines.get(key, value.line)))
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
        else default("policy", "tier3_registries"),
        refused_repositories=_refusals(r, m["refused_repositories"], "refused_repositories", "repository"),
        refused_archs=_refusals(r, m["refused_archs"], "refused_archs", "arch"),
        max_baked_model_gb=r.key(m, "policy", "max_baked_model_gb"),
        model_loaders=r.strings(m["model_loaders"], "model_loaders") if "model_loaders" in m else (),
        model_servers=r.strings(m["model_servers"], "model_servers") if "model_servers" in m else (),
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


def _cache_manifest(r: Reader, node: Node | None) -> str:
    value = r.optional(node, str, "cache_manifest")
    if value is None or node is None:
        return "auto"
    if value not in CACHE_MANIFESTS:
        raise r.fail(
            node,
            f"unknown cache_manifest '{value}'",
            did_you_mean(value, CACHE_MANIFESTS)
            or "one of: auto (by the registry's host), index (BuildKit's default), image-manifest (an OCI "
            "image manifest, for a registry that refuses the index with 400)",
        )
    return value


def load_matrix(path: Path, text: str | None = None) -> Matrix:
    """Read and validate matrix.yaml (`text`: its content at another commit, read as if it were
    `path`). Raises ConfigError with file and line on bad input."""
    try:
        text = path.read_text(encoding="utf-8") if text is None else text
    except OSError as exc:
        raise ConfigError(
            Problem(f"cannot read the matrix: {exc.strerror}", Location(path), hint="pass --matrix PATH")
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(Problem("the matrix is not UTF-8 text", Location(path))) from None
    r = Reader(path)
    document = parse_yaml(text, path)
    check_text(document, path)
    root = r.mapping(document, "the matrix file", required_keys("matrix file"), optional_keys("matrix file"))
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
        images=read_images(r, root["images"], path.parent),
        axes=_axes(r, root["matrix"]),
        policy=_policy(r, root["policy"]),
        cache_manifest=_cache_manifest(r, root.get("cache_manifest")),
    )
    _check_names(r, matrix)
    return matrix
