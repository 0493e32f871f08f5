"""Render Dockerfiles and build contexts from images/<name>/ templates, and one buildx bake file.

Rendering happens in memory; rendered Dockerfiles go through policy.check_dockerfile; only then is
anything written, and then atomically. Same matrix + commit + registry -> byte-identical files.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import Any

import jinja2

from buildtool import facts
from buildtool.arch import Arch
from buildtool.context_files import CachedTree, SourceFile, SourceTree, source_tree
from buildtool.errors import Finding, Location, PolicyError, Problem, TemplateError
from buildtool.naming import Revision, variant_tags
from buildtool.plan import CheckedPlan, Plan, Variant
from buildtool.policy import check_dockerfiles
from buildtool.policy.dockerfile import RenderedDockerfile
from buildtool.render.output import (
    ContentHashes,
    ContextFile,
    RenderedFile,
    RenderedVariant,
    Rendering,
    bake_file,
    context_directory,
)

LABEL_PREFIX = "org.runpod-images"
SKIPPED_NAMES = {"__pycache__", ".DS_Store"}
SHARED_TEMPLATES = "_shared"
KERNELS_LOCK_IN_IMAGE = "/opt/kernels/kernels.lock.json"
SMOKE_PACKAGE = "smoke"  # next to matrix.yaml; copied into every build context (the image's late layer)


@functools.lru_cache(maxsize=256)  # variants share their image's few pin sets
def kernels_lock(pins: tuple[facts.KernelPin, ...]) -> str:
    entries = [
        {
            "name": p.name,
            "repo_id": p.repo_id,
            "revision": p.revision,
            "function": p.function,
            "archs": list(p.archs),
            "flash_attention": p.flash_attention,
            "local_path": None,
        }
        for p in pins
    ]
    return json.dumps({"version": 1, "kernels": entries}, indent=2, sort_keys=True) + "\n"


def smoke_env(cv: Variant, pins: tuple[facts.KernelPin, ...]) -> dict[str, str]:
    """What the smoke suite expects of the image, as SMOKE_* environment variables."""
    image, base = cv.image, cv.base
    env = {
        "SMOKE_VARIANT": cv.name,
        "SMOKE_TORCH": cv.torch or "",
        "SMOKE_CUDA": base.cuda or "",
        "SMOKE_CUDNN": (cv.torch_build.cudnn if cv.torch_build else None) or "",
        "SMOKE_FLASH_ATTENTION": ",".join(map(str, cv.baked_flash_attention)),
        "SMOKE_DRIVER_FLOOR": facts.DRIVER_FLOOR_BY_CUDA.get(base.cuda or "", ""),
    }
    if pins:
        env["SMOKE_KERNELS_LOCK"] = KERNELS_LOCK_IN_IMAGE
    if image.smoke is not None:
        env["SMOKE_INPUT"] = image.smoke.sample_input
        env["SMOKE_OUTPUT"] = image.smoke.output
        if image.smoke.requires_gpu:
            env["SMOKE_REQUIRES_GPU"] = "1"
        if image.smoke.imports:
            env["SMOKE_IMPORTS"] = ",".join(image.smoke.imports)
        if image.smoke.model_dir and image.model and image.model.volume_path:
            env["SMOKE_MODEL_DIR"] = image.smoke.model_dir
            env["SMOKE_MODEL_VOLUME"] = image.model.volume_path
        if image.smoke.output_shape:
            env["SMOKE_OUTPUT_SHAPE"] = ",".join(map(str, image.smoke.output_shape))
    return env


def docker_quote(value: str) -> str:
    """A Dockerfile ENV value in double quotes (JSON inside stays intact)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$") + '"'


def variant_labels(cv: Variant) -> dict[str, str]:
    """Labels that describe what a variant is; stable per variant, so they live in the Dockerfile."""
    base = cv.base
    return {
        f"{LABEL_PREFIX}.variant": cv.name,
        f"{LABEL_PREFIX}.image": cv.image.name,
        f"{LABEL_PREFIX}.torch": cv.torch or "",
        f"{LABEL_PREFIX}.cuda": base.cuda or "",
        f"{LABEL_PREFIX}.cudnn": (cv.torch_build.cudnn if cv.torch_build else None) or "",
        f"{LABEL_PREFIX}.python": base.python,
        f"{LABEL_PREFIX}.archs": ",".join(cv.archs),
        f"{LABEL_PREFIX}.gpus": ",".join(g.name for g in cv.targets),
        f"{LABEL_PREFIX}.flash-attention": ",".join(map(str, cv.baked_flash_attention)),
        f"{LABEL_PREFIX}.driver-floor": facts.DRIVER_FLOOR_BY_CUDA.get(base.cuda or "", ""),
    }


