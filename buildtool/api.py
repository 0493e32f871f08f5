"""The library API, kept apart from the CLI: each function runs the pipeline up to one stage.

matrix -> plan -> policy -> render   (build, smoke, report and release follow in their modules)
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from buildtool import refs, reproduce
from buildtool.build import BuildOptions
from buildtool.build import build as build_rendering
from buildtool.built import BuildEvent, BuildResult
from buildtool.engine import BuildxEngine
from buildtool.errors import (
    ConfigError,
    DirtyWorktreeError,
    EngineError,
    Location,
    PolicyError,
    Problem,
    RegistryError,
)
from buildtool.files import write_atomically
from buildtool.localregistry import ensure_embedded_registry
from buildtool.lock import lock_path_for, read_lock, read_lock_file
from buildtool.matrix import load_matrix
from buildtool.naming import (
    EMBEDDED_REGISTRY,
    Revision,
    check_registry,
    current_revision,
    revision_of,
    tag_commit,
)
from buildtool.oci import OciImage
from buildtool.plan import CheckedPlan, make_plan
from buildtool.policy import check_image, check_plan
from buildtool.registry import HttpRegistry
from buildtool.release import ReleasePlan, plan_release, promote, release_document
from buildtool.render import check_rendering, context_sources, reaches_context, render_checked
from buildtool.render import render as render_in_memory
from buildtool.rendering import Rendering
from buildtool.report import Report, build_report, to_html, to_json, to_markdown
from buildtool.reproduce import Reproduction


@dataclass(frozen=True)
class RenderOptions:
    registry: str | None = None  # None: $REGISTRY, then matrix.yaml's registry
    revision: Revision | None = None  # None: the matrix repository's HEAD
    build_dir: Path | None = None  # None: build/ next to matrix.yaml
    kernels_local: Path | None = None  # kernels for the bake step, as the named context kernels-local


def _check_kernels_local(options: RenderOptions) -> None:
    if options.kernels_local is not None and not options.kernels_local.is_dir():
        raise ConfigError(
            Problem(
                "--kernels-local is not a directory",
                Location(options.kernels_local),
                hint="give a directory holding one subdirectory per kernel of the kernels lock",
            )
        )


def plan_and_check(matrix_path: Path, select: tuple[str, ...] = ()) -> CheckedPlan:
    """Load, expand and apply every plan-level policy; raise PolicyError on any error finding."""
    commits = read_lock_file(lock_path_for(matrix_path)).kernels
    checked = check_plan(make_plan(load_matrix(matrix_path), select, commits))
    if checked.errors:
        raise PolicyError(f.problem for f in checked.errors)
    return checked


def build_dir_for(matrix_path: Path, options: RenderOptions) -> Path:
    return options.build_dir or matrix_path.parent / "build"


def registry_for(checked: CheckedPlan, options: RenderOptions) -> tuple[str, bool]:
    """The registry, and whether it is the embedded default (nothing configured)."""
    for value, source in (
        (options.registry, "--registry"),
        (os.environ.get("REGISTRY"), "$REGISTRY"),
        (checked.plan.matrix.registry, "registry"),  # checked with its line when the matrix loaded
    ):
        if value is not None and (value or source != "$REGISTRY"):  # an empty $REGISTRY is unset
            return check_registry(value, source), False
    return EMBEDDED_REGISTRY, True


def _registry(checked: CheckedPlan, options: RenderOptions) -> str:
    return registry_for(checked, options)[0]


def _revision(matrix_path: Path, options: RenderOptions) -> Revision:
    return options.revision or current_revision(matrix_path.resolve().parent)


def check(
    matrix_path: Path, select: tuple[str, ...] = (), options: RenderOptions = RenderOptions()
) -> tuple[CheckedPlan, Rendering]:
    """Everything render does except writing: plan policies and rendered-Dockerfile policies."""
    checked = plan_and_check(matrix_path, select)
    revision = options.revision or Revision("0" * 40, dirty=False)  # content checks need no real commit
    rendering = render_in_memory(checked, revision, _registry(checked, options))
    errors = [
        f
        for f in check_rendering(rendering, checked, build_dir_for(matrix_path, options))
        if f.severity == "error"
    ]
    if errors:
        raise PolicyError(f.problem for f in errors)
    return checked, rendering


def render(
    matrix_path: Path, select: tuple[str, ...] = (), options: RenderOptions = RenderOptions()
) -> tuple[CheckedPlan, Rendering]:
    _check_kernels_local(options)
    checked = plan_and_check(matrix_path, select)
    rendering = render_checked(
        checked,
        _revision(matrix_path, options),
        _registry(checked, options),
        build_dir_for(matrix_path, options),
        options.kernels_local,
    )
    return checked, rendering


@dataclass(frozen=True)
class BuildRunOptions:
    render: RenderOptions = RenderOptions()
    locked: bool = False
    allow_dirty: bool = False
    jobs: int = 2
    rebuild: bool = False  # build even a commit whose immutable tags the registry already holds


def build(
    matrix_path: Path,
    select: tuple[str, ...] = (),
    options: BuildRunOptions = BuildRunOptions(),
    on_event: Callable[[BuildEvent], None] = lambda _: None,
    on_note: Callable[[str], None] = lambda _: None,
) -> BuildResult:
    """render -> build -> push -> verify -> move tags, with the buildx engine and imagetools registry."""
    _check_kernels_local(options.render)
    checked = plan_and_check(matrix_path, select)
    root = matrix_path.resolve().parent
    revision = options.render.revision or current_revision(
        root, context_sources(checked.plan), reaches_context
    )
    if revision.dirty and not options.allow_dirty:
        strays = ", ".join(revision.strays[:5]) + (" ..." if len(revision.strays) > 5 else "")
        raise DirtyWorktreeError(
            Problem(
                f"files not in the commit would reach a build context: {strays}; an immutable tag "
                f"must hold exactly the commit's content ({revision.sha[:12]})"
                if revision.strays
                else "the worktree has uncommitted changes: an immutable tag must name a commit "
                f"({revision.sha[:12]})",
                Location(root),
                hint="commit them (or delete them), or pass --allow-dirty to push mutable "
                "<base>-<sha>-dirty tags",
            )
        )
    registry, embedded = registry_for(checked, options.render)
    if embedded:
        on_note(ensure_embedded_registry(registry))
    build_dir = build_dir_for(matrix_path, options.render)
    rendering = render_checked(checked, revision, registry, build_dir, options.render.kernels_local)
    build_options = BuildOptions(
        build_dir, lock_path_for(matrix_path), options.locked, options.jobs, options.rebuild
    )
    return build_rendering(
        rendering, build_options, BuildxEngine(), HttpRegistry(), on_event, image_policy(checked)
    )


def image_policy(checked: CheckedPlan) -> Callable[[OciImage], list[Problem]]:
    """The image-scope rules, bound to the plan: what the build stage runs on each built image."""
    by_name = {cv.name: cv for cv in checked.variants}

    def check(built: OciImage) -> list[Problem]:
        findings = check_image(built, by_name[built.variant], checked.plan.matrix)
        return [f.problem for f in findings if f.severity == "error"]

    return check


def check_reproducible(
    matrix_path: Path,
    result: BuildResult,
    options: BuildRunOptions = BuildRunOptions(),
    on_start: Callable[[str], None] = lambda _: None,
) -> list[Reproduction]:
    """Rebuild each variant `result` built (or found built) from nothing, and compare digests."""
    build_dir = build_dir_for(matrix_path, options.render)
    lock = read_lock(lock_path_for(matrix_path))
    engine, registry = BuildxEngine(), HttpRegistry()
    out = []
    for variant in result.variants:
        if not variant.ok or variant.digest is None:
            continue
        overrides = {}
        if options.locked and variant.base_ref in lock:
            overrides["args.BASE_IMAGE"] = f"{variant.base_ref}@{lock[variant.base_ref]}"
        on_start(variant.variant)
        repository = refs.parse(variant.immutable_tag).name
        out.append(
            reproduce.check_reproducible(
                build_dir, variant.variant, variant.digest, repository, engine, registry, overrides
            )
        )
    return out


@dataclass(frozen=True)
class ReleaseOptions:
    registry: str | None = None
    commit: str | None = None  # default: the commit the git tag names, else HEAD
    results: tuple[
        Path, ...
    ] = ()  # smoke result files; default build/smoke/*.json and reports/samples/*.json
    dry_run: bool = False
    build_dir: Path | None = None


def release(
    matrix_path: Path, tag: str, options: ReleaseOptions = ReleaseOptions(), select: tuple[str, ...] = ()
) -> tuple[ReleasePlan, list[str], list[str]]:
    """Plan the promotion of the tagged commit's digests and, unless a dry run, move the tags."""
    checked = plan_and_check(matrix_path, select)
    root = matrix_path.resolve().parent
    sha = options.commit or tag_commit(root, tag)
    revision = revision_of(root, sha) if sha else current_revision(root)
    registry_address, _ = registry_for(checked, RenderOptions(registry=options.registry))
    results = options.results or (
        *sorted(
            (build_dir_for(matrix_path, RenderOptions(build_dir=options.build_dir)) / "smoke").glob("*.json")
        ),
        *sorted((root / "reports" / "samples").glob("*.json")),
    )
    client = HttpRegistry()
    try:
        plan = plan_release(tag, revision, checked, registry_address, client, results)
        if options.dry_run:
            return plan, [], []
        moved, unchanged = promote(plan, client)
    except RegistryError as exc:
        raise EngineError(
            Problem(
                f"registry {registry_address}: {exc}",
                hint="check --registry / $REGISTRY, that it is up, and `docker login`",
            )
        ) from None
    document = release_document(plan, moved, unchanged)
    write_atomically(
        build_dir_for(matrix_path, RenderOptions(build_dir=options.build_dir)) / "release.json",
        json.dumps(document, indent=2, sort_keys=True) + "\n",
    )
    return plan, moved, unchanged


