"""The versioned smoke result: one named check each, pass / fail / skipped (with the reason).

Written as JSON (schema below) and as JUnit XML, so that CI systems show each check as a test.
"""

from __future__ import annotations

import json
import os
import tempfile
import traceback
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

SCHEMA = "runpod-images/smoke-result"
SCHEMA_VERSION = 1
Status = Literal["pass", "fail", "skipped"]


@dataclass(frozen=True)
class Check:
    name: str  # dotted: environment.torch-version, attention.sdpa.math, ...
    status: Status
    message: str = ""
    seconds: float = 0.0
    data: dict[str, Any] = field(default_factory=dict)


def guarded(name: str, run: Callable[[], Check]) -> Check:
    """`run`'s check, or, when it raises, check `name` failed with the last line of the traceback
    (the whole of it in data), so that one broken check never takes its neighbours with it."""
    try:
        return run()
    except Exception as exc:
        return crashed(name, exc)


def crashed(name: str, exc: BaseException) -> Check:
    """Check `name` failed by an exception: the traceback's last line, and the whole in data."""
    last = traceback.format_exception_only(type(exc), exc)[-1].strip()
    whole = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return Check(name, "fail", f"crashed: {last}", data={"traceback": whole[-4000:]})


@dataclass(frozen=True)
class SuiteResult:
    variant: str | None
    host: dict[str, Any]  # device, arch, driver, torch, hostname
    started: str  # ISO 8601, UTC
    seconds: float
    checks: tuple[Check, ...]
    benchmark: dict[str, Any] | None = None  # --bench: the machine, the grid, the published source
    only: tuple[str, ...] = ()  # --only: the patterns that narrowed the run; none: every check ran
    budget: float | None = None  # --budget: seconds the run could start work in
    # How it was run: skip_model, skip_attention, quick, bench (a run that skipped a part says so).
    options: dict[str, bool] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(c.status != "fail" for c in self.checks)

    def counts(self) -> dict[str, int]:
        return {s: sum(c.status == s for c in self.checks) for s in ("pass", "fail", "skipped")}

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "schema_version": SCHEMA_VERSION,
            "variant": self.variant,
            "passed": self.passed,
            "counts": self.counts(),
            "host": self.host,
            "started": self.started,
            "seconds": round(self.seconds, 3),
            "checks": [asdict(c) for c in self.checks],
            **({"benchmark": self.benchmark} if self.benchmark is not None else {}),
            **({"only": list(self.only)} if self.only else {}),
            **({"budget": self.budget} if self.budget is not None else {}),
            **({"options": dict(self.options)} if self.options else {}),
        }

    def to_junit(self) -> str:
        counts = self.counts()
        suite = ET.Element(
            "testsuite",
            name=f"smoke.{self.variant or 'host'}",
            tests=str(len(self.checks)),
            failures=str(counts["fail"]),
            skipped=str(counts["skipped"]),
            errors="0",
            time=f"{self.seconds:.3f}",
            timestamp=self.started,
        )
        for check in self.checks:
            group, _, name = check.name.partition(".")
            case = ET.SubElement(
                suite, "testcase", classname=f"smoke.{group}", name=name or group, time=f"{check.seconds:.3f}"
            )
            if check.status == "fail":
                ET.SubElement(case, "failure", message=check.message[:500]).text = check.message
            elif check.status == "skipped":
                ET.SubElement(case, "skipped", message=check.message[:500])
        root = ET.Element("testsuites")
        root.append(suite)
        ET.indent(root)
        return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"

    def write(self, directory: Path, stem: str) -> tuple[Path, Path]:
        directory.mkdir(parents=True, exist_ok=True)
        json_path, xml_path = directory / f"{stem}.json", directory / f"{stem}.xml"
        _write_atomically(json_path, json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        _write_atomically(xml_path, self.to_junit())
        return json_path, xml_path


def _write_atomically(path: Path, text: str) -> None:
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    Path(temporary).replace(path)
