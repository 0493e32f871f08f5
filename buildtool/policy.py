"""Rules that refuse what breaks in production. Each rule is a function returning Findings.

Rules over the catalogue and the plan run before rendering (check_plan); rules over rendered
Dockerfiles run on the rendered text before anything is written (check_dockerfile).
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from dockerfile_parse import DockerfileParser
from packaging.version import InvalidVersion, Version

from buildtool import deplock, facts, handlers, refs
from buildtool.arch import Arch, ArchRule
from buildtool.errors import Location, Problem, did_you_mean
from buildtool.model import Base, Gpu, Image, Matrix, Policy, Refusal
from buildtool.plan import Plan, Variant

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Finding:
    rule: str
    severity: Severity
    problem: Problem


@dataclass(frozen=True)
class RefusedGpu:
    gpu: Gpu
    reason: str


@dataclass(frozen=True)
class CheckedVariant:
    """A variant that passed policy, with the GPU targets it is accepted for."""

    variant: Variant
    targets: tuple[Gpu, ...]
    refused: tuple[RefusedGpu, ...]
    torch_build: facts.TorchBuild | None  # None: the image uses no torch

    @property
    def name(self) -> str:
        return self.variant.name

    @property
    def flash_attention(self) -> tuple[int, ...]:
        return tuple(sorted({g.flash_attention for g in self.targets if g.flash_attention}))

    @property
    def archs(self) -> tuple[str, ...]:
        return tuple(sorted({g.arch for g in self.targets}, key=Arch.parse))


@dataclass(frozen=True)
class CheckedPlan:
    plan: Plan
    variants: tuple[CheckedVariant, ...]
    findings: tuple[Finding, ...]

    @property
    def errors(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity == "error")

    @property
    def warnings(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity == "warning")


def _error(
    rule: str, message: str, where: Location | None, hint: str | None = None, variant: str | None = None
) -> Finding:
    return Finding(rule, "error", Problem(message, where, variant, hint))


# --- catalogue rules -------------------------------------------------------------------------


def refusal_for(image: refs.ImageRef, policy: Policy) -> Refusal | None:
    """The refused repository `image` is, under any spelling: registry aliases, library/, case of
    the host, tag or digest, and the mirrors the policy names."""
    for refusal in policy.refused_repositories:
        names = {refs.parse(r).name for r in (refusal.what, *refusal.mirrors)}
        if image.name in names:
            return refusal
    return None


def check_refused_repository(base: Base, policy: Policy) -> list[Finding]:
    refusal = refusal_for(base.image, policy)
    if refusal is not None:
        return [
            _error(
                "refused-repository",
                f"base '{base.name}' uses {base.ref}: {refusal.reason}",
                base.where("ref"),
                "build on a Tier-1 base such as runpod/pytorch, "
                "or pytorch/pytorch (Tier 2) with the same CUDA",
            )
        ]
    return []


def check_tier(base: Base, matrix: Matrix, variant: str | None = None) -> list[Finding]:
    """Tier 1 passes; Tier 2 warns; Tier 3 only as a ghcr.io image overlaying a Tier 1/2 base."""
    policy = matrix.policy
    where = base.where("tier")
    if base.tier not in policy.allowed_tiers:
        allowed = ", ".join(map(str, policy.allowed_tiers))
        return [
            _error(
                "tier",
                f"base '{base.name}' is Tier {base.tier}; allowed tiers are {allowed}",
                where,
                "pick a Tier-1 base (RunPod caches them: 10-60 s pulls)",
                variant,
            )
        ]
    if base.tier == 2:
        return [
            Finding(
                "tier",
                "warning",
                Problem(
                    f"base '{base.name}' is Tier 2: pulls take 1-5 min on RunPod",
                    where,
                    variant,
                    "use a Tier-1 runpod/pytorch base with the same CUDA and torch when one exists",
                ),
            )
        ]
    if base.tier == 3:
        if not any(base.image.is_under(r) for r in policy.tier3_registries):
            return [
                _error(
                    "tier",
                    f"Tier-3 base '{base.name}' ({base.ref}) is not under "
                    f"{' or '.join(policy.tier3_registries)}: uncached images get stuck on pull",
                    base.where("ref"),
                    "push the custom image to ghcr.io",
                    variant,
                )
            ]
        under = matrix.base(base.built_on) if base.built_on else None
        if under is None or under.tier > 2:
            return [
                _error(
                    "tier",
                    f"Tier-3 base '{base.name}' must overlay a Tier-1 or Tier-2 base",
                    base.where("built_on"),
                    "set built_on: to the catalogue base it is built FROM",
                    variant,
                )
            ]
    return []


def _parse_torch(base: Base) -> tuple[Version, str] | Finding:
    assert base.torch is not None
    try:
        version = Version(base.torch)
    except InvalidVersion:
        return _error(
            "torch-cuda",
            f"base '{base.name}': torch '{base.torch}' is not a version",
            base.where("torch"),
            "write it as the wheel's version, e.g. 2.11.0+cu130",
        )
    if version.local is None:
        return _error(
            "torch-cuda",
            f"base '{base.name}': torch '{base.torch}' has no local tag "
            "(+cu130, +cpu): the CUDA it needs is unknown",
            base.where("torch"),
            f"write {base.torch}+cu{(base.cuda or '').replace('.', '')}" if base.cuda else None,
        )
    return version, version.local


def check_torch_cuda(base: Base) -> list[Finding]:
    """The wheel's local tag must match the base's CUDA: +cu130 needs CUDA 13.0, +cpu none."""
    if base.torch is None:
        return []
    parsed = _parse_torch(base)
    if isinstance(parsed, Finding):
        return [parsed]
    version, local = parsed
    try:
        wheel_cuda = facts.cuda_of_local_tag(local)
    except ValueError as exc:
        return [_error("torch-cuda", f"base '{base.name}': {exc}", base.where("torch"))]
    if wheel_cuda != base.cuda:
        has = f"CUDA {base.cuda}" if base.cuda else "no CUDA"
        wants = f"CUDA {wheel_cuda}" if wheel_cuda else "a CPU-only base"
        fix = (
            f"use torch {version.public}+cu{base.cuda.replace('.', '')}" if base.cuda else "use a +cpu wheel"
        )
        return [
            _error(
                "torch-cuda",
                f"base '{base.name}' pairs torch {base.torch} (built for {wants}) "
                f"with {has}: CUDA mismatch at run time",
                base.where("torch"),
                f"{fix}, or a base with {wants}",
            )
        ]
    build = facts.find_torch_build(version.public, local)
    if build and base.cudnn is not None and build.cudnn and build.cudnn.split(".")[0] != str(base.cudnn):
        return [
            _error(
                "torch-cuda",
                f"base '{base.name}' declares cuDNN {base.cudnn} but torch {base.torch} "
                f"is built against cuDNN {build.cudnn}",
                base.where("cudnn"),
                f"set cudnn: {build.cudnn.split('.')[0]}",
            )
        ]
    return []


def tag_facts(ref: str) -> dict[str, str]:
    """What a base reference's tag says: cuda, torch, python, cudnn (major[.minor[.patch]])."""
    image = refs.parse(ref)
    repository, tag = image.familiar, image.tag_or_latest
    found: dict[str, str] = {}
    for field_name, pattern in facts.TAG_FACTS:
        match = pattern.search(tag)
        if match and field_name not in found:
            found[field_name] = ".".join(str(int(g)) if field_name != "python" else g for g in match.groups())
    if "torch" not in found and repository in facts.TORCH_LEADING_TAG_REPOSITORIES:
        lead = facts.LEADING_VERSION.match(tag)
        if lead:
            found["torch"] = lead.group("version")
    return found


