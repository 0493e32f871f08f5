"""Command line: the only place that turns errors into messages and exit codes.

python -m buildtool plan   [--select PATTERN] [--json]
python -m buildtool check  [--select PATTERN]
python -m buildtool render [--select PATTERN] [--registry R] [--commit SHA] [--build-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from buildtool import api
from buildtool.errors import BuildtoolError, Problem
from buildtool.naming import Revision
from buildtool.policy import CheckedPlan, Finding

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
    print(f"::{level} {','.join(props)}::{text}", file=sys.stdout, flush=True)


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


def plan_json(checked: CheckedPlan) -> dict[str, Any]:
    """The GitHub Actions matrix (`strategy.matrix: ${{ fromJSON(...) }}`): one include entry per variant."""
    entries = []
    for cv in checked.variants:
        v = cv.variant
        entries.append(
            {
                "variant": cv.name,
                "image": v.image.name,
                "base": v.base.name,
                "base_ref": v.base.ref,
                "torch": v.base.torch,
                "cuda": v.base.cuda,
                "gpus": [g.name for g in cv.targets],
                "runpod_gpu_ids": [g.runpod_id for g in cv.targets],
                "archs": list(cv.archs),
                "flash_attention": list(cv.flash_attention),
                "default": cv.name == checked.plan.default_variant,
                "refused_gpus": [
                    {"gpu": r.gpu.name, "arch": r.gpu.arch, "reason": r.reason} for r in cv.refused
                ],
            }
        )
    return {"include": entries}


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

    parser = argparse.ArgumentParser(
        prog="buildtool", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("plan", parents=[common], help="expand the matrix and show the variants")
    p.add_argument("--json", action="store_true", help="print the GitHub Actions matrix as JSON")
    sub.add_parser("check", parents=[common, rendering], help="plan + every policy, nothing written")
    sub.add_parser(
        "render",
        parents=[common, rendering],
        help="plan + check + write build/<variant>/ and build/docker-bake.json",
    )
    return parser


def _select(args: argparse.Namespace) -> tuple[str, ...]:
    return tuple(p.strip() for value in args.select for p in value.split(",") if p.strip())


def _revision(args: argparse.Namespace) -> Revision | None:
    return Revision(args.commit, dirty=False) if getattr(args, "commit", None) else None


def run(args: argparse.Namespace) -> int:
    matrix_path: Path = args.matrix
    if args.command == "plan":
        checked = api.plan_and_check(matrix_path, _select(args))
        if args.json:
            print(json.dumps(plan_json(checked), indent=2, sort_keys=True))
        else:
            out.print(*plan_tables(checked))
        report_findings(checked.warnings)
        return 0
    options = api.RenderOptions(registry=args.registry, revision=_revision(args), build_dir=args.build_dir)
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
