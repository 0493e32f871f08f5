"""Inside an image with the smoke suite and `kernels`: bake a kernel from the Hub stand-in the way a
production build does (bake.py, kernels.install_kernel, huggingface_hub's own download code), stop
the Hub, then load the kernel offline in a fresh process with each huggingface_hub version asked for.

    python offline_load.py --repo ORG/NAME=DIR --function F --versions installed,newest,oldest --out R

Versions: `installed` (what the image pins), `newest` (pip's newest), `oldest` (the lowest that the
installed `kernels` accepts, from its metadata), or an exact version. Writes one JSON document:
the bake's lock entry, and per version what loaded, through the smoke suite's loader and, for
comparison, through `kernels.get_kernel(repo_id, revision=...)` as the suite used to load.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
SMOKE_ROOT = "/opt/smoke"  # the suite's place in every image buildtool renders
LOAD = """
import json, os, sys
from pathlib import Path
result = {"huggingface_hub": None, "loaded": False, "function": False, "error": None, "old_path": None}
import huggingface_hub
result["huggingface_hub"] = huggingface_hub.__version__
from smoke.checks.kernels import KernelEntry, load_kernel, read_lock
entry = read_lock(Path(sys.argv[1]))[0]
try:
    module = load_kernel(entry)
    result["loaded"], result["function"] = True, hasattr(module, entry.function)
except Exception as exc:
    result["error"] = f"{type(exc).__name__}: {exc}"
try:
    from kernels import get_kernel
    get_kernel(entry.repo_id, revision=entry.revision, trust_remote_code=[entry.repo_id])
    result["old_path"] = "loaded"
except Exception as exc:
    result["old_path"] = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
print(json.dumps(result))
"""


def pip(*args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", *args], check=True
    )


def oldest_supported() -> str:
    for requirement in metadata.requires("kernels") or []:
        if match := re.match(r"huggingface[-_]hub\s*>=\s*([\w.]+)", requirement, re.IGNORECASE):
            return match.group(1)
    raise RuntimeError("kernels declares no lower bound for huggingface_hub")


def start_hub(repo: str, log: Path, port_file: Path) -> subprocess.Popen[bytes]:
    hub = subprocess.Popen(
        [
            sys.executable,
            str(HERE / "hub_standin.py"),
            "--repo",
            repo,
            "--branch",
            "v1",
            "--branch",
            "main",
            "--port-file",
            str(port_file),
            "--log",
            str(log),
        ]
    )
    for _ in range(100):
        if port_file.is_file() and port_file.read_text():
            return hub
        time.sleep(0.1)
    hub.kill()
    raise RuntimeError("the Hub stand-in did not start")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repo", required=True, metavar="ORG/NAME=DIR")
    parser.add_argument("--function", required=True)
    parser.add_argument("--versions", default="installed,newest,oldest")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    repo_id = args.repo.partition("=")[0]
    work = Path(tempfile.mkdtemp())
    lock = work / "kernels.lock.json"
    entry = {"name": repo_id.split("/")[1], "repo_id": repo_id, "revision": "v1", "function": args.function}
    lock.write_text(json.dumps({"version": 1, "kernels": [{**entry, "archs": []}]}))
    hub_log = work / "hub.log"
    hub = start_hub(args.repo, hub_log, work / "port")
    port = (work / "port").read_text()
    env = {**os.environ, "HF_ENDPOINT": f"http://127.0.0.1:{port}", "KERNELS_CACHE": str(work / "cache")}
    env["HF_HUB_DISABLE_TELEMETRY"] = "1"
    env.pop("HF_HUB_OFFLINE", None)
    try:
        bake = subprocess.run(
            [
                sys.executable,
                f"{SMOKE_ROOT}/smoke/bake.py",
                "--lock",
                str(lock),
                "--local",
                str(work / "none"),
                "--dest",
                str(work / "kernels"),
            ],
            env=env,
            capture_output=True,
            text=True,
        )
    finally:
        hub.terminate()
        hub.wait()
    report: dict[str, object] = {
        "bake": {"returncode": bake.returncode, "output": bake.stdout + bake.stderr},
        "requests": hub_log.read_text().splitlines() if hub_log.is_file() else [],
        "lock": json.loads(lock.read_text())["kernels"][0],
        "loads": [],
    }
    if bake.returncode == 0:
        oldest = oldest_supported()
        for wanted in args.versions.split(","):
            if wanted == "newest":
                pip("--upgrade", "huggingface_hub")
            elif wanted != "installed":
                pip(f"huggingface_hub=={oldest if wanted == 'oldest' else wanted}")
            # Offline from the process's start, the Hub gone, as the smoke suite runs in the image.
            load_env = {**env, "HF_HUB_OFFLINE": "1", "PYTHONPATH": SMOKE_ROOT}
            done = subprocess.run(
                [sys.executable, "-c", LOAD, str(lock)], env=load_env, capture_output=True, text=True
            )
            result = json.loads(done.stdout) if done.returncode == 0 else {"error": done.stderr[-2000:]}
            report["loads"].append({"asked": wanted, **result})  # type: ignore[attr-defined]
    args.out.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