def check_tag_agrees(base: Base) -> list[Finding]:
    """A catalogue entry that contradicts what its own tag says is an error."""
    said = tag_facts(base.ref)
    declared: dict[str, str | None] = {
        "cuda": base.cuda,
        "python": base.python,
        "cudnn": str(base.cudnn) if base.cudnn is not None else None,
        "torch": Version(base.torch).public if base.torch and facts.is_version(base.torch) else None,
    }
    out = []
    for key, from_tag in said.items():
        value = declared[key]
        if value is not None and value != from_tag:
            out.append(
                _error(
                    "tag",
                    f"base '{base.name}' declares {key} {value} but its tag '{base.tag}' says {from_tag}",
                    base.where(key),
                    f'set {key}: "{from_tag}" or fix the ref',
                )
            )
    return out


def check_gpu_flash_attention(gpu: Gpu) -> list[Finding]:
    """FA3 only on sm_90; FA2 on sm_80/86/89 (and sm_90)."""
    if gpu.flash_attention is None:
        return []
    supported = facts.flash_attention_for(gpu.arch)
    if gpu.flash_attention not in supported:
        can = f"FlashAttention {' or '.join(map(str, supported))}" if supported else "no FlashAttention"
        return [
            _error(
                "flash-attention",
                f"GPU '{gpu.name}' ({gpu.arch}) declares FlashAttention "
                f"{gpu.flash_attention}, but {gpu.arch} runs {can}",
                gpu.location,
                f"set flash_attention: {max(supported)}" if supported else "remove flash_attention",
            )
        ]
    return []


