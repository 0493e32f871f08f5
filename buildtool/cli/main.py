"""Command line: the only place that turns errors into messages and exit codes.

buildtool plan     expand the matrix; --json for the GitHub Actions matrix
buildtool check    every policy, over the plan and the rendered Dockerfiles; writes nothing
buildtool render   build/<variant>/ and build/docker-bake.json
buildtool build    render, then build, push and verify each variant; move tags last
buildtool lock     base digests and kernel commits, in matrix.lock (builds bake the commits)
buildtool lock-deps  each image's Python dependencies, locked with hashes (requirements.lock)
buildtool schema   matrix.yaml's JSON Schema, for editors (schema/matrix.schema.json)
buildtool rules    the policy rules, their scopes and options
buildtool smoke    the smoke suite inside each built image
buildtool report   smoke results -> compatibility report per GPU
buildtool release  promote the tagged commit's tested digests to X.Y.Z, X.Y, X
buildtool deploy-spec  RunPod API v2 request bodies per built variant (deploy.py)
buildtool deploy   send one variant's spec to RunPod with $RUNPOD_API_KEY
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rich.markup import escape
from rich.table import Table

from buildtool.cli.arguments import parser
from buildtool.cli.display import (
    BuildDisplay,
    err,
    out,
    plan_tables,
    report_findings,
    report_problem,
    results_table,
)
from buildtool.errors import (
    BuildError,
    BuildtoolError,
    ConfigError,
    Location,
    PolicyError,
    Problem,
    SelectionError,
)

if TYPE_CHECKING:
    from buildtool.config.options import Options
    from buildtool.naming import Revision

# The stages (api and what it imports: jinja2, yaml, docker, ...) are imported by the commands
# that run them, so that `buildtool --help` and a mistyped option answer at once.


def _select(args: argparse.Namespace) -> tuple[str, ...]:
    patterns = tuple(p.strip() for value in args.select for p in value.split(","))
    if any(not p for p in patterns):
        raise SelectionError(
            Problem(
                f"--select {' '.join(repr(v) for v in args.select)} has an empty pattern, which would "
                "quietly select every variant",
                hint="give a pattern such as 'worker-*', or leave --select out to select every variant",
            )
        )
    return patterns


def _revision(args: argparse.Namespace) -> Revision | None:
    from buildtool.naming import revision_of

    if not getattr(args, "commit", None):
        return None
    return revision_of(args.matrix.resolve().parent, args.commit)


def options_from(args: argparse.Namespace) -> Options:
    """The one Options of this run, from the arguments its command has."""
    from buildtool.config.options import Options

    release = args.command == "release"
    return Options.for_matrix(
        args.matrix,
        getattr(args, "build_dir", None),
        select=_select(args),
        registry=getattr(args, "registry", None),
        revision=None if release else _revision(args),
        kernels_local=getattr(args, "kernels_local", None),
        results=tuple(getattr(args, "results", None) or ()),
        locked=getattr(args, "locked", False),
        allow_dirty=getattr(args, "allow_dirty", False),
        jobs=getattr(args, "jobs", 2),
        rebuild=getattr(args, "rebuild", False),
        cold=getattr(args, "cold", False),
        commit=args.commit if release else None,
        dry_run=getattr(args, "dry_run", False),
    )


def run(args: argparse.Namespace) -> int:
    from buildtool import api
    from buildtool.cli import github
    from buildtool.locks import commands

    matrix_path: Path = args.matrix
    options = options_from(args)
    if args.command == "plan":
        if args.changed_since:
            checked, affected = api.changed_since(options, args.changed_since)
            for a in affected:
                err.print(f"affected: {a.variant}: {a.why}", markup=False, highlight=False)
            if not affected:
                err.print(f"no variant is affected by the changes since {args.changed_since}", markup=False)
        else:
            checked = api.plan_and_check(options)
        if args.github_output:
            path = github.write_outputs(github.outputs_for(checked))
            err.print(f"wrote {', '.join(github.OUTPUT_NAMES)} to {path}", markup=False)
        elif args.json:
            document = github.matrix(checked, "smoke-matrix" if args.per_gpu else "matrix")
            print(json.dumps(document, indent=2, sort_keys=True))
        else:
            out.print(*plan_tables(checked))
        report_findings(checked.warnings)
        return 0
    if args.command == "build":
        from buildtool.build_dir import exclusive

        if not args.check_reproducible:
            return run_build(args, options)
        # One hold for the build and its reproducibility check: no other run switches the
        # rendering between them (api.build's own hold is the same one).
        with exclusive(options.build_dir, out.print):
            return run_build(args, options)
    if args.command == "lock":
        path, locked = commands.lock(matrix_path, _select(args), not args.kernels_only, not args.bases_only)
        for ref, digest in sorted(locked.bases.items()):
            out.print(f"{ref}  {digest}")
        for (repo_id, revision), commit in sorted(locked.kernels.items()):
            out.print(f"{repo_id}@{revision}  {commit}")
        out.print(f"wrote {path}")
        return 0
    if args.command == "rules":
        from buildtool.policy import OPTIONS, RULES, SCOPES

        table = Table(title=f"{len(RULES)} policy rules")
        for column in ("rule", "scope", "why", "options"):
            table.add_column(column, overflow="fold")
        for r in sorted(RULES.values(), key=lambda r: SCOPES.index(r.scope)):
            settings = ", ".join(f"{o} ({OPTIONS[o].kind.__name__})" for o in r.options) or "-"
            table.add_row(r.name, r.scope, r.reason, settings)
        out.print(table)
        return 0
    if args.command == "schema":
        from buildtool.config.schema import SCHEMA_PATH, schema_text
        from buildtool.files import write_atomically

        if not args.write:
            out.print(schema_text(), end="", markup=False, highlight=False, soft_wrap=True)
            return 0
        target = args.matrix.resolve().parent / SCHEMA_PATH
        write_atomically(target, schema_text())
        out.print(f"wrote {target}")
        return 0
    if args.command == "lock-deps":
        for path in commands.lock_dependencies(matrix_path, tuple(args.image), args.upgrade):
            out.print(f"wrote {path}")
        return 0
    if args.command == "smoke":
        return run_smoke(args, options)
    if args.command in ("release", "deploy-spec", "deploy"):
        from buildtool.cli import deploy

        return deploy.run(args, options)
    if args.command == "report":
        out_dir = args.out or args.matrix.parent / "reports"
        from buildtool.report.compat import to_markdown

        built, written = api.report(options, out_dir)
        github.append_step_summary(to_markdown(built))
        out.print(
            f"{len(built.rows)} GPU row(s) x {len(built.variants)} variant(s) from "
            f"{len(built.sources)} result(s)"
        )
        for path in written:
            out.print(f"wrote {path}")
        return 0
    if args.command == "check":
        checked, _rendering = api.check(options)
        out.print(*plan_tables(checked))
        report_findings(checked.warnings)
        out.print(f"[green]ok[/green]: {len(checked.variants)} variant(s) pass every policy")
        return 0
    checked, rendering = api.render(options, out.print)
    report_findings(checked.warnings)
    build_dir = options.build_dir
    for variant in rendering.variants:
        out.print(f"rendered {build_dir / variant.name}/Dockerfile  ->  {variant.tags.immutable}")
    out.print(f"wrote {build_dir / 'docker-bake.json'} ({len(rendering.variants)} target(s))")
    return 0


def run_build(args: argparse.Namespace, options: Options) -> int:
    from buildtool import api
    from buildtool.cli import github

    if args.default:
        default = api.plan_and_check(options.but(select=())).plan.default_variant
        if default is None:
            raise ConfigError(
                Problem(
                    "--default, but the matrix names no default_variant",
                    Location(args.matrix),
                    hint="add default_variant: <variant> to it",
                )
            )
        options = options.but(select=(default,))
    with BuildDisplay(out) as display:
        result = api.build(options, display.event, out.print)
    out.print(results_table(result))
    github.append_step_summary(github.build_summary(result))
    for variant in result.variants:
        if variant.status == "built-earlier":
            when = f", from the commit of {variant.created}" if variant.created else ""
            out.print(
                f"{variant.variant}: {variant.immutable_tag} is already in the registry "
                f"({variant.digest}{when}); not rebuilt (--rebuild to build it again)"
            )
    for variant in result.variants:
        for note in variant.notes:
            report_problem("warning", Problem(note, variant=variant.variant))
    if result.moved_tags:
        out.print("moved: " + ", ".join(result.moved_tags))
    if result.moving_tags_note:
        out.print(result.moving_tags_note)
    out.print(f"wrote {result.manifest_path}")
    refusals = [p for v in result.variants for p in v.refusals]
    problems = [
        v.problem or Problem("failed", variant=v.variant) for v in result.variants if v.status == "failed"
    ]
    problems += [Problem(e) for e in result.errors]
    if args.check_reproducible:
        for check in api.check_reproducible(
            options,
            result,
            lambda name: out.print(f"{name}: rebuilding from nothing to compare digests"),
        ):
            if check.reproducible:
                out.print(f"{check.variant}: {check.explain()}")
            else:
                problems.append(
                    Problem(
                        check.explain(),
                        variant=check.variant,
                        hint="make the differing step deterministic (README: Reproducible images)",
                    )
                )
    if not problems and not refusals:
        return 0
    if not problems:  # only policy refusals of built images: a finding, like every policy error
        raise PolicyError(refusals)
    raise BuildError(problems + refusals)


def run_smoke(args: argparse.Namespace, options: Options) -> int:
    from buildtool import smoke_runner
    from smoke.selection import split_patterns

    build_dir = options.build_dir
    where = "on the GPU" if smoke_runner.host_has_gpu() else "on the CPU (no NVIDIA GPU here)"
    outcomes = smoke_runner.smoke(
        build_dir,
        options.select,
        quick=args.quick,
        bench=args.bench,
        only=split_patterns(args.only),
        budget=args.budget,
        on_start=lambda image: out.print(f"smoke: {image.variant} {where}"),
    )
    table = Table(title=f"smoke results in {build_dir / 'smoke'}")
    for column in ("variant", "result", "pass", "fail", "skipped", "failed checks"):
        table.add_column(column, overflow="fold")
    for o in outcomes:
        verdict = "[green]pass[/green]" if o.passed else "[red]fail[/red]"
        table.add_row(
            o.variant,
            verdict,
            str(o.counts.get("pass", "-")),
            str(o.counts.get("fail", "-")),
            str(o.counts.get("skipped", "-")),
            escape(", ".join(o.failed_checks) or (o.error or "")),
        )
    out.print(table)
    failed = [o for o in outcomes if not o.passed]
    if not failed:
        return 0
    raise BuildError(
        Problem(o.error or f"failed: {', '.join(o.failed_checks)} (see {o.json_path})", variant=o.variant)
        for o in failed
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return run(args)
    except BuildtoolError as exc:
        if args.debug:
            raise
        for problem in exc.problems:
            report_problem("error", problem)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `buildtool plan --json | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:
        if args.debug:
            raise
        err.print(
            f"internal error: {type(exc).__name__}: {exc}\n  (run with --debug for the traceback, "
            "and report it)",
            markup=False,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
