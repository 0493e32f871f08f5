"""A stand-in for the `gh` CLI in the workflow rehearsal: GitHub's side (workflow runs, their
artifacts, releases) kept in a JSON state file ($GH_STANDIN_STATE), for the commands the workflows
call. Flags it does not know are errors, so a workflow that calls gh differently fails the rehearsal.

State: {"repository": "owner/name", "runs": [{"databaseId", "workflow", "headSha", "event", "status",
"conclusion", "url", "artifacts": "<dir with one directory per artifact>"}], "releases": "<dir>"}
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any


def fail(message: str, code: int = 1) -> None:
    print(message, file=sys.stderr)
    sys.exit(code)


def options(args: list[str], known: dict[str, bool]) -> tuple[dict[str, str | bool], list[str]]:
    """Flags (name -> takes a value) and positional arguments."""
    found: dict[str, str | bool] = {}
    positional = []
    it = iter(args)
    for arg in it:
        if arg.startswith("--"):
            name, _, value = arg[2:].partition("=")
            if name not in known:
                fail(f"gh stand-in: unknown flag --{name}")
            if known[name]:
                found[name] = value or next(it, "")
            else:
                found[name] = True
        else:
            positional.append(arg)
    return found, positional


def state() -> dict[str, Any]:
    if not os.environ.get("GH_TOKEN"):
        fail("gh: To use GitHub CLI in a GitHub Actions workflow, set the GH_TOKEN environment variable.", 4)
    repo = os.environ.get("GH_REPO")
    if not repo:  # the rehearsal's checkout has no github.com remote to infer it from
        fail("gh: no git remotes found (set GH_REPO to name the repository)")
    document: dict[str, Any] = json.loads(Path(os.environ["GH_STANDIN_STATE"]).read_text())
    if repo != document["repository"]:
        fail(f"HTTP 404: Not Found (repository {repo})")
    return document


def run_list(args: list[str]) -> None:
    flags, _ = options(
        args,
        {
            "workflow": True,
            "commit": True,
            "event": True,
            "status": True,
            "limit": True,
            "json": True,
            "jq": True,
        },
    )
    runs = state()["runs"]
    for flag, field in (("workflow", "workflow"), ("commit", "headSha"), ("event", "event")):
        if flag in flags:
            runs = [r for r in runs if r[field] == flags[flag]]
    if "status" in flags:
        runs = [r for r in runs if flags["status"] in (r["status"], r["conclusion"])]
    runs = sorted(runs, key=lambda r: -int(r["databaseId"]))[: int(str(flags.get("limit", 20)))]
    fields = str(flags.get("json", "")).split(",")
    listed = json.dumps([{f: r.get(f) for f in fields} for r in runs])
    if "jq" in flags:
        done = subprocess.run(["jq", "-r", str(flags["jq"])], input=listed, capture_output=True, text=True)
        if done.returncode:
            fail(done.stderr)
        print(done.stdout, end="")
    else:
        print(listed)


def run_download(args: list[str]) -> None:
    flags, positional = options(args, {"pattern": True, "name": True, "dir": True})
    runs = {str(r["databaseId"]): r for r in state()["runs"]}
    if not positional or positional[0] not in runs:
        fail(f"HTTP 404: run {positional[:1]} not found")
    artifacts = Path(runs[positional[0]]["artifacts"])
    pattern = str(flags.get("pattern") or flags.get("name") or "*")
    names = sorted(p.name for p in artifacts.iterdir() if fnmatch.fnmatchcase(p.name, pattern))
    if not names:
        fail("no valid artifacts found to download")
    target = Path(str(flags.get("dir", ".")))
    for name in names:  # several artifacts: one directory each, as gh does
        destination = target if "name" in flags else target / name
        shutil.copytree(artifacts / name, destination, dirs_exist_ok=True)


def release(args: list[str]) -> None:
    releases = Path(state()["releases"])
    command, rest = args[0], args[1:]
    if command == "view":
        _, positional = options(rest, {})
        sys.exit(0 if (releases / positional[0]).is_dir() else 1)
    if command == "create":
        flags, positional = options(rest, {"title": True, "notes-file": True, "verify-tag": False})
    elif command == "upload":
        flags, positional = options(rest, {"clobber": False})
    else:
        fail(f"gh stand-in: gh release {command} is not known here")
    tag, files = positional[0], [Path(f) for f in positional[1:]]
    if command == "create" and flags.get("verify-tag"):
        done = subprocess.run(
            ["git", "rev-parse", "--verify", "--quiet", f"refs/tags/{tag}"], capture_output=True
        )
        if done.returncode:
            fail(f"tag {tag} doesn't exist in the repo, aborting due to --verify-tag flag")
    if command == "create" and (releases / tag).exists():
        fail(f"a release with the same tag name already exists: {tag}")
    if command == "upload" and not (releases / tag).is_dir():
        fail(f"release not found: {tag}")
    for path in files:
        if not path.is_file():
            fail(f"{path}: no such file or directory")
    (releases / tag).mkdir(parents=True, exist_ok=True)
    for path in files:
        target = releases / tag / path.name
        if target.exists() and command == "upload" and not flags.get("clobber"):
            fail(f"asset {path.name} already exists (use --clobber to overwrite it)")
        shutil.copy(path, target)
    if "notes-file" in flags:
        shutil.copy(str(flags["notes-file"]), releases / tag / "NOTES")


def main(args: list[str]) -> None:
    if args[:2] == ["run", "list"]:
        run_list(args[2:])
    elif args[:2] == ["run", "download"]:
        run_download(args[2:])
    elif args[:1] == ["release"] and len(args) > 1:
        release(args[1:])
    else:
        fail(f"gh stand-in: `gh {' '.join(args[:2])}` is not known here")


if __name__ == "__main__":
    main(sys.argv[1:])