# --- variant rules ---------------------------------------------------------------------------


def gpu_refusal(gpu: Gpu, build: facts.TorchBuild | None, policy: Policy) -> str | None:
    """Why `gpu` cannot be a target with this torch build (None: an image without torch), or None."""
    for refusal in policy.refused_archs:
        if ArchRule.parse(refusal.what).covers(Arch.parse(gpu.arch)):
            return refusal.reason
    if build is None:
        return None
    if build.cuda is None:
        return f"torch {build.torch}+{build.local} is a CPU wheel"
    if not facts.wheel_covers_arch(build, gpu.arch):
        return (
            f"torch {build.torch}+{build.local} ships no kernels for {gpu.arch} "
            f"(TORCH_CUDA_ARCH_LIST {facts.arch_list(build)})"
        )
    return None


def check_variant(variant: Variant, policy: Policy) -> tuple[CheckedVariant | None, list[Finding]]:
    base = variant.base
    if base.torch is None and not variant.image.needs_torch:
        return _check_targets(variant, None, policy)
    if base.torch is None:
        return None, [
            _error(
                "torch-cuda",
                f"base '{base.name}' ships no torch, which image '{variant.image.name}' needs",
                variant.location,
                "build it on a runpod/pytorch base",
                variant.name,
            )
        ]
    parsed = _parse_torch(base)
    if isinstance(parsed, Finding):
        return None, []  # reported by the catalogue rule
    version, local = parsed
    build = facts.find_torch_build(version.public, local)
    if build is None:
        known = [f"{b.torch}+{b.local}" for b in facts.TORCH_BUILDS]
        return None, [
            _error(
                "facts",
                f"no facts for torch {base.torch}: its arch list is unknown",
                base.where("torch"),
                (did_you_mean(base.torch, known) or "")
                + " Add a row to buildtool/facts.py TORCH_BUILDS, with its source.",
                variant.name,
            )
        ]
    return _check_targets(variant, build, policy)


def _check_targets(
    variant: Variant, build: facts.TorchBuild | None, policy: Policy
) -> tuple[CheckedVariant, list[Finding]]:
    findings: list[Finding] = []
    targets: list[Gpu] = []
    refused: list[RefusedGpu] = []
    for gpu in variant.gpus:
        reason = gpu_refusal(gpu, build, policy)
        if reason is None:
            targets.append(gpu)
            continue
        refused.append(RefusedGpu(gpu, reason))
        if variant.gpus_explicit:
            findings.append(
                _error(
                    "arch",
                    f"targets {gpu.name} ({gpu.arch}): {reason}",
                    variant.gpus_location,
                    f"remove {gpu.name} from this variant's gpus",
                    variant.name,
                )
            )
    if not targets and not findings:
        findings.append(
            _error(
                "arch",
                "no GPU target is left after refusals",
                variant.location,
                "target a GPU the torch wheel supports",
                variant.name,
            )
        )
    findings += check_model(variant, policy)
    return CheckedVariant(variant, tuple(targets), tuple(refused), build), findings


