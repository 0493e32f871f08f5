"""Bake an image's kernels at build time, so that nothing is downloaded at run time.

    python3 bake.py --lock kernels.lock.json --local /kernels-local --dest /opt/kernels

For each kernel of the lock: a directory <local>/<name> (the named build context `kernels-local`:
offline builds and tests) is copied to <dest>/<name>; otherwise the kernel is fetched from the Hub at
its pinned revision into $KERNELS_CACHE. Either way the lock records `local_path`, the directory of
the build variant this image's torch loads, and for a Hub kernel `commit`, the commit the revision
resolved to: the smoke suite loads that path through `kernels.get_local_kernel`, independent of the
Hub cache's layout and of the Hub.

The proof runs in a fresh process started with HF_HUB_OFFLINE=1 (huggingface_hub reads it when it is
imported): every kernel is resolved and imported from its local path, its function must exist, and
its build must list every GPU arch the lock claims for it. A kernel that fails fails the build.
Runs with the image's Python; needs `kernels`. Standard library otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

COMMIT = re.compile(r"[0-9a-f]{40}")


def commit_of(variant_path: Path) -> str | None:
    """The commit of a Hub snapshot: huggingface_hub keeps it as .../snapshots/<commit>/..."""
    parts = variant_path.parts
    for i, part in enumerate(parts[:-1]):
        if part == "snapshots" and COMMIT.fullmatch(parts[i + 1]):
            return parts[i + 1]
    return None


def bake(entry: dict[str, Any], local: Path, dest: Path) -> str:
    source = local / entry["name"]
    if source.is_dir() and any(source.iterdir()):
        target = dest / entry["name"]
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(source, target)
        entry["local_path"] = str(target)
        entry["commit"] = None
        return f"{entry['repo_id']}: from the build context kernels-local/{entry['name']} -> {target}"
    from kernels import install_kernel

    path = Path(
        install_kernel(entry["repo_id"], revision=entry["revision"], trust_remote_code=[entry["repo_id"]])
    )
    entry["local_path"] = str(path)
    entry["commit"] = commit_of(path)
    return f"{entry['repo_id']}@{entry['revision']} (commit {entry['commit']}): from the Hub -> {path}"


def capability(arch: str) -> tuple[int, int]:
    """sm_90 -> (9, 0); sm_100 -> (10, 0)."""
    digits = arch.removeprefix("sm_").rstrip("af")
    return int(digits[:-1]), int(digits[-1])


def prove(entry: dict[str, Any]) -> str:
    """In the proving process (HF_HUB_OFFLINE=1 from its start): load the kernel from its local path
    as the smoke suite will, and check that its build runs on every arch the lock claims."""
    from kernels import get_local_kernel

    module = get_local_kernel(Path(entry["local_path"]), trust_remote_code=[entry["repo_id"]])
    if not hasattr(module, entry["function"]):
        raise RuntimeError(f"{entry['repo_id']} has no {entry['function']}")
    claimed = entry.get("archs") or []
    if claimed:
        from kernels.archs import _supports_cuda_capability

        metadata_path = next(Path(entry["local_path"]).rglob("metadata.json"), None)
        built_for = (
            json.loads(metadata_path.read_text()).get("backend", {}).get("archs", []) if metadata_path else []
        )
        missing = [
            a for a in claimed if built_for and not _supports_cuda_capability(built_for, capability(a))
        ]
        if missing:
            raise RuntimeError(f"{entry['repo_id']} is built for {built_for}, not for {missing}")
    return f"{entry['repo_id']}: loads offline from {entry['local_path']}, {entry['function']} present" + (
        f", built for {', '.join(claimed)}" if claimed else ""
    )


def prove_all(lock: Path) -> int:
    """`--prove LOCK` in a child process whose environment has HF_HUB_OFFLINE=1 from the start."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("LOCAL_KERNELS", None)  # the local paths come from the lock, not from the environment
    done = subprocess.run([sys.executable, __file__, "--prove", str(lock)], env=env, check=False)
    return done.returncode


def user_agent_workaround() -> None:
    """With HF_HUB_DISABLE_TELEMETRY=1, kernels 0.17 passes an empty user agent and huggingface_hub 2.x
    then sends one ending in '; ', which httpx refuses before any request ("Illegal header value").
    Naming an origin (any value; huggingface_hub reads it at import) keeps the header legal."""
    if os.environ.get("HF_HUB_DISABLE_TELEMETRY", "").upper() in ("1", "ON", "YES", "TRUE"):
        os.environ.setdefault("HF_HUB_USER_AGENT_ORIGIN", "runpod-images-bake")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lock", type=Path)
    parser.add_argument("--local", type=Path)
    parser.add_argument("--dest", type=Path)
    parser.add_argument(
        "--prove", type=Path, metavar="LOCK", help="(the proving process) prove LOCK's kernels"
    )
    args = parser.parse_args(argv)
    if args.prove:
        for entry in json.loads(args.prove.read_text())["kernels"]:
            try:
                print("bake:", prove(entry), flush=True)
            except Exception as exc:
                print(
                    f"bake: {entry['repo_id']} does not load offline: {type(exc).__name__}: {exc}",
                    file=sys.stderr,
                )
                return 1
        return 0
    if not (args.lock and args.local and args.dest):
        parser.error("--lock, --local and --dest are required")
    lock = json.loads(args.lock.read_text())
    user_agent_workaround()
    for entry in lock["kernels"]:
        try:
            print("bake:", bake(entry, args.local, args.dest), flush=True)
        except Exception as exc:
            print(
                f"bake: cannot bake {entry['repo_id']}@{entry['revision']}: {type(exc).__name__}: {exc}\n"
                f"bake: offline, pass its files as the named build context 'kernels-local' (a directory "
                f"holding {entry['name']}/): buildtool build --kernels-local DIR",
                file=sys.stderr,
            )
            return 1
    args.lock.write_text(json.dumps(lock, indent=2, sort_keys=True) + "\n")
    return prove_all(args.lock)


if __name__ == "__main__":
    sys.exit(main())
