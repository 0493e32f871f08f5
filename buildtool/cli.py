"""Command line: the only place that turns errors into messages and exit codes.

buildtool plan     expand the matrix; --json for the GitHub Actions matrix
buildtool check    every policy, over the plan and the rendered Dockerfiles; writes nothing
buildtool render   build/<variant>/ and build/docker-bake.json
buildtool build    render, then build, push and verify each variant; move tags last
buildtool lock     the digest each base tag resolves to, in matrix.lock (build --locked reads it)
buildtool lock-deps  each image's Python dependencies, locked with hashes (requirements.lock)
buildtool smoke    the smoke suite inside each built image
buildtool report   smoke results -> compatibility report per GPU
buildtool release  promote the tagged commit's tested digests to X.Y.Z, X.Y, X
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from buildtool.errors import BuildError, BuildtoolError, ConfigError, Location, Problem, SelectionError

if TYPE_CHECKING:
    from rich.live import Live

    from buildtool.build import BuildEvent, BuildResult
    from buildtool.naming import Revision
    from buildtool.policy import CheckedPlan, Finding

# The stages (api and what it imports: jinja2, yaml, docker, ...) are imported by the commands
# that run them, so that `buildtool --help` and a mistyped option answer at once.

KERNELS_LOCAL_HELP = (
    "a directory with one subdirectory per kernel of the images' kernels lock, baked instead of "
    "fetching from the Hub (offline builds); passed as the named build context kernels-local"
)
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def _in_github_actions() -> bool:
    return os.environ.get("GITHUB_ACTIONS") == "true"


def _annotate(level: str, problem: Problem) -> None:
    """GitHub Actions workflow command, so the problem shows on the file and line in the PR."""
    if not _in_github_actions():
        return
    props = []
    if problem.location:
        props.append(f"file={problem.location.file}")
        if problem.location.line:
            props.append(f"line={problem.location.line}")
    text = problem.render().replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    # stderr: GitHub reads workflow commands from both streams, and stdout stays machine-readable.
    print(f"::{level} {','.join(props)}::{text}", file=sys.stderr, flush=True)


def report_problem(level: str, problem: Problem) -> None:
    colour = "red" if level == "error" else "yellow"
    err.print(f"[{colour}]{level}[/{colour}]: {escape(problem.render())}", markup=True, highlight=False)
    _annotate(level, problem)


def report_findings(findings: Sequence[Finding]) -> None:
    for finding in findings:
        report_problem(finding.severity, finding.problem)


def plan_tables(checked: CheckedPlan) -> list[Table]:
    """Variants, then each refused GPU once with its reason (reasons are long and repeat)."""
    table = Table(title=f"{len(checked.variants)} variant(s) from {checked.plan.matrix.path}")
    for column in ("variant", "base", "torch", "GPU targets", "FA", "refused"):
        table.add_column(column, overflow="fold")
    refusals: dict[tuple[str, str, str], list[str]] = {}
    for cv in checked.variants:
        for r in cv.refused:
            refusals.setdefault((r.gpu.name, r.gpu.arch, r.reason), []).append(cv.name)
        table.add_row(
            cv.name,
            cv.variant.base.ref,
            cv.variant.base.torch or "-",
            " ".join(g.name for g in cv.targets),
            ",".join(f"FA{v}" for v in cv.flash_attention) or "-",
            " ".join(r.gpu.name for r in cv.refused) or "-",
        )
    tables = [table]
    if refusals:
        refused = Table(title="refused GPU targets")
        for column in ("GPU", "arch", "reason", "variants"):
            refused.add_column(column, overflow="fold")
        for (gpu, arch, reason), names in refusals.items():
            every = len(names) == len(checked.variants)
            refused.add_row(gpu, arch, reason, "all" if every else " ".join(names))
        tables.append(refused)
    return tables


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--matrix", type=Path, default=Path("matrix.yaml"), help="default: ./matrix.yaml")
    common.add_argument(
        "--select",
        action="append",
        default=[],
        metavar="PATTERN",
        help="only variants matching this shell pattern, e.g. 'worker-*cu130*' (repeatable)",
    )
    common.add_argument("--debug", action="store_true", help="show tracebacks")
    rendering = argparse.ArgumentParser(add_help=False)
    rendering.add_argument(
        "--registry",
        help="image registry, e.g. ghcr.io/org (default: $REGISTRY, then matrix.yaml's registry)",
    )
    rendering.add_argument(
        "--commit", help="git sha to label and tag with (default: HEAD of the matrix's repo)"
    )
    rendering.add_argument("--build-dir", type=Path, help="default: build/ next to matrix.yaml")
    rendering.add_argument("--kernels-local", type=Path, help=KERNELS_LOCAL_HELP)

    parser = argparse.ArgumentParser(
        prog="buildtool",
        description="Build, check, smoke-test and release GPU container images for RunPod pods and "
        "serverless workers, from matrix.yaml.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("plan", parents=[common], help="expand the matrix and show the variants")
    p.add_argument("--json", action="store_true", help="print the GitHub Actions matrix as JSON")
    p.add_argument(
        "--per-gpu",
        action="store_true",
        help="with --json: one entry per variant and GPU target, with its self-hosted runner labels",
    )
    p.add_argument(
        "--github-output",
        action="store_true",
        help="in a GitHub Actions step: write both matrices (outputs matrix and smoke-matrix) to "
        "$GITHUB_OUTPUT, where nothing else printed can reach them",
    )
    sub.add_parser("check", parents=[common, rendering], help="plan + every policy, nothing written")
    sub.add_parser(
        "render",
        parents=[common, rendering],
        help="plan + check + write build/<variant>/ and build/docker-bake.json",
    )
    b = sub.add_parser(
        "build", parents=[common], help="render, then build, push and verify each variant; move tags last"
    )
    b.add_argument("--default", action="store_true", help="only the matrix's default_variant")
    b.add_argument(
        "--registry",
        help="e.g. ghcr.io/org (default: $REGISTRY, matrix.yaml's registry, else an embedded "
        "registry:2 on localhost:5000 that buildtool starts)",
    )
    b.add_argument("--build-dir", type=Path, help="default: build/ next to matrix.yaml")
    b.add_argument("--kernels-local", type=Path, help=KERNELS_LOCAL_HELP)
    b.add_argument(
        "--locked",
        action="store_true",
        help="build FROM the base digests recorded in matrix.lock (buildtool lock writes it)",
    )
    b.add_argument(
        "--allow-dirty",
        action="store_true",
        help="with uncommitted changes, push mutable <base>-<sha>-dirty tags instead of refusing",
    )
    b.add_argument("--jobs", type=int, default=2, help="variants built at once (default 2)")
    b.add_argument(
        "--rebuild",
        action="store_true",
        help="build even when the registry already holds the commit's immutable tag (the digest must "
        "then be the same)",
    )
    b.add_argument(
        "--check-reproducible",
        action="store_true",
        help="then rebuild each variant from nothing (no build cache, no registry cache) and compare "
        "digests; say which layer and files differ",
    )
    s = sub.add_parser("smoke", parents=[common], help="run the smoke suite inside each built image")
    s.add_argument("--build-dir", type=Path, help="default: build/ next to matrix.yaml")
    s.add_argument("--quick", action="store_true", help="one sequence length and dtype per attention shape")
    results = argparse.ArgumentParser(add_help=False)
    results.add_argument(
        "--results",
        type=Path,
        nargs="+",
        default=[],
        help="smoke result files (default: build/smoke/*.json and reports/samples/*.json)",
    )
    r = sub.add_parser(
        "release",
        parents=[common, results],
        help="promote the tagged commit's tested digests to X.Y.Z, X.Y, X",
    )
    r.add_argument("tag", help="the release tag, vX.Y.Z")
    r.add_argument("--registry", help="default: $REGISTRY, matrix.yaml's registry, else localhost:5000")
    r.add_argument("--commit", help="the commit whose images to promote (default: the one the git tag names)")
    r.add_argument("--build-dir", type=Path, help="default: build/ next to matrix.yaml")
    r.add_argument("--dry-run", action="store_true", help="print what would move; move nothing")
    sub.add_parser(
        "lock",
        parents=[common],
        help="record the digest each base tag resolves to in matrix.lock (build --locked reads it)",
    )
    d = sub.add_parser(
        "lock-deps",
        parents=[common],
        help="lock each image's Python dependencies (requirements.in -> requirements.lock, with hashes)",
    )
    d.add_argument(
        "--image", action="append", default=[], help="only this image (repeatable; default: every image)"
    )
    rep = sub.add_parser(
        "report", parents=[common, results], help="smoke results -> compatibility report per GPU"
    )
    rep.add_argument("--out", type=Path, help="directory for compat.md, .json, .html (default: reports/)")
    rep.add_argument("--build-dir", type=Path, help="default: build/ next to matrix.yaml")
    return parser


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


def run(args: argparse.Namespace) -> int:
    from buildtool import api, github

    matrix_path: Path = args.matrix
    if args.command == "plan":
        checked = api.plan_and_check(matrix_path, _select(args))
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
        return run_build(args)
    if args.command == "lock":
        path, digests = api.lock_bases(matrix_path, _select(args))
        for ref, digest in sorted(digests.items()):
            out.print(f"{ref}  {digest}")
        out.print(f"wrote {path}")
        return 0
    if args.command == "lock-deps":
        for path in api.lock_dependencies(matrix_path, tuple(args.image)):
            out.print(f"wrote {path}")
        return 0
    if args.command == "smoke":
        return run_smoke(args)
    if args.command == "release":
        return run_release(args)
    if args.command == "report":
        out_dir = args.out or args.matrix.parent / "reports"
        built, written = api.report(args.matrix, out_dir, tuple(args.results), args.build_dir, _select(args))
        out.print(
            f"{len(built.rows)} GPU row(s) x {len(built.variants)} variant(s) from "
            f"{len(built.sources)} result(s)"
        )
        for path in written:
            out.print(f"wrote {path}")
        return 0
    options = api.RenderOptions(
        registry=args.registry,
        revision=_revision(args),
        build_dir=args.build_dir,
        kernels_local=args.kernels_local,
    )
    if args.command == "check":
        checked, _rendering = api.check(matrix_path, _select(args), options)
        out.print(*plan_tables(checked))
        report_findings(checked.warnings)
        out.print(f"[green]ok[/green]: {len(checked.variants)} variant(s) pass every policy")
        return 0
    checked, rendering = api.render(matrix_path, _select(args), options)
    report_findings(checked.warnings)
    build_dir = api.build_dir_for(matrix_path, options)
    for variant in rendering.variants:
        out.print(f"rendered {build_dir / variant.name}/Dockerfile  ->  {variant.tags.immutable}")
    out.print(f"wrote {build_dir / 'docker-bake.json'} ({len(rendering.variants)} target(s))")
    return 0


def run_build(args: argparse.Namespace) -> int:
    from buildtool import api

    select = _select(args)
    if args.default:
        default = api.plan_and_check(args.matrix).plan.default_variant
        if default is None:
            raise ConfigError(
                Problem(
                    "--default, but the matrix names no default_variant",
                    Location(args.matrix),
                    hint="add default_variant: <variant> to it",
                )
            )
        select = (default,)
    options = api.BuildRunOptions(
        api.RenderOptions(registry=args.registry, build_dir=args.build_dir, kernels_local=args.kernels_local),
        locked=args.locked,
        allow_dirty=args.allow_dirty,
        jobs=args.jobs,
        rebuild=args.rebuild,
    )
    with BuildDisplay(out) as display:
        result = api.build(args.matrix, select, options, display.event, out.print)
    out.print(results_table(result))
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
    problems = [
        Problem(v.error or "failed", variant=v.variant, hint=v.hint) for v in result.variants if not v.ok
    ]
    problems += [Problem(e) for e in result.errors]
    if args.check_reproducible:
        for check in api.check_reproducible(
            args.matrix,
            result,
            options,
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
    if not problems:
        return 0
    raise BuildError(problems)


def run_release(args: argparse.Namespace) -> int:
    from buildtool import api

    options = api.ReleaseOptions(
        registry=args.registry,
        commit=args.commit,
        results=tuple(args.results),
        dry_run=args.dry_run,
        build_dir=args.build_dir,
    )
    plan, moved, unchanged = api.release(args.matrix, args.tag, options, _select(args))
    table = Table(
        title=f"release {plan.version} of {plan.revision[:12]}" + (" (dry run)" if args.dry_run else "")
    )
    for column in ("variant", "digest", "tags", "CUDA", "driver >=", "allowedCudaVersions"):
        table.add_column(column, overflow="fold")
    for p in plan.promotions:
        tags = "\n".join(t.rsplit("/", 1)[-1] for t in p.tags)
        table.add_row(
            p.variant,
            p.digest[:19],
            tags,
            p.floor.cuda or "-",
            p.floor.driver or "-",
            ",".join(p.floor.allowed_cuda_versions) or "-",
        )
    out.print(table)
    if args.dry_run:
        out.print(f"would point {sum(len(p.tags) for p in plan.promotions)} tag(s); nothing moved")
    else:
        out.print(f"moved {len(moved)} tag(s), {len(unchanged)} already in place")
    if plan.refusals:
        raise BuildError(
            Problem(
                f"not promoted: {r.reason}",
                variant=r.variant,
                hint="build it for this commit and pass its smoke suite",
            )
            for r in plan.refusals
        )
    return 0


def run_smoke(args: argparse.Namespace) -> int:
    from buildtool import smoke_runner

    build_dir = args.build_dir or args.matrix.parent / "build"
    where = "on the GPU" if smoke_runner.host_has_gpu() else "on the CPU (no NVIDIA GPU here)"
    outcomes = smoke_runner.smoke(
        build_dir,
        _select(args),
        quick=args.quick,
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


def results_table(result: BuildResult) -> Table:
    table = Table(title=f"{result.registry} @ {result.revision[:12]}{' (dirty)' if result.dirty else ''}")
    for column in ("variant", "status", "digest", "size", "seconds", "cached steps"):
        table.add_column(column, overflow="fold")
    for v in result.variants:
        colour = {"pushed": "green", "unchanged": "cyan", "built-earlier": "cyan", "failed": "red"}[v.status]
        size = f"{v.compressed_size / 1e6:.1f} MB" if v.compressed_size else "-"
        table.add_row(
            v.variant,
            f"[{colour}]{v.status}[/{colour}]",
            (v.digest or "-")[:19],
            size,
            f"{v.build_seconds:.1f}",
            f"{v.cached_steps}/{v.steps}" if v.steps else "-",
        )
    return table


class BuildDisplay:
    """Progress per variant: a live table on a terminal, one line per phase change otherwise (CI logs)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.lock = threading.Lock()
        self.rows: dict[str, BuildEvent] = {}
        self.live: Live | None = None

    def __enter__(self) -> BuildDisplay:
        if self.console.is_terminal:
            from rich.live import Live

            self.live = Live(self._table(), console=self.console, refresh_per_second=4, transient=True)
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.__exit__(None, None, None)

    def event(self, event: BuildEvent) -> None:
        with self.lock:
            previous = self.rows.get(event.variant)
            self.rows[event.variant] = event
            if self.live is not None:
                self.live.update(self._table())
            elif previous is None or previous.phase != event.phase:
                self.console.print(f"{event.variant}: {event.phase} {event.detail}", markup=False)

    def _table(self) -> Table:
        table = Table(box=None)
        for column in ("variant", "phase", "steps", "now"):
            table.add_column(column, overflow="ellipsis", no_wrap=True)
        for name, e in self.rows.items():
            p = e.progress
            steps = f"{p.steps_done}/{p.steps_total} ({p.cached} cached)" if p else ""
            table.add_row(name, e.phase, steps, escape(e.detail[-60:]))
        return table


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
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
