"""Bake an image's kernels at build time, so that nothing is downloaded at run time.

    python3 bake.py --lock kernels.lock.json --local /kernels-local --dest /opt/kernels

For each kernel of the lock: a directory <local>/<name> (the named build context `kernels-local`:
offline builds and tests) is copied to <dest>/<name> and recorded as LOCAL_KERNELS; otherwise the
kernel is fetched from the Hub at its pinned revision into $KERNELS_CACHE. Kernels that can load
here (no GPU arch required) are loaded once through `kernels`, offline, to prove the bake.
Runs with the image's Python; needs `kernels`. Standard library otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any


def bake(entry: dict[str, Any], local: Path, dest: Path) -> str:
    source = local / entry["name"]
    if source.is_dir() and any(source.iterdir()):
        target = dest / entry["name"]
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(source, target)
        entry["local_path"] = str(target)
        return f"{entry['repo_id']}: from the build context kernels-local/{entry['name']} -> {target}"
    from kernels import install_kernel

    path = install_kernel(entry["repo_id"], revision=entry["revision"], trust_remote_code=[entry["repo_id"]])
    entry["local_path"] = None
    return f"{entry['repo_id']}@{entry['revision']}: from the Hub -> {path}"


def prove(entry: dict[str, Any]) -> str | None:
    """Load a kernel that needs no GPU through `kernels`, offline, as the smoke suite will."""
    if entry.get("archs"):
        return None
    os.environ["HF_HUB_OFFLINE"] = "1"
    if entry.get("local_path"):
        os.environ["LOCAL_KERNELS"] = f"{entry['repo_id']}={entry['local_path']}"
    from kernels import get_kernel

    module = get_kernel(entry["repo_id"], revision=entry["revision"], trust_remote_code=[entry["repo_id"]])
    if not hasattr(module, entry["function"]):
        raise SystemExit(f"bake: {entry['repo_id']} has no {entry['function']}")
    return f"{entry['repo_id']}: loads offline, {entry['function']} present"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lock", type=Path, required=True)
    parser.add_argument("--local", type=Path, required=True)
    parser.add_argument("--dest", type=Path, required=True)
    args = parser.parse_args(argv)
    lock = json.loads(args.lock.read_text())
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
    for entry in lock["kernels"]:
        proof = prove(entry)
        if proof:
            print("bake:", proof, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
