"""A stand-in for the Hugging Face Hub's HTTP API, serving repositories from directories on disk, so
that huggingface_hub's and kernels' own download code runs unchanged against it (HF_ENDPOINT).

    python hub_standin.py --repo runpod-images/sdpa-attention=DIR --branch v1 --port-file FILE

Each repository has one commit (its sha derived from the files) that every branch points at. Served,
as the Hub answers them (huggingface_hub 1.x/2.x, any repo type prefix: models, kernels, ...):
  GET  /api/<type>/<repo>/revision/<rev>            repo info with `sha` and `siblings`
  GET  /api/<type>/<repo>/tree/<rev>[/<path>]       tree listing (`recursive=true` for all files)
  GET  /api/<type>/<repo>/refs                      branches
  HEAD/GET /[<type>/]<repo>/resolve/<rev>/<path>    the file, with X-Repo-Commit and ETag
Unknown repositories and revisions get 404 with the Hub's X-Error-Code. Every request is appended to
--log, so tests can see what the client asked for. Standard library only: it runs in any image.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import urllib.parse
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

TYPE_PREFIXES = ("models", "datasets", "spaces", "kernels")


def blob_oid(data: bytes) -> str:
    """git's blob id, which the Hub reports as a regular file's oid and ETag."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass(frozen=True)
class Repo:
    repo_id: str
    root: Path
    branches: tuple[str, ...]

    def files(self) -> dict[str, Path]:
        return {
            p.relative_to(self.root).as_posix(): p
            for p in sorted(self.root.rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts
        }

    @property
    def sha(self) -> str:
        digest = hashlib.sha1()
        for name, path in self.files().items():
            digest.update(name.encode() + b"\0" + blob_oid(path.read_bytes()).encode())
        return digest.hexdigest()

    def resolves(self, revision: str) -> bool:
        return revision in self.branches or revision == self.sha

    def tree(self, path: str, recursive: bool) -> list[dict[str, object]]:
        prefix = f"{path.strip('/')}/" if path.strip("/") else ""
        entries: dict[str, dict[str, object]] = {}
        for name, file in self.files().items():
            if not name.startswith(prefix):
                continue
            rest = name[len(prefix) :].split("/")
            depth = len(rest) if recursive else 1
            for i in range(1, min(depth, len(rest) - 1) + 1):  # the folders on the way
                folder = prefix + "/".join(rest[:i])
                entries.setdefault(folder, {"type": "directory", "oid": "0" * 40, "path": folder})
            if recursive or len(rest) == 1:
                data = file.read_bytes()
                entries[name] = {"type": "file", "oid": blob_oid(data), "size": len(data), "path": name}
        return [entries[k] for k in sorted(entries)]


class Hub(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], repos: dict[str, Repo], log: Path | None) -> None:
        super().__init__(address, Handler)
        self.repos = repos
        self.log = log


API = re.compile(
    r"^/api/(?P<type>[a-z]+)/(?P<repo>[^/]+/[^/]+)/(?P<what>revision|tree|refs)(?:/(?P<rest>.*))?$"
)
RESOLVE = re.compile(r"^/(?:(?P<type>[a-z]+)/)?(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")


class Handler(BaseHTTPRequestHandler):
    server: Hub

    def log_message(self, format: str, *args: object) -> None:
        if self.server.log is not None:
            with self.server.log.open("a") as log:
                log.write(f"{self.command} {self.path}\n")

    def do_HEAD(self) -> None:
        self.answer(body=False)

    def do_GET(self) -> None:
        self.answer(body=True)

    def answer(self, *, body: bool) -> None:
        url = urllib.parse.urlsplit(self.path)
        path = urllib.parse.unquote(url.path)
        query = urllib.parse.parse_qs(url.query)
        if match := API.match(path):
            repo = self.repo(match["repo"])
            if repo is None:
                return None
            if match["what"] == "refs":
                refs = [
                    {"name": b, "ref": f"refs/heads/{b}", "targetCommit": repo.sha} for b in repo.branches
                ]
                return self.send_json({"branches": refs, "tags": [], "converts": []}, body)
            revision, _, rest = (match["rest"] or "").partition("/")
            if not repo.resolves(revision):
                return self.not_found("RevisionNotFound", f"Invalid rev id: {revision}")
            if match["what"] == "revision":
                siblings = [{"rfilename": name} for name in repo.files()]
                info = {"id": repo.repo_id, "sha": repo.sha, "siblings": siblings, "private": False}
                return self.send_json(info, body)
            recursive = query.get("recursive", ["false"])[0].lower() in ("true", "1")
            return self.send_json(repo.tree(rest, recursive), body)
        if (match := RESOLVE.match(path)) and (match["type"] in (None, *TYPE_PREFIXES)):
            repo = self.repo(match["repo"])
            if repo is None:
                return None
            if not repo.resolves(match["rev"]):
                return self.not_found("RevisionNotFound", f"Invalid rev id: {match['rev']}")
            file = repo.files().get(match["path"])
            if file is None:
                return self.not_found("EntryNotFound", f"{match['path']} does not exist")
            data = file.read_bytes()
            return self.send(
                200, data, "application/octet-stream", body, etag=blob_oid(data), commit=repo.sha
            )
        return self.not_found("RepoNotFound", f"no route for {path}")

    def repo(self, repo_id: str) -> Repo | None:
        repo = self.server.repos.get(repo_id)
        if repo is None:
            self.not_found("RepoNotFound", f"Repository {repo_id} not found")
        return repo

    def not_found(self, code: str, message: str) -> None:
        data = json.dumps({"error": message}).encode()
        self.send(404, data, "application/json", True, error_code=code)

    def send_json(self, value: object, body: bool) -> None:
        self.send(200, json.dumps(value).encode(), "application/json", body)

    def send(
        self,
        status: int,
        data: bytes,
        content_type: str,
        body: bool,
        *,
        etag: str | None = None,
        commit: str | None = None,
        error_code: str | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        if etag:
            self.send_header("ETag", f'"{etag}"')
        if commit:
            self.send_header("X-Repo-Commit", commit)
        if error_code:
            self.send_header("X-Error-Code", error_code)
            self.send_header("X-Error-Message", json.loads(data)["error"])
        self.end_headers()
        if body:
            self.wfile.write(data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", action="append", default=[], metavar="REPO_ID=DIR", required=True)
    parser.add_argument(
        "--branch", action="append", default=[], help="branches every repo has (default main)"
    )
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file", type=Path, help="where to write the port once listening")
    parser.add_argument("--log", type=Path)
    args = parser.parse_args(argv)
    branches = tuple(args.branch or ["main"])
    repos = {}
    for spec in args.repo:
        repo_id, _, directory = spec.partition("=")
        repos[repo_id] = Repo(repo_id, Path(directory), branches)
    hub = Hub(("127.0.0.1", args.port), repos, args.log)
    if args.port_file:
        args.port_file.write_text(str(hub.server_address[1]))
    print(f"hub stand-in on http://127.0.0.1:{hub.server_address[1]}", file=sys.stderr, flush=True)
    hub.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
