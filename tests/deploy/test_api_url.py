"""The RunPod API key goes as `Authorization: Bearer` only over https, or in plain http to a stand-in
on this machine (loopback): any other --api-url / $RUNPOD_API_URL is one clear error, exit 2, before
a single connection is made; and a redirect is never followed (the key would go along)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from conftest import Project, run_module
from test_deploy_spec import UNPACKED, WORKER, RecordingApi, catalog_as_facts_say, write_manifest

from buildtool.deploy.runpod_api import RunPodApi, checked_api_url
from buildtool.errors import ConfigError

KEY = "rpa_" + "K" * 40


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every name lookup and connection attempt, recorded and refused."""
    attempts: list[object] = []

    def refuse(*args: object, **kwargs: object) -> Any:
        attempts.append(args)
        raise OSError("the test allows no network")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    return attempts


def serve(handler: type[BaseHTTPRequestHandler]) -> tuple[ThreadingHTTPServer, str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture
def standin() -> Iterator[tuple[str, type[RecordingApi]]]:
    handler = type("Handler", (RecordingApi,), {"records": [], "status": 201, "gpus": catalog_as_facts_say()})
    server, url = serve(handler)
    yield url, handler
    server.shutdown()


REFUSED = [
    "http://example.com",
    "http://10.255.255.1",
    "http://10.255.255.1:8080/v2",
    "HTTP://api.runpod.io",
    "http://api.runpod.io",
    "http://127.0.0.1@example.com/",  # the host is example.com; 127.0.0.1 is a user name
    "http://127.0.0.1.nip.io:8080",
    "http://localhost.example.com",
    "http://0.0.0.0:8080",
    "http://[::2]:8080",
    "http://[fe80::1]:8080",
]


@pytest.mark.parametrize("url", REFUSED)
def test_plain_http_off_this_machine_is_refused_before_any_connection(
    cli,  # type: ignore[no-untyped-def]
    project: Project,
    monkeypatch: pytest.MonkeyPatch,
    no_network: list[object],
    url: str,
) -> None:
    monkeypatch.setenv("RUNPOD_API_KEY", KEY)
    write_manifest(project, {WORKER: UNPACKED})
    result = cli("deploy", "--matrix", str(project.matrix), "--endpoint", "embed", "--api-url", url)
    assert result.code == 2, result.out + result.err
    assert f"--api-url '{url}' is plain http" in result.err
    assert "sent unencrypted" in result.err and "fix: use https://" in result.err
    assert "Traceback" not in result.err and KEY not in result.out + result.err
    assert no_network == []


def test_plain_http_from_the_environment_is_refused_too(
    cli, project: Project, monkeypatch, no_network
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("RUNPOD_API_KEY", KEY)
    monkeypatch.setenv("RUNPOD_API_URL", "http://10.255.255.1")
    write_manifest(project, {WORKER: UNPACKED})
    result = cli("deploy", "--matrix", str(project.matrix), "--endpoint", "embed")
    assert result.code == 2, result.out + result.err
    assert "$RUNPOD_API_URL 'http://10.255.255.1' is plain http" in result.err
    assert no_network == [] and "Traceback" not in result.err


def test_a_dry_run_with_plain_http_is_refused_too(cli, project: Project, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("RUNPOD_API_KEY", raising=False)
    write_manifest(project, {WORKER: UNPACKED})
    args = ("deploy", "--matrix", str(project.matrix), "--endpoint", "e", "--dry-run")
    result = cli(*args, "--api-url", "http://example.com")
    assert result.code == 2 and "is plain http" in result.err


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_a_stand_in_on_loopback_is_sent_to_over_http(
    cli, project: Project, monkeypatch, standin, host: str
) -> None:  # type: ignore[no-untyped-def]
    url, api = standin
    monkeypatch.setenv("RUNPOD_API_KEY", KEY)
    write_manifest(project, {WORKER: UNPACKED})
    url = url.replace("127.0.0.1", host)
    result = cli("deploy", "--matrix", str(project.matrix), "--endpoint", "embed", "--api-url", url)
    assert result.code == 0, result.out + result.err
    assert [r["path"] for r in api.records] == ["/v2/catalog/gpus", "/v2/templates", "/v2/serverless"]
    assert {r["auth"] for r in api.records} == {f"Bearer {KEY}"}


@pytest.mark.parametrize(
    "url",
    [
        "https://api.runpod.io",
        "https://rest.runpod.io/v1",
        "HTTPS://api.runpod.io",
        "https://10.0.0.5:8443",
        "http://127.0.0.1:8080",
        "http://127.5.6.7",
        "http://localhost:1234/v2",
        "http://LOCALHOST:1234",
        "http://[::1]:8080",
        "http://[::ffff:127.0.0.1]:8080",
    ],
)
def test_https_or_loopback_is_taken(url: str) -> None:
    assert checked_api_url(url) == url


@pytest.mark.parametrize(
    ("url", "says"),
    [
        *((url, "is plain http") for url in REFUSED),
        ("ftp://api.runpod.io", "is not an https:// URL with a host"),
        ("api.runpod.io", "is not an https:// URL with a host"),
        ("https://", "is not an https:// URL with a host"),
        ("http://localhost:port", "is not an https:// URL with a host"),
        ("", "is not an https:// URL with a host"),
    ],
)
def test_anything_else_is_one_config_error(url: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says) as raised:
        checked_api_url(url, "--api-url")
    [problem] = raised.value.problems
    assert problem.hint and problem.message.startswith("--api-url")


def test_the_client_itself_refuses_plain_http(no_network: list[object]) -> None:
    with pytest.raises(ConfigError, match="is plain http"):
        RunPodApi(KEY, "http://10.255.255.1")
    assert no_network == []


def test_a_redirect_is_not_followed_with_the_key(cli, project: Project, monkeypatch, standin) -> None:  # type: ignore[no-untyped-def]
    """A stand-in that redirects to another host: the key stays here, and the answer is an error."""
    elsewhere, api = standin
    redirected: list[str | None] = []

    class Redirect(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            redirected.append(self.headers["Authorization"])
            self.send_response(302)
            self.send_header("Location", f"{elsewhere}{self.path}")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server, url = serve(Redirect)
    try:
        monkeypatch.setenv("RUNPOD_API_KEY", KEY)
        write_manifest(project, {WORKER: UNPACKED})
        result = cli("deploy", "--matrix", str(project.matrix), "--endpoint", "embed", "--api-url", url)
    finally:
        server.shutdown()
    assert result.code == 1, result.out + result.err
    assert "302" in result.err and "redirect is not followed" in result.err
    assert redirected == [f"Bearer {KEY}"] and api.records == []


def test_a_loopback_stand_in_is_reached_directly_not_through_a_proxy(project: Project, standin) -> None:  # type: ignore[no-untyped-def]
    """An http_proxy would carry the key in plain text; for loopback, none is used (a process that
    starts with the proxy set, as a user's shell has it)."""
    url, api = standin
    write_manifest(project, {WORKER: UNPACKED})
    proxy = "http://127.0.0.1:9"  # nothing listens there: a proxied request fails
    env = {"RUNPOD_API_KEY": KEY, "http_proxy": proxy, "HTTP_PROXY": proxy, "no_proxy": "", "NO_PROXY": ""}
    result = run_module(
        "deploy", "--matrix", str(project.matrix), "--endpoint", "embed", "--api-url", url, env=env
    )
    assert result.code == 0, result.out + result.err
    assert {r["auth"] for r in api.records} == {f"Bearer {KEY}"}
