"""Release planning and promotion against a fake registry: what is refused and why, which tags move,
and that a released version never moves (the registry:2 tests in test_release.py cover the wire)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO
from fakes import FakeRegistry

from buildtool import api
from buildtool.config.options import Options
from buildtool.errors import ConfigError, ReleaseRefused
from buildtool.naming import Revision, variant_tags
from buildtool.release import plan_release, promote

REGISTRY = "registry.test/org"
SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def checked():  # type: ignore[no-untyped-def]
    return api.plan_and_check(Options.for_matrix(REPO / "matrix.yaml", select=("worker-embed-*",)))


def smoke_result(tmp: Path, name: str, digest: str, passed: bool, cut: bool = False, **limits: Any) -> Path:
    """`limits`: the run's `only` or `budget`; `cut`: a check its budget cut short."""
    path = tmp / f"{name}.json"
    check = {"name": "attention.sdpa.math", "status": "pass" if passed else "fail"}
    cuts = [{"name": "bench.sdpa.math", "status": "skipped", "data": {"budget": True}}] if cut else []
    path.write_text(
        json.dumps(
            {
                "schema": "runpod-images/smoke-result",
                "image": {"digest": digest},
                "passed": passed,
                "checks": [check, *cuts],
                **limits,
            }
        )
    )
    return path


def built(registry: FakeRegistry, checked, name: str) -> str:  # type: ignore[no-untyped-def]
    cv = next(cv for cv in checked.variants if cv.name == name)
    is_default = name == checked.plan.default_variant
    tags = variant_tags(REGISTRY, cv.image.name, cv.base.name, Revision(SHA, False), is_default)
    return registry.put(tags.immutable, name)


def test_only_built_and_passing_digests_are_promoted_the_rest_refused_with_the_reason(
    checked,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    registry = FakeRegistry()
    names = [cv.name for cv in checked.variants]
    assert len(names) >= 2
    good, failing = names[0], names[1]
    results = [
        smoke_result(tmp_path, good, built(registry, checked, good), True),
        smoke_result(tmp_path, failing, built(registry, checked, failing), False),
    ]
    plan = plan_release("v1.2.3", Revision(SHA, False), checked, REGISTRY, registry, results)
    assert [p.variant for p in plan.promotions] == [good]
    reasons = {r.variant: r.reason for r in plan.refusals}
    assert reasons[failing].startswith("smoke failed for sha256:")
    for missing in names[2:]:
        assert "does not exist: not built for 0123456789ab" in reasons[missing]
    [promotion] = plan.promotions
    base = next(cv.base.name for cv in checked.variants if cv.name == good)
    assert {t.rsplit(":", 1)[1] for t in promotion.tags} >= {f"{base}-1.2.3", f"{base}-1.2", f"{base}-1"}


def test_a_smoke_run_limited_by_only_or_cut_by_its_budget_does_not_release_a_digest(
    checked,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    registry = FakeRegistry()
    name = checked.variants[0].name
    digest = built(registry, checked, name)
    only = smoke_result(tmp_path, "only", digest, True, only=["environment"])
    cut = smoke_result(tmp_path, "cut", digest, True, cut=True, budget=60)
    for results in ([only], [cut], [only, cut]):
        plan = plan_release("v1.2.3", Revision(SHA, False), checked, REGISTRY, registry, results)
        assert not plan.promotions
        [refusal] = [r for r in plan.refusals if r.variant == name]
        assert refusal.reason.startswith(f"smoke ran in part for {digest} (")
        assert refusal.reason.endswith("run the whole suite: no --only, and a --budget it does not spend")
    assert (
        "(limited to --only environment)"
        in plan_release("v1.2.3", Revision(SHA, False), checked, REGISTRY, registry, [only])
        .refusals[0]
        .reason
    )
    # A budget that was not spent, beside a limited run: the whole run releases the digest.
    whole = smoke_result(tmp_path, "whole", digest, True, budget=3600)
    plan = plan_release("v1.2.3", Revision(SHA, False), checked, REGISTRY, registry, [only, whole])
    assert [p.variant for p in plan.promotions] == [name]


def test_promotion_moves_each_tag_once_and_a_released_version_never_moves(
    checked,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    registry = FakeRegistry()
    name = checked.variants[0].name
    digest = built(registry, checked, name)
    results = [smoke_result(tmp_path, name, digest, True)]
    plan = plan_release("v1.2.3", Revision(SHA, False), checked, REGISTRY, registry, results)
    [promotion] = plan.promotions
    moved, unchanged = promote(plan, registry)
    assert sorted(moved) == sorted(promotion.tags) and unchanged == []
    assert all(registry.tags[t] == digest for t in promotion.tags)
    again_moved, again_unchanged = promote(plan, registry)  # a re-run: nothing moves
    assert again_moved == [] and sorted(again_unchanged) == sorted(promotion.tags)

    exact = next(t for t in promotion.tags if t.endswith("-1.2.3"))
    other = registry.put(exact, "an earlier build released as 1.2.3")
    registry.calls.clear()
    with pytest.raises(ReleaseRefused, match="already points to") as refused:
        promote(plan, registry)
    assert refused.value.exit_code == 2
    assert registry.tags[exact] == other and not [c for c in registry.calls if c[0] == "copy_tag"]


def test_a_malformed_result_refuses_the_release_before_the_registry_is_asked(checked, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    registry = FakeRegistry()
    good = smoke_result(
        tmp_path, "good", built(registry, checked, "worker-embed-runpod-torch211-cu130"), True
    )
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps({**json.loads(good.read_text()), "checks": [{"name": "x", "status": "passed"}]})
    )
    with pytest.raises(ConfigError) as raised:
        plan_release("v1.0.0", Revision(SHA, False), checked, REGISTRY, registry, [good, bad])
    (problem,) = raised.value.problems
    assert problem.location is not None and problem.location.file == bad
    assert problem.message == (
        'malformed smoke result: checks[0].status: expected one of pass, fail, skipped, found "passed"'
    )
    assert registry.calls == []  # refused before any tag was looked up