def _template_context(cv: Variant) -> dict[str, Any]:
    v = cv
    image = v.image
    pins = cv.kernels
    return {
        "kernels": pins,
        "smoke_env": smoke_env(cv, pins),
        "variant": {
            "name": cv.name,
            "archs": cv.archs,
            "torch_cuda_arch_list": ";".join(Arch.parse(a).torch_entry for a in cv.archs),
            "flash_attention": cv.flash_attention,
            "gpus": [g.name for g in cv.targets],
            "torch": cv.torch,  # the image's own wheel when it declares one, else the base's
        },
        "base": {
            "name": v.base.name,
            "ref": v.base.ref,
            "cuda": v.base.cuda,
            "cudnn": v.base.cudnn,
            "torch": v.base.torch,
            "python": v.base.python,
            "cuda_compat": v.base.cuda_compat,
        },
        # Only values with a grammar (keys.py) or quoted by the macros reach a template: build args
        # reach the Dockerfile as build args (ARG NAME, then ${NAME}), the smoke settings as
        # smoke_env through docker_quote.
        "image": {
            "name": image.name,
            "kind": image.kind,
            "version": image.version,
            "handler": image.handler,
            "model": image.model,
        },
        "labels": variant_labels(cv),
    }


def _template_line(tb: TracebackType | None, filename: str) -> int | None:
    """Jinja rewrites tracebacks so template frames carry the template's file and line."""
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _render_template(
    env: jinja2.Environment, directory: Path, name: str, context: Mapping[str, Any], variant: str
) -> str:
    path = directory / name
    try:
        return env.get_template(name).render(context)
    except jinja2.TemplateNotFound as exc:
        raise TemplateError(
            Problem(
                f"template '{exc.name}' not found",
                Location(path),
                variant,
                f"create it in {directory} or images/{SHARED_TEMPLATES}/",
            )
        ) from None
    except jinja2.TemplateSyntaxError as exc:
        where = Location(Path(exc.filename) if exc.filename else path, exc.lineno)
        raise TemplateError(Problem(f"template syntax error: {exc.message}", where, variant)) from None
    except _RendersNone as exc:
        raise TemplateError(
            Problem(
                f"a value renders as None ({exc}): the matrix leaves it out, and the image would "
                "get the text 'None'",
                Location(path, _template_line(exc.__traceback__, str(path))),
                variant,
                "set it in matrix.yaml, or guard it in the template ({% if ... %}) or give it a "
                "default (| default('...'))",
            )
        ) from None
    except jinja2.UndefinedError as exc:
        raise TemplateError(
            Problem(
                f"undefined template variable: {exc.message}",
                Location(path, _template_line(exc.__traceback__, str(path))),
                variant,
                "variables are variant, base, image, labels, kernels and smoke_env; "
                "see docs/matrix.md#templates",
            )
        ) from None


class _RendersNone(Exception):
    """A {{ expression }} whose value is None: StrictUndefined passes it, and str() makes it 'None'."""


def _refuse_none(value: Any) -> Any:
    if value is None:
        raise _RendersNone("an expression of the template")
    return value


def _environment(template_dir: Path, tree: SourceTree) -> jinja2.Environment:
    """Templates see their own directory first, then images/_shared/ (macros every image uses),
    both read from `tree`: the commit's objects for a clean revision."""
    shared = template_dir.parent / SHARED_TEMPLATES
    directories = [(template_dir, {f.relative: f for f in tree.files(template_dir)})]
    directories.append((shared, {f.relative: f for f in tree.files(shared)}))

    def load(name: str) -> tuple[str, str, Callable[[], bool]] | None:
        for directory, files in directories:
            if name in files:
                return files[name].content.decode("utf-8"), str(directory / name), lambda: True
        return None

    env = jinja2.Environment(
        loader=jinja2.FunctionLoader(load),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
        finalize=_refuse_none,
    )
    env.filters["docker_quote"] = docker_quote
    return env


def reaches_context(relative: str) -> bool:
    """Whether a file under a template or smoke/ directory is copied into a build context."""
    parts = PurePosixPath(relative).parts
    return not SKIPPED_NAMES & set(parts) and not relative.endswith(".pyc")


def context_sources(plan: Plan) -> list[Path]:
    """The directories render copies files from: the plan's templates, the shared macros, smoke/."""
    templates = {v.image.template for v in plan.variants}
    shared = {t.parent / SHARED_TEMPLATES for t in templates}
    return sorted(templates | shared | {plan.matrix.path.parent / SMOKE_PACKAGE})


class _ContextTree:
    """Files under a directory that reach a build context, sorted, caches left out: listed once per
    render (the variants of a template share its directory, and all share smoke/)."""

    def __init__(self, tree: CachedTree) -> None:
        self._tree = tree
        self._listed: dict[Path, list[SourceFile]] = {}

    def files(self, directory: Path) -> list[SourceFile]:
        if directory not in self._listed:
            self._listed[directory] = [f for f in self._tree.files(directory) if reaches_context(f.relative)]
        return self._listed[directory]


