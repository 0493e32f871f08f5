"""The library API, kept apart from the CLI: each function runs the pipeline up to one stage, and
reads one Options (config/options.py), resolved once by its caller.

matrix -> plan -> policy -> render -> build -> smoke -> report -> release
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

from buildtool import policy, refs
from buildtool.build import reproduce
from buildtool.build.engine import BuildxEngine
from buildtool.build.oci import OciImage
from buildtool.build.reproduce import Reproduction
from buildtool.build.result import BuildEvent, BuildResult
from buildtool.build.stage import build as build_rendering
from buildtool.build_dir import exclusive, write_rendering
from buildtool.config.lock import read_lock, read_lock_file
from buildtool.config.matrix import load_matrix
from buildtool.config.options import Options
from buildtool.deploy.catalog import catalog_problems
from buildtool.deploy.pushed import measured, release_specs
from buildtool.deploy.runpod_api import RunPodApi
from buildtool.deploy.specs import DeploySpec, deploy_spec, pushed_images, write_spec
from buildtool.errors import (
    ConfigError,
    DeployError,
    DeploySpecError,
    DirtyWorktreeError,
    EngineError,
    Finding,
    Location,
    PolicyError,
    Problem,
    RegistryError,
    SelectionError,
)
from buildtool.files import write_atomically
from buildtool.naming import Revision, check_build_dir, current_revision, revision_of, tag_commit
from buildtool.plan import CheckedPlan, make_plan
from buildtool.policy import check_image, check_plan
from buildtool.registry.client import HttpRegistry
from buildtool.registry.local import ensure_embedded_registry
from buildtool.release import ReleasePlan, plan_release, promote, release_document
from buildtool.render.changes import Affected, affected_since
from buildtool.render.dockerfiles import check_rendering, context_sources, reaches_context, render_checked
from buildtool.render.dockerfiles import render as render_in_memory
from buildtool.render.output import Rendering
from buildtool.report.compat import Report, build_report, to_html, to_json, to_markdown


class Checked(NamedTuple):
    """What check and render give: the checked plan and its rendering (in memory for check)."""

    checked: CheckedPlan
    rendering: Rendering


class Released(NamedTuple):
    plan: ReleasePlan
    moved: list[str]  # tags moved to a new digest
    unchanged: list[str]  # tags that already pointed there


class Reported(NamedTuple):
    report: Report
    written: list[Path]  # compat.md, compat.json, compat.html


class DeploySpecs(NamedTuple):
    specs: list[DeploySpec]
    missing: list[str]  # selected variants the build did not push


class Deployed(NamedTuple):
    spec: DeploySpec
    answers: list[dict[str, object]]  # what RunPod answered to each request; empty on a dry run


def _check_kernels_local(options: Options) -> None:
    if options.kernels_local is not None and not options.kernels_local.is_dir():
        raise ConfigError(
            Problem(
                "--kernels-local is not a directory",
                Location(options.kernels_local),
                hint="give a directory holding one subdirectory per kernel of the kernels lock",
            )
        )


def plan_and_check(options: Options) -> CheckedPlan:
    """Load, expand and apply every plan-level policy; raise PolicyError on any error finding."""
    commits = read_lock_file(options.lock_path).kernels
    checked = check_plan(make_plan(load_matrix(options.matrix_path), options.select, commits))
    if checked.errors:
        raise PolicyError(f.problem for f in checked.errors)
    return checked


def check(options: Options) -> Checked:
    """Everything render does except writing: plan policies and rendered-Dockerfile policies."""
    checked = plan_and_check(options)
    revision = options.revision or Revision("0" * 40, dirty=False)  # content checks need no real commit
    rendering = render_in_memory(checked, revision, options.registry_for(checked.plan.matrix)[0])
    errors = [f for f in check_rendering(rendering, checked, options.build_dir) if f.severity == "error"]
    if errors:
        raise PolicyError(f.problem for f in errors)
    return Checked(checked, rendering)


def revision_for(options: Options, checked: CheckedPlan) -> Revision:
    """What the images are tagged with: --commit or HEAD, -dirty unless the matrix, the templates
    and smoke/ are exactly that commit's (their build contexts are then read from the commit)."""
    check_build_dir(options.build_dir, options.root)
    revision = current_revision(
        options.root,
        context_sources(checked.plan),
        reaches_context,
        commit=options.revision,
        inputs=(checked.plan.matrix.path, options.lock_path),
    )
    if options.kernels_local is not None:  # kernels from this machine, not the commit's pins
        strays = (f"--kernels-local {options.kernels_local}", *revision.strays)
        revision = replace(revision, dirty=True, strays=strays, checkout=revision.checkout)
    return revision