def check_model(variant: Variant, policy: Policy) -> list[Finding]:
    """Bake weights only when small (<= 10 GB by default); bigger ones go on a network volume."""
    model = variant.image.model
    if model and model.source == "baked" and model.size_gb > policy.max_baked_model_gb:
        return [
            _error(
                "model-size",
                f"model '{model.name}' is {model.size_gb:g} GB, over the "
                f"{policy.max_baked_model_gb:g} GB limit for baked weights",
                model.location,
                "set source: volume and volume_path: /runpod-volume/models/<name>",
                variant.name,
            )
        ]
    return []


# --- serverless handler: model loaded at module level ----------------------------------------


def check_handler(path: Path, loaders: tuple[str, ...], variant: str | None = None) -> list[Finding]:
    """The handler module loads its model at module level, never inside the handler function
    (seed pitfall: a model loaded per request means a cold start per request, and OOM)."""
    return [_error("handler", p.message, p.where, p.hint, variant) for p in handlers.analyse(path, loaders)]


def check_dependency_lock(image: Image, variant: str | None = None) -> list[Finding]:
    """An image installs its Python packages from a lock with hashes, transitive ones included, that
    agrees with its requirements.in: a rebuild on another day must install the same files."""
    return [
        _error("dependency-lock", p.message, p.where, p.hint, variant)
        for p in deplock.lock_problems(image.template, image.name)
    ]


# --- the whole plan --------------------------------------------------------------------------


def check_plan(plan: Plan) -> CheckedPlan:
    matrix = plan.matrix
    findings: list[Finding] = []
    for base in matrix.bases:
        findings += check_refused_repository(base, matrix.policy)
        findings += check_torch_cuda(base)
        findings += check_tag_agrees(base)
        if base.tier == 3:
            findings += check_tier(base, matrix)
    for gpu in matrix.gpus:
        findings += check_gpu_flash_attention(gpu)
    checked: list[CheckedVariant] = []
    handlers_done: set[Path] = set()
    images_done: set[str] = set()
    for variant in plan.variants:
        if variant.base.tier != 3:
            findings += check_tier(variant.base, matrix, variant.name)
        result, variant_findings = check_variant(variant, matrix.policy)
        findings += variant_findings
        if result is not None:
            checked.append(result)
        image = variant.image
        if image.name not in images_done:
            images_done.add(image.name)
            findings += check_dependency_lock(image, variant.name)
        if image.handler is not None and image.template / image.handler not in handlers_done:
            handlers_done.add(image.template / image.handler)
            findings += check_handler(
                image.template / image.handler, matrix.policy.model_loaders, variant.name
            )
    return CheckedPlan(plan, tuple(checked), tuple(_unique(findings)))


def _unique(findings: list[Finding]) -> list[Finding]:
    """Tier warnings repeat per variant: keep one of each message and place. Errors stay one per
    variant, so that each names the variant it stops."""
    seen: set[tuple[str, Location | None, str | None]] = set()
    out = []
    for f in findings:
        key = (f.problem.message, f.problem.location, f.problem.variant if f.severity == "error" else None)
        if key not in seen:
            seen.add(key)
            out.append(f)
    return out


# --- rendered Dockerfiles --------------------------------------------------------------------

_VAR = re.compile(
    r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?::(?P<op>[-+])(?P<word>[^}]*))?\}"
    r"|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))"
)


def _substitute(text: str, values: Mapping[str, str | None]) -> tuple[str, list[str]]:
    missing: list[str] = []

    def one(match: re.Match[str]) -> str:
        name = match.group("braced") or match.group("plain")
        value = values.get(name)
        op, word = match.group("op"), match.group("word")
        if op == "-":
            return value if value else word
        if op == "+":
            return word if value else ""
        if value is None:
            missing.append(name)
            return ""
        return value

    return _VAR.sub(one, text), missing


