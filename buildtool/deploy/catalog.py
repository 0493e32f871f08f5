"""RunPod's GPU catalog (`GET /v2/catalog/gpus`) against a deploy spec, before anything is created.

A spec picks serverless pools from facts.SERVERLESS_POOLS, a table copied from RunPod's docs. The
catalog is the authority: each GPU type id with the pool it is in today. Where the two disagree, an
endpoint would land its workers on other cards than the matrix targets (a card RunPod added to a
pool, which `excludedTypes` does not name: an arch the image has no kernels for), or miss a target
that moved to another pool; a pod on a type id RunPod does not know is refused only after its
template exists. Each disagreement is a problem here, said with what to change.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from buildtool import facts
from buildtool.deploy.specs import DeploySpec
from buildtool.errors import DeployError, Problem
from buildtool.plan import Variant

CATALOG_PATH = "/v2/catalog/gpus"
FIX_FACTS = "update facts.SERVERLESS_POOLS (buildtool/facts.py) from GET /v2/catalog/gpus, then deploy again"


def read_catalog(answer: object, url: str) -> dict[str, str | None]:
    """GPU type id -> serverless pool (None: in no pool), from RunPod's ListGpuTypesResponse."""
    gpus = answer.get("gpus") if isinstance(answer, dict) else None
    catalog: dict[str, str | None] = {}
    for entry in gpus if isinstance(gpus, list) else [None]:
        if not (isinstance(entry, dict) and isinstance(entry.get("id"), str)):
            raise DeployError(
                Problem(
                    f"RunPod's GPU catalog ({url}) is not a list of GPU types: {str(answer)[:200]}",
                    hint="check --api-url / $RUNPOD_API_URL: it must be RunPod's API v2",
                )
            )
        pool = entry.get("pool")
        catalog[entry["id"]] = pool if isinstance(pool, str) else None
    return catalog


def catalog_problems(variant: Variant, spec: DeploySpec, catalog: Mapping[str, str | None]) -> list[Problem]:
    """Each way the spec's GPU selection disagrees with RunPod's catalog."""
    problems: list[Problem] = []
    for request in spec.requests:
        gpu: dict[str, Any] = request.body.get("gpu", {})
        if request.operation == "createPod":
            [first, *_] = variant.targets
            problems += _unknown(variant, [first], catalog)
        elif request.operation == "createEndpoint":
            problems += _endpoint(variant, gpu["pools"], set(gpu.get("excludedTypes", ())), catalog)
    return problems


def _unknown(variant: Variant, gpus: list[Any], catalog: Mapping[str, str | None]) -> list[Problem]:
    return [
        Problem(
            f"RunPod's GPU catalog has no type '{g.runpod_id}' (GPU {g.name}): RunPod would refuse it",
            g.location,
            variant=variant.name,
            hint=_spelled_alike(g.runpod_id, catalog)
            or f"write runpod_id as GET /v2/catalog/gpus names it, and {FIX_FACTS}",
        )
        for g in gpus
        if g.runpod_id not in catalog
    ]


def _spelled_alike(type_id: str, catalog: Mapping[str, str | None]) -> str | None:
    """A catalog id that differs only in case or spaces. Not difflib's closest: 'H100' is close to
    'A100', and another card is the wrong suggestion."""
    key = " ".join(type_id.split()).casefold()
    alike = [t for t in catalog if " ".join(t.split()).casefold() == key]
    return f"Perhaps you meant '{alike[0]}'?" if alike else None


def _endpoint(
    variant: Variant, pools: list[str], excluded: set[str], catalog: Mapping[str, str | None]
) -> list[Problem]:
    chosen = [g for g in variant.targets if facts.serverless_pool(g.runpod_id) in pools]
    problems = _unknown(variant, chosen, catalog)
    for gpu in chosen:
        expected = facts.serverless_pool(gpu.runpod_id)
        actual = catalog.get(gpu.runpod_id, expected)  # an unknown type is said above
        if actual != expected:
            where = f"in pool {actual}" if actual else "in no serverless pool"
            # In a pool the spec selects anyway, the card is reached, but by a table that is wrong.
            effect = "the endpoint would not get it"
            if actual in pools:
                effect = "the spec was made from a stale table"
            problems.append(
                Problem(
                    f"RunPod's GPU catalog has {gpu.name} ({gpu.runpod_id}) {where}, not {expected} as "
                    f"facts.SERVERLESS_POOLS says: {effect}",
                    gpu.location,
                    variant=variant.name,
                    hint=FIX_FACTS,
                )
            )
    wanted = {g.runpod_id for g in chosen}
    for pool in pools:
        others = sorted(t for t, p in catalog.items() if p == pool and t not in excluded | wanted)
        if others:
            problems.append(
                Problem(
                    f"RunPod's pool {pool} also holds {', '.join(others)}, which the variant does not "
                    "target and the spec does not exclude: workers could start there",
                    variant.gpus_location,
                    variant=variant.name,
                    hint=f"add {'them' if len(others) > 1 else 'it'} to facts.SERVERLESS_POOLS['{pool}'] "
                    "(buildtool/facts.py), so that the spec excludes what the variant does not target, "
                    "or target it in matrix.yaml",
                )
            )
    return problems