def changed_since(options: Options, since: str) -> tuple[CheckedPlan, tuple[Affected, ...]]:
    """The plan restricted to the variants a change since commit `since` affects (their build
    context, build arguments or base differ; all of them when the tool or matrix.lock changed), and
    why each is affected."""
    checked = plan_and_check(options)
    revision = revision_for(options, checked)
    registry = options.registry_for(checked.plan.matrix)[0]
    commits = read_lock_file(options.lock_path).kernels
    affected = affected_since(checked, revision, since, registry, options.select, commits)
    names = {a.variant for a in affected}
    variants = tuple(v for v in checked.variants if v.name in names)
    return replace(checked, plan=replace(checked.plan, variants=variants)), affected


def render(options: Options, on_note: Callable[[str], None] = lambda _: None) -> Checked:
    _check_kernels_local(options)
    checked = plan_and_check(options)
    revision = revision_for(options, checked)
    registry = options.registry_for(checked.plan.matrix)[0]
    rendering = render_checked(checked, revision, registry, options.build_dir, options.kernels_local)
    with exclusive(options.build_dir, on_note):  # written whole, one run at a time (build_dir.py)
        write_rendering(rendering, options.build_dir)
    return Checked(checked, rendering)


def build(
    options: Options,
    on_event: Callable[[BuildEvent], None] = lambda _: None,
    on_note: Callable[[str], None] = lambda _: None,
) -> BuildResult:
    """render -> build -> push -> verify -> move tags, with the buildx engine and imagetools registry."""
    _check_kernels_local(options)
    checked = plan_and_check(options)
    root = options.root
    revision = revision_for(options, checked)
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
    registry, embedded = options.registry_for(checked.plan.matrix)
    if embedded:
        on_note(ensure_embedded_registry(registry))
    rendering = render_checked(checked, revision, registry, options.build_dir, options.kernels_local)
    with contextlib.ExitStack() as stack:
        stack.enter_context(exclusive(options.build_dir, on_note))  # one run per build directory
        write_rendering(rendering, options.build_dir)
        if options.cold:  # a new user's first run: no layer facts remembered from earlier builds
            empty = stack.enter_context(tempfile.TemporaryDirectory(prefix="buildtool-cold-"))
            options = options.but(cache_dir=Path(empty))
        return build_rendering(
            rendering, options, BuildxEngine(), HttpRegistry(), on_event, image_policy(checked)
        )


def image_policy(checked: CheckedPlan) -> Callable[[OciImage], list[Finding]]:
    """The image-scope rules, bound to the plan: what the build stage runs on each built image."""
    by_name = {cv.name: cv for cv in checked.variants}

    def check(built: OciImage) -> list[Finding]:
        return check_image(built, by_name[built.variant], checked.plan.matrix)

    return check


def check_reproducible(
    options: Options, result: BuildResult, on_start: Callable[[str], None] = lambda _: None
) -> list[Reproduction]:
    """Rebuild each variant `result` built (or found built) from nothing, and compare digests."""
    lock = read_lock(options.lock_path)
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
                options.build_dir, variant.variant, variant.digest, repository, engine, registry, overrides
            )
        )
    return out


def release(options: Options, tag: str) -> Released:
    """Plan the promotion of the tagged commit's digests and, unless a dry run, move the tags."""
    checked = plan_and_check(options)
    root = options.root
    sha = options.commit or tag_commit(root, tag)
    revision = revision_of(root, sha) if sha else current_revision(root)
    registry_address, _ = options.registry_for(checked.plan.matrix)
    client = HttpRegistry()
    try:
        plan = plan_release(tag, revision, checked, registry_address, client, options.result_paths())
        # The deploy specs of what is promoted, made before any tag moves: a spec that cannot be
        # made (a disk too small for the image) refuses the release.
        specs = _release_specs(options, checked, plan, client)
        if options.dry_run:
            return Released(plan, [], [])
        moved, unchanged = promote(plan, client)
    except RegistryError as exc:
        raise EngineError(
            Problem(
                f"registry {registry_address}: {exc}",
                hint="check --registry / $REGISTRY, that it is up, and `docker login`",
            )
        ) from None
    document = release_document(plan, moved, unchanged)
    document["deploy_specs"] = {s.variant: str(write_spec(options.build_dir / "deploy", s)) for s in specs}
    write_atomically(
        options.build_dir / "release.json", json.dumps(document, indent=2, sort_keys=True) + "\n"
    )
    return Released(plan, moved, unchanged)


