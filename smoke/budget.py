"""`--budget SECONDS`: how long a smoke run may go on starting work, so that it writes its result
inside a limit it cannot see (a CI job's timeout, a serverless execution timeout, a lent machine's
per-command limit) instead of being killed with nothing written.

Once the budget is spent, no part, check process or benchmark shape starts; what did not run is
reported as skipped, with this reason. Work in progress finishes (a benchmark shape, a check), and a
check process still running GRACE_SECONDS after the end is stopped and reported skipped: so leave
headroom under a hard limit. The end is wall-clock time (time.time()), which child processes share.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from smoke.result import Check

GRACE_SECONDS = 30.0  # for a check process to finish its case and print its result


@dataclass(frozen=True)
class Budget:
    seconds: float | None = None  # as asked for; None: no budget
    ends: float | None = None  # time.time() at which it is spent

    @classmethod
    def starting_now(cls, seconds: float | None) -> Budget:
        if seconds is None:
            return UNLIMITED
        if not math.isfinite(seconds) or seconds <= 0:
            raise ValueError(f"--budget must be a positive number of seconds, not {seconds!r}")
        return cls(seconds, time.time() + seconds)

    @classmethod
    def from_json(cls, document: Any) -> Budget:
        """What `to_json` wrote, passed to a check process in its spec."""
        if not isinstance(document, dict):
            return UNLIMITED
        return cls(document.get("seconds"), document.get("ends"))

    def to_json(self) -> dict[str, float] | None:
        if self.seconds is None or self.ends is None:
            return None
        return {"seconds": self.seconds, "ends": self.ends}

    def remaining(self) -> float:
        return math.inf if self.ends is None else self.ends - time.time()

    def spent(self) -> bool:
        return self.remaining() <= 0

    def timeout(self, limit: float) -> float:
        """A check process's time limit: its own, or the budget's end plus the grace, if sooner."""
        return max(1.0, min(limit, self.remaining() + GRACE_SECONDS))

    def reason(self) -> str:
        return f"not run: the --budget of {self.seconds:g} s was spent"

    def skipped(self, names: Iterable[str]) -> list[Check]:
        return [Check(name, "skipped", self.reason(), data={"budget": True}) for name in names]


def cut_short(check: Check) -> bool:
    """Whether the budget, not the check, decided this check's result (or left part of it out)."""
    return bool(check.data.get("budget"))


UNLIMITED = Budget()
