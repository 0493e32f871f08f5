"""The library API, kept apart from the CLI: each function runs the pipeline up to one stage, and
reads one Options (options.py), resolved once by its caller.

matrix -> plan -> policy -> render -> build -> smoke -> report -> release
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from buildtool import refs, reproduce
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
from buildtool.lock import read_lock, read_lock_file
from buildtool.matrix import load_matrix
from buildtool.naming import Revision, current_revision, revision_of, tag_commit
from buildtool.oci import OciImage
from buildtool.options import Options
from buildtool.plan import CheckedPlan, make_plan
from buildtool.policy import check_image, check_plan
from buildtool.registry import HttpRegistry
from buildtool.release import ReleasePlan, plan_release, promote, release_document
from buildtool.render import check_rendering, context_sources, reaches_context, render_checked
from buildtool.render import render as render_in_memory
from buildtool.rendering import Rendering
from buildtool.report import Report, build_report, to_html, to_json, to_markdown
from buildtool.reproduce import Reproduction


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


def check(options: Options) -> tuple[CheckedPlan, Rendering]:
    """Everything render does except writing: plan policies and rendered-Dockerfile policies."""
    checked = plan_and_check(options)
    revision = options.revision or Revision("0" * 40, dirty=False)  # content checks need no real commit
    rendering = render_in_memory(checked, revision, options.registry_for(checked.plan.matrix)[0])
    errors = [f for f in check_rendering(rendering, checked, options.build_dir) if f.severity == "error"]
    if errors:
        raise PolicyError(f.problem for f in errors)
    return checked, rendering


def render(options: Options) -> tuple[CheckedPlan, Rendering]:
    _check_kernels_local(options)
    checked = plan_and_check(options)
    rendering = render_checked(
        checked,
        options.revision or current_revision(options.root),
        options.registry_for(checked.plan.matrix)[0],
        options.build_dir,
        options.kernels_local,
    )
    return checked, rendering


def build(
    options: Options,
    on_event: Callable[[BuildEvent], None] = lambda _: None,
    on_note: Callable[[str], None] = lambda _: None,
) -> BuildResult:
    """render -> build -> push -> verify -> move tags, with the buildx engine and imagetools registry."""
    _check_kernels_local(options)
    checked = plan_and_check(options)
    root = options.root
    revision = options.revision or current_revision(root, context_sources(checked.plan), reaches_context)
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
    return build_rendering(
        rendering, options, BuildxEngine(), HttpRegistry(), on_event, image_policy(checked)
    )


def image_policy(checked: CheckedPlan) -> Callable[[OciImage], list[Problem]]:
    """The image-scope rules, bound to the plan: what the build stage runs on each built image."""
    by_name = {cv.name: cv for cv in checked.variants}

    def check(built: OciImage) -> list[Problem]:
        findings = check_image(built, by_name[built.variant], checked.plan.matrix)
        return [f.problem for f in findings if f.severity == "error"]

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


def release(options: Options, tag: str) -> tuple[ReleasePlan, list[str], list[str]]:
    """Plan the promotion of the tagged commit's digests and, unless a dry run, move the tags."""
    checked = plan_and_check(options)
    root = options.root
    sha = options.commit or tag_commit(root, tag)
    revision = revision_of(root, sha) if sha else current_revision(root)
    registry_address, _ = options.registry_for(checked.plan.matrix)
    client = HttpRegistry()
    try:
        plan = plan_release(tag, revision, checked, registry_address, client, options.result_paths())
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
        options.build_dir / "release.json", json.dumps(document, indent=2, sort_keys=True) + "\n"
    )
    return plan, moved, unchanged


def report(options: Options, out_dir: Path) -> tuple[Report, list[Path]]:
    """The compatibility report, written as compat.md, compat.json and compat.html under out_dir."""
    checked = plan_and_check(options)
    built = build_report(checked, options.result_paths())
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
