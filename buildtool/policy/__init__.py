"""Rules that refuse what breaks in production, kept in a registry by scope (registry.py).

check_plan runs the catalogue, gpu, variant and template scopes before rendering; the render stage
runs the dockerfile scope on the rendered text before anything is written; the build stage runs the
image scope on each built image (its config before the push, its layers before any tag moves to it).
Every error finding is exit 2.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from pathlib import Path
from typing import Any

from buildtool.config.model import Matrix
from buildtool.errors import Finding, Location
from buildtool.plan import CheckedPlan, Plan, Variant

# The rule modules register their rules on import, in this order (the order findings come in).
from buildtool.policy import catalogue, dockerfile, image, templates, variants  # noqa: F401
from buildtool.policy.catalogue import tag_facts
from buildtool.policy.dockerfile import RenderedDockerfile
from buildtool.policy.image import BuiltImage
from buildtool.policy.registry import (
    OPTIONS,
    RULES,
    SCOPES,
    Context,
    Rule,
    RuleOption,
    Scope,
    option_findings,
    rule,
    run,
)

__all__ = [
    "OPTIONS",
    "RULES",
    "SCOPES",
    "Context",
    "Finding",
    "Rule",
    "RuleOption",
    "Scope",
    "check_dockerfile",
    "check_dockerfiles",
    "check_handler",
    "check_image",
    "check_plan",
    "rule",
    "tag_facts",
]


def check_plan(plan: Plan) -> CheckedPlan:
    """The catalogue, gpu, variant and template scopes, in that order."""
    matrix = plan.matrix
    context = Context(matrix)
    findings: list[Finding] = option_findings(matrix)
    if findings:
        return CheckedPlan(plan, tuple(findings))  # the rules would read options they cannot use
    for base in matrix.bases:
        findings += run("catalogue", base, context)
    for gpu in matrix.gpus:
        findings += run("gpu", gpu, context)
    first_of_image: dict[str, Variant] = {}
    for variant in plan.variants:
        findings += run("variant", variant, Context(matrix, variant))
        first_of_image.setdefault(variant.image.name, variant)
    for variant in first_of_image.values():
        findings += run("template", variant.image, Context(matrix, variant))
    return CheckedPlan(plan, tuple(_unique(findings)))


def check_dockerfile(
    text: str,
    path: Path,
    variant: str,
    build_args: Mapping[str, str],
    matrix: Matrix,
    files: tuple[tuple[str, bytes], ...] = (),
) -> list[Finding]:
    """The dockerfile scope on one rendered Dockerfile and the rest of its build context (each file
    by its path relative to the Dockerfile's directory)."""
    subject = RenderedDockerfile(text, path, build_args, files)
    return run("dockerfile", subject, Context(matrix, variant_name=variant))


def check_dockerfiles(subjects: Iterable[tuple[str, RenderedDockerfile]], matrix: Matrix) -> list[Finding]:
    """The dockerfile scope on many (variant, rendered Dockerfile), sharing the work that depends on
    a part they have in common (Context.once): variants of one template differ in a few values."""
    shared: dict[Hashable, object] = {}
    findings: list[Finding] = []
    for variant, subject in subjects:
        findings += run("dockerfile", subject, Context(matrix, variant_name=variant, shared=shared))
    return findings


def option(matrix: Matrix, name: str) -> Any:
    """A rule option's value for this matrix (its `policy:` entry, else the rule's default): for the
    stages that size what a rule checks, such as the deploy spec's container disk."""
    return Context(matrix).option(name)


def check_image(built: BuiltImage, variant: Variant, matrix: Matrix) -> list[Finding]:
    return run("image", built, Context(matrix, variant))


def check_handler(
    path: Path, loaders: tuple[str, ...], variant: str | None = None, servers: tuple[str, ...] = ()
) -> list[Finding]:
    """The handler rule on one module, outside a matrix (tests, editors)."""
    from buildtool.errors import Problem
    from buildtool.policy import handlers

    return [
        Finding("handler", handlers.severity(p), Problem(p.message, p.where, variant, p.hint))
        for p in handlers.analyse(path, handlers.Loaders(loaders, servers))
    ]


def _unique(findings: list[Finding]) -> list[Finding]:
    """Warnings repeat per variant: keep one of each message and place. Errors stay one per
    variant, so that each names the variant it stops."""
    seen: set[tuple[str, Location | None, str | None]] = set()
    out = []
    for f in findings:
        key = (f.problem.message, f.problem.location, f.problem.variant if f.severity == "error" else None)
        if key not in seen:
            seen.add(key)
            out.append(f)
    return out
