"""The rule registry: every policy rule is one function `(subject, context) -> Iterable[Finding]`,
registered with its name, scope and reason (nox's session registry, posit-bakery's check plugins).

Scopes, in pipeline order, and the subject each rule of the scope receives:
  catalogue   a Base of matrix.yaml's catalogue (used or not)
  gpu         a Gpu of matrix.yaml
  variant     a plan Variant (targets and kernels resolved)
  template    an Image of matrix.yaml, once per plan (its template directory: handler, lock)
  dockerfile  a RenderedDockerfile, before anything is written
  image       a BuiltImage (policy/image.py), built and not yet pushed
Adding a rule is one decorated function in the module of its scope; nothing else changes. A rule
that needs a setting declares it as an option: the key is then allowed under matrix.yaml's
`policy:`, checked against its type here, and read with `context.option(name)`.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeVar, cast

from buildtool.config.keys import SECTIONS
from buildtool.config.model import Matrix
from buildtool.errors import Finding, Location, Problem, Severity, did_you_mean
from buildtool.plan import Variant

T = TypeVar("T")
Scope = Literal["catalogue", "gpu", "variant", "template", "dockerfile", "image"]
SCOPES: tuple[Scope, ...] = ("catalogue", "gpu", "variant", "template", "dockerfile", "image")


@dataclass(frozen=True)
class Context:
    """What every rule may read besides its subject."""

    matrix: Matrix
    variant: Variant | None = None  # the variant the subject belongs to (variant, dockerfile, image)
    variant_name: str | None = None  # for findings, when only the name is known
    # Work the subjects of one check share (check_dockerfiles: the variants of a template hold the
    # same context files and most of the same lines): see once().
    shared: dict[Hashable, object] = field(default_factory=dict, compare=False, repr=False)

    @property
    def name(self) -> str | None:
        return self.variant.name if self.variant else self.variant_name

    def once(self, key: Hashable, compute: Callable[[], T]) -> T:
        """compute(), done once per key for every subject of this check: a rule's work that depends
        on a part of its subject only (one line, one file), keyed by that part."""
        if key not in self.shared:
            self.shared[key] = compute()
        return cast(T, self.shared[key])

    def option(self, name: str) -> Any:
        """A rule option's value from matrix.yaml's `policy:`, else its default."""
        for key, value, _where in self.matrix.policy.rule_options:
            if key == name:
                return float(value) if OPTIONS[name].kind is float else value
        return OPTIONS[name].default


@dataclass(frozen=True)
class RuleOption:
    """A setting of a rule, written under matrix.yaml's `policy:`."""

    kind: type  # int, float, str or bool
    default: Any  # None: the rule does nothing unless the option is set
    help: str


RuleCheck = Callable[[Any, Context], Iterable[Finding]]
Check = TypeVar("Check", bound=RuleCheck)


@dataclass(frozen=True)
class Rule:
    name: str
    scope: Scope
    reason: str  # why the rule exists: the production failure it prevents
    check: RuleCheck
    options: tuple[str, ...] = ()


RULES: dict[str, Rule] = {}
OPTIONS: dict[str, RuleOption] = {}


def rule(
    name: str, scope: Scope, reason: str, options: dict[str, RuleOption] | None = None
) -> Callable[[Check], Check]:
    """Register the decorated function as the rule `name` of `scope`, with its options."""

    def register(check: Check) -> Check:
        if name in RULES:
            raise ValueError(f"policy rule '{name}' is registered twice")
        taken = [key for key in options or {} if key in OPTIONS or key in SECTIONS["policy"]]
        if taken:
            raise ValueError(f"policy option '{taken[0]}' of rule '{name}' is taken")
        RULES[name] = Rule(name, scope, reason, check, tuple(options or {}))
        OPTIONS.update(options or {})
        return check

    return register


def option_findings(matrix: Matrix) -> list[Finding]:
    """Every key under `policy:` that is not a built-in setting must be an option of a rule, of
    its type."""
    found = []
    for key, value, where in matrix.policy.rule_options:
        option = OPTIONS.get(key)
        if option is None:
            known = [*SECTIONS["policy"], *OPTIONS]
            hint = did_you_mean(key, known) or f"allowed keys: {', '.join(known)}"
            found.append(
                Finding("policy", "error", Problem(f"unknown key '{key}' in policy", where, hint=hint))
            )
            continue
        numeric = option.kind is float and isinstance(value, int | float) and not isinstance(value, bool)
        if not numeric and not (
            isinstance(value, option.kind) and not (option.kind is int and isinstance(value, bool))
        ):
            found.append(
                Finding(
                    "policy",
                    "error",
                    Problem(
                        f"policy {key} must be {option.kind.__name__}, not {type(value).__name__}",
                        where,
                        hint=option.help,
                    ),
                )
            )
    return found


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
