"""A pass-through HTTP proxy in front of a real registry that answers chosen requests with an error
of its own, as a registry does when two builds race to commit the same blob (400 on the manifest
PUT) or when it refuses a kind of tag: the rest of the distribution API reaches the registry."""

from __future__ import annotations

import http.client
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade"}


@dataclass
class RefusingProxy:
    address: str  # localhost:PORT, what clients push to
    refused: list[str] = field(default_factory=list)  # "METHOD path" of each refused request


@contextmanager
def refusing_proxy(upstream: str, method: str, path: re.Pattern[str]) -> Iterator[RefusingProxy]:
    """Requests with `method` to a path matching `path` get 400 MANIFEST_BLOB_UNKNOWN; the rest go
    to `upstream` (host:port), with the client's Host header so that its Location URLs come back
    through the proxy."""
    state = RefusingProxy("")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def handle_one_request(self) -> None:
            # BuildKit tries TLS first and falls back to plain HTTP for a localhost registry only
            # when the answer starts with "HTTP/", as a Go server's does (Python's says nothing).
            if self.rfile.peek(1)[:1] == b"\x16":  # type: ignore[attr-defined]
                self.wfile.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                self.close_connection = True
                return
            super().handle_one_request()

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while size := int(self.rfile.readline().split(b";")[0], 16):
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                self.rfile.readline()
                return b"".join(chunks)
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _forward(self) -> None:
            body = self._body()
            if self.command == method and path.search(self.path):
                state.refused.append(f"{self.command} {self.path}")
                answer = b'{"errors":[{"code":"MANIFEST_BLOB_UNKNOWN","message":"blob unknown to registry"}]}'
                self.send_response(400)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)
                return
            connection = http.client.HTTPConnection(upstream, timeout=120)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            headers["Content-Length"] = str(len(body))
            connection.request(self.command, self.path, body=body or None, headers=headers)
            response = connection.getresponse()
            data = response.read()
            self.send_response(response.status)
            for key, value in response.getheaders():
                if key.lower() not in HOP_BY_HOP | {"content-length"}:
                    self.send_header(key, value)
            # A HEAD's length is the upstream's (a blob's size), not that of the empty body.
            length = response.getheader("Content-Length") if self.command == "HEAD" else None
            self.send_header("Content-Length", length or str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
            connection.close()

        do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.address = f"localhost:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
