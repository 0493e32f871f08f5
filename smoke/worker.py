"""The smoke suite as a RunPod serverless worker: a job runs the suite and returns its result.

    python -m smoke.worker --rp_serve_api --rp_api_host 0.0.0.0      (the SDK's local test server)
    POST /runsync {"input": {"quick": true, "attention": true, "model": true, "bench": false,
                             "only": ["attention.sdpa"], "budget": 480}}

With "bench": true the job also runs the attention benchmark (smoke/bench.py) on the worker's GPU:
a way to get a RunPod GPU type's row without a pod. "only" narrows the run as --only does (a list,
or comma-separated); a pattern that selects no check fails the job with the reason, running nothing.
"budget" (seconds) is --budget: set it below the endpoint's execution timeout, so that a long
benchmark returns what it measured instead of being cancelled.

The worker's own model is loaded once, at module level, as a production worker would: a handler
check then exercises the already-loaded model.
"""

from __future__ import annotations

from typing import Any

import runpod

from smoke.budget import Budget
from smoke.expect import Expectations
from smoke.selection import Selection, split_patterns
from smoke.suite import check_names, run_suite

EXPECT = Expectations.from_env()
PARTS = {"model": True, "attention": True, "bench": False}  # the job's switches, and their defaults


def handler(job: dict[str, Any]) -> dict[str, Any]:
    options = job.get("input") or {}
    parts = {name: bool(options.get(name, default)) for name, default in PARTS.items()}
    patterns = options.get("only") or []
    if isinstance(patterns, str):
        patterns = [patterns]
    if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
        return {
            "error": f'"only" must be a list of check patterns or a comma-separated string, not {patterns!r}'
        }
    seconds = options.get("budget")
    try:
        if isinstance(seconds, bool) or not isinstance(seconds, int | float | None):
            raise ValueError
        budget = Budget.starting_now(seconds)
    except ValueError:
        return {"error": f'"budget" must be a positive number of seconds, not {seconds!r}'}
    only = Selection(split_patterns(patterns))
    if problems := only.unmatched(*check_names(EXPECT, **parts)):
        return {"error": "; ".join(f"{what} ({fix})" for what, fix in problems)}  # the SDK fails the job
    result = run_suite(EXPECT, quick=bool(options.get("quick", False)), only=only, budget=budget, **parts)
    return result.to_dict()


if __name__ == "__main__":
    runpod.serverless.start({"handler": handler})
