"""Expand the matrix axes into variants: image x base, with include/exclude as in GitHub Actions'
matrix and --select patterns as in cibuildwheel's build selectors.

A variant is one image built on one base; its GPU targets say which archs it must run on. The plan
decides nothing about safety: policy.py does.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from buildtool.errors import ConfigError, Location, Problem, SelectionError, did_you_mean
from buildtool.model import Base, Combination, Gpu, Image, Matrix


@dataclass(frozen=True)
class Variant:
    name: str  # "<image>-<base>", also the bake target name
    image: Image
    base: Base
    gpus: tuple[Gpu, ...]
    gpus_explicit: bool  # named in the matrix (a refusal is an error) or implied by "all"
    location: Location  # the matrix entry that produced it
    gpus_location: Location  # where its GPU list was written

    @property
    def is_worker(self) -> bool:
        return self.image.kind == "serverless-worker"


@dataclass(frozen=True)
class Plan:
    matrix: Matrix
    variants: tuple[Variant, ...]
    default_variant: str | None


def variant_name(image: str, base: str) -> str:
    return f"{image}-{base}"


def _matches(combo: Combination, values: dict[str, str]) -> bool:
    return all(values.get(key) == value for key, value in combo.values)


@dataclass(frozen=True)
class _Combo:
    values: dict[str, str]
    gpus: tuple[str, ...] | None
    location: Location
    gpus_location: Location


def expand(matrix: Matrix) -> list[_Combo]:
    """The cross product, minus exclude, plus include (GitHub Actions rules: an include entry
    that matches an existing combination extends it, otherwise it adds one)."""
    axes = matrix.axes
    axes_gpus_at = axes.gpus_location or axes.location
    combos = [
        _Combo({"image": image, "base": base}, axes.gpus, axes.location, axes_gpus_at)
        for image in axes.image
        for base in axes.base
    ]
    combos = [c for c in combos if not any(_matches(ex, c.values) for ex in axes.exclude)]
    for inc in axes.include:
        extended = False
        for i, combo in enumerate(combos):
            if _matches(inc, combo.values):
                if inc.gpus is not None:
                    combos[i] = _Combo(combo.values, inc.gpus, inc.location, inc.location)
                extended = True
        if not extended:
            values = dict(inc.values)
            if set(values) != {"image", "base"}:
                raise ConfigError(
                    Problem(
                        "this include entry matches no combination and does not name both image and base",
                        inc.location,
                        hint="name both image and base to add a variant",
                    )
                )
            gpus, gpus_at = (inc.gpus, inc.location) if inc.gpus is not None else (axes.gpus, axes_gpus_at)
            combos.append(_Combo(values, gpus, inc.location, gpus_at))
    return combos


def make_plan(matrix: Matrix, select: tuple[str, ...] = ()) -> Plan:
    variants: dict[str, Variant] = {}
    for combo in expand(matrix):
        name = variant_name(combo.values["image"], combo.values["base"])
        gpus = tuple(matrix.gpu(g) for g in combo.gpus) if combo.gpus is not None else matrix.gpus
        variants[name] = Variant(
            name,
            matrix.image(combo.values["image"]),
            matrix.base(combo.values["base"]),
            gpus,
            combo.gpus is not None,
            combo.location,
            combo.gpus_location,
        )
    default = matrix.default_variant
    if default is not None and default not in variants:
        raise ConfigError(
            Problem(
                f"default_variant '{default}' is not a variant of the matrix",
                Location(matrix.path),
                hint=did_you_mean(default, variants) or f"variants: {', '.join(sorted(variants))}",
            )
        )
    chosen = sorted(variants.values(), key=lambda v: v.name)
    if select:
        chosen = [v for v in chosen if any(fnmatch.fnmatchcase(v.name, p) for p in select)]
        if not chosen:
            pattern = ", ".join(repr(p) for p in select)
            hint = did_you_mean(select[0], variants) or f"variants: {', '.join(sorted(variants))}"
            raise SelectionError(
                Problem(f"--select {pattern} matches no variant", Location(matrix.path), hint=hint)
            )
    return Plan(matrix, tuple(chosen), default)