def _flags(words: list[str]) -> dict[str, str]:
    """'--from=x', '--mount=type=bind,from=x,target=/y' -> {'from': 'x', 'mount': '...'}."""
    out: dict[str, str] = {}
    for word in words:
        if word.startswith("--") and "=" in word:
            key, _, value = word[2:].partition("=")
            out.setdefault(key.lower(), value)
    return out


def _mount_sources(words: list[str]) -> list[str]:
    """The from= of every RUN --mount (each --mount is its own flag)."""
    sources = []
    for word in words:
        if word.lower().startswith("--mount="):
            fields = dict(f.partition("=")[::2] for f in word[len("--mount=") :].split(","))
            if fields.get("from"):
                sources.append(fields["from"])
    return sources


def check_dockerfile(
    text: str, path: Path, variant: str, build_args: Mapping[str, str], matrix: Matrix
) -> list[Finding]:
    """Every image the Dockerfile pulls, resolved as BuildKit resolves it, must be a catalogue base
    and never a refused repository: each FROM (after ARG defaults and build args), COPY --from and
    RUN --mount from=. A name is a stage only if an earlier stage has it (case-insensitive), or is
    a stage's index; `FROM x AS x` pulls the image x, and a later `FROM x` means that stage."""
    parser = DockerfileParser(fileobj=io.BytesIO(text.encode("utf-8")))
    catalogue = [refs.parse(b.ref) for b in matrix.bases]
    args: dict[str, str | None] = {}
    stages: list[str] = []  # lower-cased names of the stages so far, in order
    seen_from = False
    findings: list[Finding] = []

    def check_source(written: str, instruction: str, where: Location) -> None:
        name, missing = _substitute(written, args)
        if missing:
            findings.append(
                _error(
                    "dockerfile-from",
                    f"{instruction} {written} uses ${{{missing[0]}}}, which has no default and no build arg",
                    where,
                    f"give ARG {missing[0]} a default",
                    variant,
                )
            )
            return
        if name.lower() in stages or name == "scratch" or (name.isdigit() and int(name) < len(stages)):
            return
        try:
            image = refs.parse(name)
        except refs.InvalidReference as exc:
            findings.append(
                _error("dockerfile-from", f"{instruction} {name}: {exc}", where, "fix the reference", variant)
            )
            return
        refused = refusal_for(image, matrix.policy)
        if refused is not None:
            findings.append(
                _error(
                    "refused-repository",
                    f"{instruction} {name} pulls {image.name}: {refused.reason}",
                    where,
                    "build FROM a catalogue base (runpod/pytorch, pytorch/pytorch)",
                    variant,
                )
            )
        elif not any(image.same_image(base) for base in catalogue):
            known = [b.ref for b in matrix.bases]
            hint = did_you_mean(name, known) or "add it to bases: in matrix.yaml with its tier"
            findings.append(
                _error(
                    "dockerfile-from",
                    f"{instruction} {name} pulls {image}, which is not a base of the catalogue",
                    where,
                    hint,
                    variant,
                )
            )

    for instruction in parser.structure:
        kind, value, line = instruction["instruction"], instruction["value"], instruction["startline"] + 1
        where = Location(path, line)
        words = value.split()
        if kind == "ARG" and not seen_from:
            for token in words:
                name, _, default = token.partition("=")
                args[name] = build_args.get(name, default.strip("\"'") if "=" in token else None)
            continue
        if kind == "FROM":
            seen_from = True
            plain = [w for w in words if not w.startswith("--")]
            if plain:
                check_source(plain[0], "FROM", where)  # before its own name exists
            stages.append(plain[2].lower() if len(plain) >= 3 and plain[1].lower() == "as" else "")
        elif kind in ("COPY", "ADD") and "from" in _flags(words):
            check_source(_flags(words)["from"], f"{kind} --from", where)
        elif kind == "RUN":
            for source in _mount_sources(words):
                check_source(source, "RUN --mount from=", where)
    return findings
