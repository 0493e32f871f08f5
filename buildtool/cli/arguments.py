"""The command line's arguments: one parser, its subcommands and their options (main.py runs them)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

KERNELS_LOCAL_HELP = (
    "a directory with one subdirectory per kernel of the images' kernels lock, baked instead of "
    "fetching from the Hub (offline builds); passed as the named build context kernels-local"
)


def parser() -> argparse.ArgumentParser:
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

    top = argparse.ArgumentParser(
        prog="buildtool",
        description="Build, check, smoke-test and release GPU container images for RunPod pods and "
        "serverless workers, from matrix.yaml.",
    )
    sub = top.add_subparsers(dest="command", required=True)
    _plan_commands(sub, common, rendering)
    _build_command(sub, common)
    _smoke_command(sub, common)
    results = _results_option()
    _release_command(sub, common, results)
    _lock_commands(sub, common)
    _reference_commands(sub, common)
    _deploy_commands(sub, common)
    _report_command(sub, common, results)
    return top


def _plan_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
    rendering: argparse.ArgumentParser,
) -> None:
    """plan, check, render: the stages up to the rendering."""
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
    p.add_argument(
        "--changed-since",
        metavar="REV",
        help="only the variants a change since commit REV affects: those whose build context, build "
        "args or base differ when each side is rendered from its commit (all of them when buildtool/ "
        "or matrix.lock changed); why each is affected goes to stderr",
    )
    sub.add_parser("check", parents=[common, rendering], help="plan + every policy, nothing written")
    sub.add_parser(
        "render",
        parents=[common, rendering],
        help="plan + check + write build/<variant>/ and build/docker-bake.json",
    )


def _build_command(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """build: render, bake, push, verify, move tags."""
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
        "--cold",
        action="store_true",
        help="build as a new user's first run does: BuildKit's build cache unused, the registry cache "
        "not read, an empty layer cache; implies --rebuild (the weekly from-nothing workflow)",
    )
    b.add_argument(
        "--check-reproducible",
        action="store_true",
        help="then rebuild each variant from nothing (no build cache, no registry cache) and compare "
        "digests; say which layer and files differ",
    )


def _smoke_command(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """smoke: the suite inside each built image."""
    s = sub.add_parser("smoke", parents=[common], help="run the smoke suite inside each built image")
    s.add_argument("--build-dir", type=Path, help="default: build/ next to matrix.yaml")
    s.add_argument("--quick", action="store_true", help="one sequence length and dtype per attention shape")
    s.add_argument(
        "--bench",
        action="store_true",
        help="also benchmark forward attention at the FlashAttention-3 paper's shapes (python -m smoke "
        "--bench; with --quick, small shapes)",
    )
    s.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="PATTERN",
        help="run only the smoke checks whose names match (python -m smoke --only): fnmatch, or a "
        "group such as 'attention.sdpa'; repeatable or comma-separated",
    )
    s.add_argument(
        "--budget",
        type=positive_seconds,
        metavar="SECONDS",
        help="per image: start no check or benchmark shape after this many seconds, report the rest "
        "skipped (python -m smoke --budget); leave headroom under a job's timeout",
    )


def _results_option() -> argparse.ArgumentParser:
    """--results, shared by the commands that read smoke results."""
    results = argparse.ArgumentParser(add_help=False)
    results.add_argument(
        "--results",
        type=Path,
        nargs="+",
        default=[],
        help="smoke result files (default: build/smoke/*.json and reports/samples/*.json)",
    )
    return results


def _release_command(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
    results: argparse.ArgumentParser,
) -> None:
    """release: promote tested digests."""
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


def _report_command(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
    results: argparse.ArgumentParser,
) -> None:
    """report: smoke results -> compatibility report."""
    rep = sub.add_parser(
        "report", parents=[common, results], help="smoke results -> compatibility report per GPU"
    )
    rep.add_argument("--out", type=Path, help="directory for compat.md, .json, .html (default: reports/)")
    rep.add_argument("--build-dir", type=Path, help="default: build/ next to matrix.yaml")


def _deploy_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """deploy-spec and deploy: RunPod."""
    ds = sub.add_parser(
        "deploy-spec",
        parents=[common],
        help="RunPod API v2 request bodies per built variant (template + endpoint or pod), by digest, "
        "with the container disk sized from the built image: build/deploy/<variant>.json",
    )
    ds.add_argument(
        "--build-dir", type=Path, help="default: build/ next to matrix.yaml (reads manifest.json)"
    )
    dp = sub.add_parser(
        "deploy",
        parents=[common],
        help="send one variant's deploy spec to RunPod with $RUNPOD_API_KEY (without it: print what "
        "would be sent)",
    )
    dp.add_argument("--endpoint", required=True, metavar="NAME", help="the endpoint's (or pod's) name")
    dp.add_argument(
        "--build-dir", type=Path, help="default: build/ next to matrix.yaml (reads manifest.json)"
    )
    dp.add_argument("--dry-run", action="store_true", help="print the requests, send nothing")
    dp.add_argument("--api-url", help="RunPod's API (default: $RUNPOD_API_URL, else https://api.runpod.io)")


def _lock_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """lock and lock-deps: what moving names resolve to today."""
    lk = sub.add_parser(
        "lock",
        parents=[common],
        help="record in matrix.lock the digest each base tag resolves to (build --locked builds FROM it) "
        "and the commit each kernel revision names on the Hub (every build bakes it)",
    )
    only = lk.add_mutually_exclusive_group()
    only.add_argument(
        "--bases-only", action="store_true", help="resolve the bases, keep the kernels recorded"
    )
    only.add_argument(
        "--kernels-only", action="store_true", help="resolve the kernels, keep the bases recorded"
    )
    d = sub.add_parser(
        "lock-deps",
        parents=[common],
        help="lock each image's Python dependencies (requirements.in -> requirements.lock, with hashes)",
    )
    d.add_argument(
        "--image", action="append", default=[], help="only this image (repeatable; default: every image)"
    )
    d.add_argument(
        "--upgrade",
        action="store_true",
        help="take the newest releases that fit requirements.in (default: keep the locked versions "
        "that still fit, and resolve only what changed)",
    )


def _reference_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """rules and schema: what the code declares."""
    sub.add_parser(
        "rules",
        parents=[common],
        help="list the policy rules: name, scope, what each prevents, and its options",
    )
    sc = sub.add_parser(
        "schema",
        parents=[common],
        help="print matrix.yaml's JSON Schema (editor completion); --write updates schema/matrix.schema.json",
    )
    sc.add_argument("--write", action="store_true", help="write it next to the matrix, atomically")


def positive_seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return seconds
