"""python -m smoke: run the smoke suite here (inside an image, or on a bare GPU host).

Expectations come from the image's SMOKE_* environment; options override them. Writes
<out>/<variant>.json and .xml; exit code 0 when no check failed, 1 otherwise, 2 on bad options.
"""

from __future__ import annotations

import sys

# Before anything that an older Python cannot import: one line, not a traceback (bare hosts run
# whatever python3 they have; Ubuntu 22.04's is 3.10, which works).
if sys.version_info < (3, 10):  # noqa: UP036 - the point: an older python3 on a host
    sys.exit(
        f"python -m smoke needs Python 3.10 or newer; this is {sys.version.split()[0]} ({sys.executable})"
    )

import argparse
import json
from dataclasses import replace
from pathlib import Path

from smoke.budget import Budget
from smoke.expect import Expectations
from smoke.selection import Selection, split_patterns
from smoke.suite import check_names, run_suite


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m smoke", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", type=Path, default=Path("smoke-results"), help="directory for .json and .xml"
    )
    parser.add_argument("--variant", help="name for the result (default: $SMOKE_VARIANT, else 'host')")
    parser.add_argument("--torch", help="expected torch version, e.g. 2.11.0+cu130")
    parser.add_argument("--cuda", help="expected CUDA major.minor, e.g. 13.0")
    parser.add_argument("--cudnn", help="expected cuDNN major.minor, e.g. 9.19")
    parser.add_argument("--driver-floor", help="the oldest driver the image's CUDA runs on, e.g. 580.65")
    parser.add_argument("--flash-attention", help="FlashAttention versions the image ships, e.g. 2,3")
    parser.add_argument("--handler", type=Path, help="the worker's handler module")
    parser.add_argument("--input", help="the job input for the handler, as JSON")
    parser.add_argument("--output-shape", help="expected output shape, e.g. 2,384")
    parser.add_argument("--kernels-lock", type=Path, help="the image's kernels lock (JSON)")
    parser.add_argument("--skip-model", action="store_true")
    parser.add_argument("--skip-attention", action="store_true")
    parser.add_argument("--quick", action="store_true", help="one sequence length and dtype per shape")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="PATTERN",
        help="run only the checks whose names match (fnmatch, or a group: 'attention.sdpa', "
        "'bench.kernel.*'); repeatable or comma-separated",
    )
    parser.add_argument(
        "--budget",
        type=float,
        metavar="SECONDS",
        help="start no check or benchmark shape after this many seconds: what is left is reported "
        "skipped, and the result is written (leave headroom under a hard limit)",
    )
    parser.add_argument("--list", action="store_true", help="print the names of this run's checks, run none")
    parser.add_argument(
        "--bench",
        action="store_true",
        help="then benchmark forward attention at the FlashAttention-3 paper's shapes (with --quick: "
        "small shapes, for a CPU)",
    )
    return parser.parse_args(argv)


def expectations(args: argparse.Namespace) -> Expectations:
    expect = Expectations.from_env()
    overrides = {
        "variant": args.variant,
        "torch": args.torch,
        "cuda": args.cuda,
        "cudnn": args.cudnn,
        "driver_floor": args.driver_floor,
        "handler": args.handler,
        "kernels_lock": args.kernels_lock,
        "flash_attention": tuple(int(v) for v in args.flash_attention.split(","))
        if args.flash_attention
        else None,
        "sample_input": json.loads(args.input) if args.input else None,
        "output_shape": tuple(int(v) for v in args.output_shape.split(",")) if args.output_shape else None,
    }
    return replace(expect, **{k: v for k, v in overrides.items() if v is not None})


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        expect = expectations(args)
        budget = Budget.starting_now(args.budget)
    except ValueError as exc:
        print(f"error: bad option: {exc}", file=sys.stderr)
        return 2
    only = Selection(split_patterns(args.only))
    names, open_groups = check_names(
        expect, model=not args.skip_model, attention=not args.skip_attention, bench=args.bench
    )
    if problems := only.unmatched(names, open_groups):
        for what, fix in problems:
            print(f"error: {what}\n  fix: {fix}", file=sys.stderr)
        return 2
    if args.list:
        print("\n".join(name for name in names if only.selects(name)))
        return 0
    result = run_suite(
        expect,
        model=not args.skip_model,
        attention=not args.skip_attention,
        quick=args.quick,
        bench=args.bench,
        only=only,
        budget=budget,
    )
    json_path, xml_path = result.write(args.out, expect.variant or "host")
    for check in result.checks:
        print(f"{check.status:7} {check.name:36} {check.message}")
    counts = result.counts()
    print(f"{counts['pass']} passed, {counts['fail']} failed, {counts['skipped']} skipped")
    print(f"wrote {json_path} and {xml_path}")
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
