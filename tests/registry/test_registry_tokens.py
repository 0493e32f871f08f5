"""Bearer token challenges (Docker Hub, GHCR, ECR): one token per scope shared by parallel
requests, fetched again when the registry says it has expired. Against a stand-in token server
and registry (registry:2's token auth needs a signing certificate chain); the Basic path runs
against the real registry:2 in test_registry.py."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from buildtool.registry.client import HttpRegistry

USES_PER_TOKEN = 3


class TokenRegistry:
    def __init__(self) -> None:
        self.issued: list[str] = []
        self.uses: dict[str, int] = {}
        self.lock = threading.Lock()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                if self.path.startswith("/token"):
                    time.sleep(0.2)  # slow enough that parallel requests meet a fetch in progress
                    with owner.lock:
                        token = f"tok-{len(owner.issued)}"
                        owner.issued.append(token)
                    self._answer(200, json.dumps({"token": token}).encode())
                    return
                sent = self.headers.get("Authorization", "").removeprefix("Bearer ")
                with owner.lock:
                    valid = sent in owner.issued and owner.uses.get(sent, 0) < USES_PER_TOKEN
                    if valid:
                        owner.uses[sent] = owner.uses.get(sent, 0) + 1
                if not valid:
                    realm = f"http://127.0.0.1:{self.server.server_port}/token"
                    challenge = f'Bearer realm="{realm}",service="standin",scope="repository:x:pull"'
                    self._answer(401, b'{"errors": [{"code": "UNAUTHORIZED"}]}', challenge)
                    return
                self._answer(404, b'{"errors": [{"code": "MANIFEST_UNKNOWN"}]}')

            def _answer(self, status: int, body: bytes, challenge: str | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                if challenge:
                    self.send_header("WWW-Authenticate", challenge)
                self.end_headers()
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_port}"


@pytest.fixture
def token_registry() -> Iterator[TokenRegistry]:
    registry = TokenRegistry()
    thread = threading.Thread(target=registry.server.serve_forever, daemon=True)
    thread.start()
    yield registry
    registry.server.shutdown()


def test_parallel_requests_share_one_token_per_scope(token_registry: TokenRegistry, tmp_path: Path) -> None:
    client = HttpRegistry(docker_config=tmp_path)
    with ThreadPoolExecutor(max_workers=USES_PER_TOKEN) as pool:
        answers = list(pool.map(lambda _: client.manifest(f"{token_registry.address}/x:y"), range(3)))
    assert answers == [None, None, None]  # authenticated, and absent
    assert token_registry.issued == ["tok-0"]


def test_an_expired_token_is_fetched_again(token_registry: TokenRegistry, tmp_path: Path) -> None:
    client = HttpRegistry(docker_config=tmp_path)
    for _ in range(3 * USES_PER_TOKEN):
        assert client.manifest(f"{token_registry.address}/x:y") is None
    assert token_registry.issued == ["tok-0", "tok-1", "tok-2"]
