"""The commands after the build that speak for a whole release or deployment: release, deploy-spec,
deploy (main.py turns their errors into messages and exit codes)."""

from __future__ import annotations

import argparse
import json
import os

from rich.markup import escape
from rich.table import Table

from buildtool.cli.display import err, out
from buildtool.config.options import Options
from buildtool.deploy.catalog import CATALOG_PATH
from buildtool.deploy.specs import RUNPOD_API, DeploySpec
from buildtool.errors import BuildError, Problem


def run(args: argparse.Namespace, options: Options) -> int:
    if args.command == "release":
        return run_release(args, options)
    if args.command == "deploy-spec":
        return run_deploy_spec(options)
    return run_deploy(args, options)


def run_release(args: argparse.Namespace, options: Options) -> int:
    from buildtool import api

    plan, moved, unchanged = api.release(options, args.tag)
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
        out.print(f"deploy specs of the promoted digests: {options.build_dir / 'deploy'}/")
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


def spec_table(specs: list[DeploySpec]) -> Table:
    table = Table(title="RunPod deploy specs (API v2)")
    for column in ("variant", "image", "unpacked", "container disk", "min CUDA", "requests"):
        table.add_column(column, overflow="fold")
    for spec in specs:
        disk = spec.disk
        unpacked = f"{disk.unpacked_bytes / 1e9:.2f} GB" if disk.unpacked_bytes is not None else "?"
        sized = "declared" if disk.declared else f"+{disk.headroom_gb:g} GB, +{disk.margin:.0%}"
        table.add_row(
            spec.variant,
            spec.image.rsplit("/", 1)[-1][:40],
            unpacked,
            f"{disk.gb} GB ({sized})",
            spec.floor.cuda or "-",
            ", ".join(r.operation for r in spec.requests),
        )
    return table


def run_deploy_spec(options: Options) -> int:
    from buildtool import api

    specs, missing = api.deploy_specs(options)
    out.print(spec_table(specs))
    for spec in specs:
        for note in spec.notes:
            err.print(f"note: [{spec.variant}] {note}", markup=False)
        out.print(f"wrote {options.build_dir / 'deploy' / (spec.variant + '.json')}")
    if missing:
        err.print(f"not built, no spec: {', '.join(missing)}", markup=False)
    return 0


def run_deploy(args: argparse.Namespace, options: Options) -> int:
    from buildtool import api
    from buildtool.deploy.runpod_api import checked_api_url

    # The URL is checked before anything else: the key must not go in plain text to another host.
    source = "--api-url" if args.api_url else "$RUNPOD_API_URL"
    api_url = checked_api_url(args.api_url or os.environ.get("RUNPOD_API_URL") or RUNPOD_API, source)
    api_key = os.environ.get("RUNPOD_API_KEY") or None
    spec, answers = api.deploy(options, args.endpoint, api_url, api_key)
    out.print(spec_table([spec]))
    if not answers:
        why = "--dry-run" if options.dry_run else "RUNPOD_API_KEY is not set"
        out.print(f"{why}: nothing sent. It would send, with Authorization: Bearer <RUNPOD_API_KEY>:")
        # The catalog is read first; a spec it disagrees with is refused before anything is created.
        catalog = f"GET {api_url}{CATALOG_PATH}  (checked against the spec first)"
        out.print(catalog, markup=False, highlight=False)
        for request in spec.requests:
            out.print(f"{request.method} {api_url}{request.path}", markup=False, highlight=False)
            out.print(json.dumps(request.body, indent=2, sort_keys=True), markup=False, highlight=False)
        return 0
    for request, answer in zip(spec.requests, answers, strict=True):
        made = answer.get("id", "?")
        out.print(f"{escape(request.operation)}: created {escape(str(made))}")
    return 0
