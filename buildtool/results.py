"""Smoke result documents as the report and release stages read them (JSON the smoke suite wrote),
without the Docker runner that produced them."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from buildtool.errors import ConfigError, Location, Problem

RESULT_SCHEMA = "runpod-images/smoke-result"  # smoke/result.py writes it


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
                    hint="pass result files buildtool smoke or python -m smoke wrote",
                )
            ) from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise ConfigError(
                Problem(
                    f"not a smoke result: {exc}",
                    Location(path),
                    hint="pass result files buildtool smoke or python -m smoke wrote",
                )
            ) from None
        if not isinstance(document, dict) or document.get("schema") != RESULT_SCHEMA:
            raise ConfigError(
                Problem(
                    f"not a smoke result (schema is not {RESULT_SCHEMA})",
                    Location(path),
                    hint="pass result files buildtool smoke or python -m smoke wrote",
                )
            )
        documents.append((path, document))
    return documents


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
    return tuple(limits)