def _release_specs(
    options: Options, checked: CheckedPlan, plan: ReleasePlan, client: HttpRegistry
) -> list[DeploySpec]:
    built = pushed_images(options.build_dir) if (options.build_dir / "manifest.json").is_file() else {}
    margin = float(policy.option(checked.plan.matrix, "container_disk_margin"))
    variants = {v.name: v for v in checked.variants}
    return release_specs(plan, variants, built, margin, client, options.cache_dir)


def report(options: Options, out_dir: Path) -> Reported:
    """The compatibility report, written as compat.md, compat.json and compat.html under out_dir."""
    checked = plan_and_check(options)
    manifest = options.build_dir / "manifest.json"
    measured = json.loads(manifest.read_text()).get("variants", {}) if manifest.is_file() else {}
    built = build_report(checked, options.result_paths(), measured)
    written = []
    for name, text in (
        ("compat.md", to_markdown(built)),
        ("compat.json", json.dumps(to_json(built), indent=2, sort_keys=True) + "\n"),
        ("compat.html", to_html(built)),
    ):
        write_atomically(out_dir / name, text)
        written.append(out_dir / name)
    return Reported(built, written)


def deploy_specs(options: Options, endpoint: str | None = None) -> DeploySpecs:
    """A deploy spec for every selected variant the build pushed (build/manifest.json), written to
    build/deploy/<variant>.json; and the selected variants not built. Sizes the manifest lacks (an
    image built earlier elsewhere) are measured from the registry's layers."""
    checked = plan_and_check(options)
    pushed = pushed_images(options.build_dir)
    specs: list[DeploySpec] = []
    problems: list[Problem] = []
    missing: list[str] = []
    client = HttpRegistry()
    margin = float(policy.option(checked.plan.matrix, "container_disk_margin"))
    for variant in checked.variants:
        image = pushed.get(variant.name)
        if image is None:
            missing.append(variant.name)
            continue
        image = measured(image, client, options.cache_dir)
        try:
            specs.append(deploy_spec(variant, image, margin, endpoint))
        except DeploySpecError as exc:
            problems += exc.problems
    if problems:
        raise DeploySpecError(problems)
    if not specs:
        raise DeploySpecError(
            Problem(
                f"no selected variant was built: {', '.join(missing)}",
                Location(options.build_dir / "manifest.json"),
                hint="run buildtool build for it first",
            )
        )
    for spec in specs:
        write_spec(options.build_dir / "deploy", spec)
    return DeploySpecs(specs, missing)


def deploy(options: Options, endpoint: str, api_url: str, api_key: str | None) -> Deployed:
    """Send one variant's spec to RunPod (the one --select names, else the default variant); without
    a key, or with --dry-run, send nothing. Returns what RunPod answered to each request."""
    checked = plan_and_check(options)
    names = [v.name for v in checked.variants]
    if options.select and len(names) != 1:
        raise SelectionError(
            Problem(
                f"deploy sends one variant; --select matches {len(names)}: {', '.join(names)}",
                hint="narrow --select to one variant",
            )
        )
    name = names[0] if options.select else checked.plan.default_variant
    if name is None:
        raise SelectionError(Problem("no variant to deploy", hint="--select one, or set default_variant"))
    specs, _ = deploy_specs(replace(options, select=(name,)), endpoint)
    spec = specs[0]
    if api_key is None or options.dry_run:
        return Deployed(spec, [])
    api = RunPodApi(api_key, api_url)
    # The catalog first: a pool that changed since facts.py was written refuses the deploy before a
    # template exists, not after an endpoint is up on cards the image was never tested on.
    [variant] = [v for v in checked.variants if v.name == name]
    problems = catalog_problems(variant, spec, api.gpu_catalog(spec.variant))
    if problems:
        raise DeployError(problems)
    return Deployed(spec, [api.send(request, spec.variant) for request in spec.requests])
