"""The Hugging Face Hub, for `buildtool lock`: which commit a kernel repository's revision names.

Plain HTTPS against the Hub's API (GET /api/kernels/<repo>/revision/<revision> answers with the
commit as `sha`), honouring HF_ENDPOINT (a mirror or a stand-in) and HF_TOKEN as huggingface_hub does.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request

from buildtool.config.lock import COMMIT
from buildtool.errors import HubError, Problem

DEFAULT_ENDPOINT = "https://huggingface.co"


def endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def resolve_commit(repo_id: str, revision: str, timeout: float = 30) -> str:
    """The commit `revision` of the kernel repository `repo_id` points to now."""
    if COMMIT.fullmatch(revision):
        return revision
    url = f"{endpoint()}/api/kernels/{repo_id}/revision/{urllib.parse.quote(revision, safe='')}"
    request = urllib.request.Request(url, headers={"User-Agent": "buildtool (runpod-images)"})
    token = os.environ.get("HF_TOKEN")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    where = f"{repo_id}@{revision}"
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            sha = json.loads(response.read()).get("sha")
    except urllib.error.HTTPError as exc:
        code = exc.headers.get("X-Error-Code") or str(exc.code)
        hint = {
            "RevisionNotFound": f"{repo_id} has no revision '{revision}': check the branch, tag or commit",
            "RepoNotFound": f"check the repository name '{repo_id}' (and HF_TOKEN for a private one)",
        }.get(code, "check HF_TOKEN and the repository's access settings")
        raise HubError(Problem(f"the Hub refused {where}: {code}", hint=hint)) from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise HubError(
            Problem(
                f"cannot reach the Hub at {endpoint()} to resolve {where}: {exc}",
                hint="run buildtool lock where the Hub is reachable (or set HF_ENDPOINT to a mirror); "
                "--bases-only locks the bases alone",
            )
        ) from None
    except ValueError as exc:
        raise HubError(Problem(f"the Hub's answer for {where} is not JSON: {exc}")) from None
    if not isinstance(sha, str) or not COMMIT.fullmatch(sha):
        raise HubError(Problem(f"the Hub's answer for {where} names no commit (sha: {sha!r})"))
    return sha