def default_results(matrix_path: Path, build_dir: Path | None = None) -> tuple[Path, ...]:
    """build/smoke/*.json, then reports/samples/*.json (results from GPU hosts)."""
    root = matrix_path.resolve().parent
    smoke_dir = build_dir_for(matrix_path, RenderOptions(build_dir=build_dir)) / "smoke"
    return (*sorted(smoke_dir.glob("*.json")), *sorted((root / "reports" / "samples").glob("*.json")))


def report(
    matrix_path: Path,
    out_dir: Path,
    results: tuple[Path, ...] = (),
    build_dir: Path | None = None,
    select: tuple[str, ...] = (),
) -> tuple[Report, list[Path]]:
    """The compatibility report, written as compat.md, compat.json and compat.html under out_dir."""
    checked = plan_and_check(matrix_path, select)
    built = build_report(checked, results or default_results(matrix_path, build_dir))
    written = []
    for name, text in (
        ("compat.md", to_markdown(built)),
        ("compat.json", json.dumps(to_json(built), indent=2, sort_keys=True) + "\n"),
        ("compat.html", to_html(built)),
    ):
        write_atomically(out_dir / name, text)
        written.append(out_dir / name)
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with Path(summary).open("a", encoding="utf-8") as handle:
            handle.write(to_markdown(built))
    return built, written
