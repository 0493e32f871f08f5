"""The smoke suite as a RunPod serverless worker: a job runs the suite and returns its result.

    python -m smoke.worker --rp_serve_api --rp_api_host 0.0.0.0      (the SDK's local test server)
    POST /runsync {"input": {"quick": true, "attention": true, "model": true, "bench": false}}

With "bench": true the job also runs the attention benchmark (smoke/bench.py) on the worker's GPU:
a way to get a RunPod GPU type's row without a pod.

The worker's own model is loaded once, at module level, as a production worker would: a handler
check then exercises the already-loaded model.
"""

from __future__ import annotations

from typing import Any

import runpod

from smoke.expect import Expectations
from smoke.suite import run_suite

EXPECT = Expectations.from_env()


def handler(job: dict[str, Any]) -> dict[str, Any]:
    options = job.get("input") or {}
    result = run_suite(
        EXPECT,
        model=bool(options.get("model", True)),
        attention=bool(options.get("attention", True)),
        quick=bool(options.get("quick", False)),
        bench=bool(options.get("bench", False)),
    )
    return result.to_dict()


if __name__ == "__main__":
    runpod.serverless.start({"handler": handler})
