"""Smoke result documents as the report and release stages read them (JSON the smoke suite wrote),
without the Docker runner that produced them."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from buildtool.errors import ConfigError, Location, Problem

RESULT_SCHEMA = "runpod-images/smoke-result"  # smoke/result.py writes it
_HINT = "pass result files buildtool smoke or python -m smoke wrote"

# The fields the report and release stages read, with the JSON types smoke/result.py writes; a
# field outside these tables is not read. (type, ...), and whether the field must be there.
_NUMBER = (int, float)
_NULL = type(None)
Fields = dict[str, tuple[tuple[type, ...], bool]]
_DOCUMENT: Fields = {
    "passed": ((bool,), True),
    "checks": ((list,), True),
    "started": ((str,), False),
    "variant": ((str, _NULL), False),
    "host": ((dict,), False),
    "image": ((dict, _NULL), False),
    "benchmark": ((dict,), False),
    "only": ((list,), False),
    "budget": ((*_NUMBER, _NULL), False),
}
_CHECK: Fields = {
    "name": ((str,), True),
    "status": ((str,), True),
    "message": ((str,), False),
    "data": ((dict,), False),
}
_CASE: Fields = {
    **{key: ((int,), True) for key in ("head_dim", "seqlen", "batch", "heads")},
    "dtype": ((str,), True),
    "causal": ((bool,), True),
    "tflops": (_NUMBER, True),
    "tflops_range": ((list,), False),
    "seconds": ((dict,), False),
    "paper_tflops": ((*_NUMBER, _NULL), False),
    "percent_of_paper": ((*_NUMBER, _NULL), False),
}
_HOST: Fields = {
    key: ((str, _NULL), False) for key in ("hostname", "device", "arch", "torch", "cuda", "commit", "driver")
}
_IMAGE: Fields = {"digest": ((str, _NULL), False), "revision": ((str, _NULL), False)}
_BENCHMARK: Fields = {key: ((dict,), False) for key in ("machine", "timing", "published")}
_STATUSES = ("pass", "fail", "skipped")


def read_results(paths: Iterable[Path]) -> list[tuple[Path, dict[str, Any]]]:
    """Smoke result documents (the suite's JSON), for the report and release stages. A file that is
    missing or is not a result document is bad input: ConfigError, naming it."""
    documents = []
    for path in paths:
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(
                Problem(
                    f"cannot read the smoke result: {exc.strerror}",
                    Location(path),
                    hint=_HINT,
                )
            ) from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise ConfigError(
                Problem(
                    f"not a smoke result: {exc}",
                    Location(path),
                    hint=_HINT,
                )
            ) from None
        if not isinstance(document, dict) or document.get("schema") != RESULT_SCHEMA:
            raise ConfigError(
                Problem(
                    f"not a smoke result (schema is not {RESULT_SCHEMA})",
                    Location(path),
                    hint=_HINT,
                )
            )
        if malformed := _malformed(document):
            raise ConfigError(
                Problem(
                    f"malformed smoke result: {malformed}",
                    Location(path),
                    hint=f"{_HINT}, unedited (a hand edit broke this field)",
                )
            )
        documents.append((path, document))
    return documents


def _malformed(document: dict[str, Any]) -> str | None:
    """The first field the report or release would misread, as `where: what`; None when none."""
    found = _fields(document, _DOCUMENT, "")
    checks = document.get("checks")
    for i, check in enumerate(checks if isinstance(checks, list) and not found else ()):
        where = f"checks[{i}]"
        if not isinstance(check, dict):
            return f"{where}: expected an object, found {_shown(check)}"
        if found := _fields(check, _CHECK, f"{where}."):
            return found
        if check["status"] not in _STATUSES:
            return f"{where}.status: expected one of {', '.join(_STATUSES)}, found {_shown(check['status'])}"
        data = check.get("data") or {}
        if "kernel" in data and not isinstance(data["kernel"], dict):
            return f"{where}.data.kernel: expected an object, found {_shown(data['kernel'])}"
        cases = data.get("cases", []) if check["name"].startswith("bench.") else []  # the benchmark's
        if not isinstance(cases, list):
            return f"{where}.data.cases: expected a list, found {_shown(cases)}"
        for j, case in enumerate(cases):
            if not isinstance(case, dict):
                return f"{where}.data.cases[{j}]: expected an object, found {_shown(case)}"
            if found := _fields(case, _CASE, f"{where}.data.cases[{j}]."):
                return found
            span = case.get("tflops_range", [0, 0])
            if len(span) != 2 or not all(_is(x, _NUMBER) for x in span):
                return (
                    f"{where}.data.cases[{j}].tflops_range: expected [slowest, fastest], found {_shown(span)}"
                )
    if not found and isinstance(document.get("host"), dict):
        found = _fields(document["host"], _HOST, "host.")
    if not found and isinstance(document.get("image"), dict):
        found = _fields(document["image"], _IMAGE, "image.")
    if not found and isinstance(document.get("benchmark"), dict):
        found = _fields(document["benchmark"], _BENCHMARK, "benchmark.")
        timing = document["benchmark"].get("timing") or {}
        if not found and isinstance(timing, dict):
            found = _fields(timing, {"min_timed_seconds": (_NUMBER, False)}, "benchmark.timing.")
    return found


def _fields(value: dict[str, Any], fields: Fields, prefix: str) -> str | None:
    for key, (types, required) in fields.items():
        if key not in value:
            if required:
                return f"{prefix}{key}: missing"
        elif not _is(value[key], types):
            names = " or ".join(_TYPE_NAMES[t] for t in types if t is not int or float not in types)
            return f"{prefix}{key}: expected {names}, found {_shown(value[key])}"
    return None


_TYPE_NAMES = {
    bool: "true/false",
    list: "a list",
    dict: "an object",
    str: "a string",
    int: "an integer",
    float: "a number",
    _NULL: "null",
}


def _is(value: Any, types: tuple[type, ...]) -> bool:
    # JSON's true is not a number (Python's bool is an int).
    return isinstance(value, types) and (bool in types or not isinstance(value, bool))


def _shown(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def run_limits(document: dict[str, Any]) -> tuple[str, ...]:
    """What a result's run left out, in words: its --only patterns, and the checks its --budget cut
    short (not run, stopped, or benchmarked in part)."""
    limits = []
    if only := [str(p) for p in document.get("only") or ()]:
        limits.append(f"limited to --only {','.join(only)}")
    if cut := [str(c.get("name")) for c in document.get("checks", []) if (c.get("data") or {}).get("budget")]:
        seconds = document.get("budget")
        budget = f"{seconds:g} s" if isinstance(seconds, int | float) else "?"
        limits.append(f"--budget {budget} cut {len(cut)} check(s) short: {', '.join(cut)}")
    raw = document.get("options")
    options = raw if isinstance(raw, dict) else {}
    skipped = [part for part in ("model", "attention") if options.get(f"skip_{part}") is True]
    if skipped:
        limits.append("run with " + " ".join(f"--skip-{part}" for part in skipped))
    return tuple(limits)