def _context_files(
    cv: Variant, context: Mapping[str, Any], env: jinja2.Environment, tree: _ContextTree, smoke_dir: Path
) -> tuple[str, list[ContextFile]]:
    """The Dockerfile, and the files of the variant's context, their paths relative to it."""
    template_dir = cv.image.template
    dockerfile = _render_template(env, template_dir, "Dockerfile.j2", context, cv.name)
    files: list[ContextFile] = [("Dockerfile", dockerfile.encode(), False)]
    for source in tree.files(template_dir):
        relative = source.relative
        if relative == "Dockerfile.j2":
            continue
        if relative.endswith(".j2"):
            text = _render_template(env, template_dir, relative, context, cv.name)
            files.append((relative.removesuffix(".j2"), text.encode(), False))
        else:
            files.append((relative, source.content, source.executable))
    pins = cv.kernels
    if pins:
        files.append(("kernels.lock.json", kernels_lock(pins).encode(), False))
    files += [
        (f"{SMOKE_PACKAGE}/{source.relative}", source.content, False) for source in tree.files(smoke_dir)
    ]
    return dockerfile, files


def render(
    checked: CheckedPlan, revision: Revision, registry: str, kernels_local: Path | None = None
) -> Rendering:
    """Render every variant of a policy-checked plan, in memory. `kernels_local`: a directory of
    kernels (one subdirectory each) passed to the bake step as the named build context."""
    matrix = checked.plan.matrix
    rendered = []
    environments: dict[Path, jinja2.Environment] = {}
    listed = CachedTree(source_tree(revision.checkout, revision.sha))
    tree = _ContextTree(listed)
    hashes = ContentHashes()
    for cv in checked.variants:
        image = cv.image
        context = _template_context(cv)
        # One environment per template directory: each template compiles once, not once per variant.
        if image.template not in environments:
            environments[image.template] = _environment(image.template, listed)
        env = environments[image.template]
        dockerfile, in_context = _context_files(cv, context, env, tree, matrix.path.parent / SMOKE_PACKAGE)
        directory = context_directory(cv.name, in_context, hashes)
        files = [
            RenderedFile(f"{directory}/{path}", content, executable)
            for path, content, executable in in_context
        ]
        tags = variant_tags(
            registry, image.name, cv.base.name, revision, cv.name == checked.plan.default_variant
        )
        labels = {
            "org.opencontainers.image.source": matrix.source_url,
            "org.opencontainers.image.revision": revision.sha,
            "org.opencontainers.image.version": image.version,
            "org.opencontainers.image.title": image.name,
            "org.opencontainers.image.description": image.description,
            "org.opencontainers.image.base.name": cv.base.ref,
            "org.opencontainers.image.created": commit_time(revision),
        }
        rendered.append(
            RenderedVariant(
                cv.name,
                image.name,
                cv.base.ref,
                dockerfile,
                image.args,
                tuple(sorted(labels.items())),
                tags,
                tuple(files),
                directory,
                bakes_kernels=bool(cv.kernels),
                secrets=cv.image.secrets,
            )
        )
    bake = bake_file(rendered, revision, kernels_local, matrix.cache_manifest)
    return Rendering(tuple(rendered), bake, revision, registry)


def commit_time(revision: Revision) -> str:
    """The commit's time, RFC 3339 in UTC: what the image's `created` label says."""
    return datetime.fromtimestamp(revision.epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_rendering(rendering: Rendering, checked: CheckedPlan, build_dir: Path) -> list[Finding]:
    def subject(v: RenderedVariant) -> tuple[str, RenderedDockerfile]:
        prefix = f"{v.context}/"  # every file of a variant's context is under it
        files = tuple((f.path[len(prefix) :], f.content) for f in v.files if f.path != f"{prefix}Dockerfile")
        path = build_dir / v.name / "Dockerfile"
        return v.name, RenderedDockerfile(v.dockerfile, path, dict(v.build_args), files)

    return check_dockerfiles(map(subject, rendering.variants), checked.plan.matrix)


def render_checked(
    checked: CheckedPlan,
    revision: Revision,
    registry: str,
    build_dir: Path,
    kernels_local: Path | None = None,
) -> Rendering:
    """Render in memory and refuse on rendered-Dockerfile policy errors: nothing is written yet."""
    rendering = render(checked, revision, registry, kernels_local)
    errors = [f for f in check_rendering(rendering, checked, build_dir) if f.severity == "error"]
    if errors:
        raise PolicyError(f.problem for f in errors)
    return rendering
