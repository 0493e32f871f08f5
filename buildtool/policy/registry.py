"""The rule registry: every policy rule is one function `(subject, context) -> Iterable[Finding]`,
registered with its name, scope and reason (nox's session registry, posit-bakery's check plugins).

Scopes, in pipeline order, and the subject each rule of the scope receives:
  catalogue   a Base of matrix.yaml's catalogue (used or not)
  gpu         a Gpu of matrix.yaml
  variant     a plan Variant (targets and kernels resolved)
  template    an Image of matrix.yaml, once per plan (its template directory: handler, lock)
  dockerfile  a RenderedDockerfile, before anything is written
  image       an OciImage, built and not yet pushed
Adding a rule is one decorated function in the module of its scope; nothing else changes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any, Literal, TypeVar

from buildtool.errors import Finding, Location, Problem, Severity
from buildtool.model import Matrix
from buildtool.plan import Variant

Scope = Literal["catalogue", "gpu", "variant", "template", "dockerfile", "image"]
SCOPES: tuple[Scope, ...] = ("catalogue", "gpu", "variant", "template", "dockerfile", "image")


@dataclass(frozen=True)
class Context:
    """What every rule may read besides its subject."""

    matrix: Matrix
    variant: Variant | None = None  # the variant the subject belongs to (variant, dockerfile, image)
    variant_name: str | None = None  # for findings, when only the name is known

    @property
    def name(self) -> str | None:
        return self.variant.name if self.variant else self.variant_name


RuleCheck = Callable[[Any, Context], Iterable[Finding]]
Check = TypeVar("Check", bound=RuleCheck)


@dataclass(frozen=True)
class Rule:
    name: str
    scope: Scope
    reason: str  # why the rule exists: the production failure it prevents
    check: RuleCheck


RULES: dict[str, Rule] = {}


def rule(name: str, scope: Scope, reason: str) -> Callable[[Check], Check]:
    """Register the decorated function as the rule `name` of `scope`."""

    def register(check: Check) -> Check:
        if name in RULES:
            raise ValueError(f"policy rule '{name}' is registered twice")
        RULES[name] = Rule(name, scope, reason, check)
        return check

    return register


def error(message: str, where: Location | None, hint: str | None = None) -> Finding:
    """A refusal; the registry fills in the rule's name and the variant."""
    return Finding("", "error", Problem(message, where, None, hint))


def warning(message: str, where: Location | None, hint: str | None = None) -> Finding:
    return Finding("", "warning", Problem(message, where, None, hint))


def run(scope: Scope, subject: object, context: Context) -> list[Finding]:
    """Every rule of `scope` on `subject`, its findings named after the rule and the variant."""
    found: list[Finding] = []
    for registered in RULES.values():
        if registered.scope != scope:
            continue
        for finding in registered.check(subject, context):
            problem = finding.problem
            severity: Severity = finding.severity
            variant = problem.variant or context.name
            name = finding.rule or registered.name  # a rule may report under a narrower name
            found.append(Finding(name, severity, replace(problem, variant=variant)))
    return found
