"""The registry client against a real registry:2 that wants credentials (htpasswd, Basic auth),
with credentials taken from a docker config.json as `docker login` writes it."""

from __future__ import annotations

import base64
import gzip
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import bcrypt
import pytest
from conftest import Project, RegistryUnderTest, free_port, running_registry

from buildtool.errors import RegistryDenied, RegistryError, RegistryUnreachable
from buildtool.registry.client import HttpRegistry

pytestmark = pytest.mark.container
USER, PASSWORD = "builder", "s3cret-for-tests"


@pytest.fixture
def private_registry(tmp_path: Path) -> Iterator[str]:
    auth = tmp_path / "auth"
    auth.mkdir()
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=5)).decode()
    (auth / "htpasswd").write_text(f"{USER}:{hashed}\n")

    def with_htpasswd(container: Any) -> Any:
        return (
            container.with_volume_mapping(str(auth), "/auth", "ro")
            .with_env("REGISTRY_AUTH", "htpasswd")
            .with_env("REGISTRY_AUTH_HTPASSWD_REALM", "tests")
            .with_env("REGISTRY_AUTH_HTPASSWD_PATH", "/auth/htpasswd")
        )

    with running_registry(with_htpasswd) as running:
        yield running.address


def docker_config(directory: Path, host: str, user: str, password: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    (directory / "config.json").write_text(json.dumps({"auths": {host: {"auth": token}}}))
    return directory


def test_credentials_from_docker_config_are_used(private_registry: str, tmp_path: Path) -> None:
    client = HttpRegistry(docker_config=docker_config(tmp_path / "good", private_registry, USER, PASSWORD))
    assert client.manifest(f"{private_registry}/nothing:here") is None  # authenticated, and absent


def test_wrong_or_missing_credentials_say_docker_login(private_registry: str, tmp_path: Path) -> None:
    wrong = HttpRegistry(docker_config=docker_config(tmp_path / "bad", private_registry, USER, "nope"))
    with pytest.raises(RegistryDenied, match="docker login"):
        wrong.manifest(f"{private_registry}/nothing:here")
    none = HttpRegistry(docker_config=tmp_path / "empty")
    with pytest.raises(RegistryDenied, match="docker login"):
        none.manifest(f"{private_registry}/nothing:here")


def test_parallel_pushes_to_a_registry_that_wants_credentials_all_succeed(
    private_registry: str, tmp_path: Path
) -> None:
    """`build --jobs N` pushes variants at once with one client: a push refused before another
    thread's credentials arrived is repeated with them, not failed with 401."""
    from concurrent.futures import ThreadPoolExecutor

    from fakes import write_layout

    layouts = []
    for n in range(6):
        layout = tmp_path / f"v{n}"
        layouts.append((layout, write_layout(layout, os.urandom(50_000).hex(), {"Labels": {"n": str(n)}})))
    client = HttpRegistry(docker_config=docker_config(tmp_path / "good", private_registry, USER, PASSWORD))
    with ThreadPoolExecutor(max_workers=6) as pool:
        pushed = list(
            pool.map(
                lambda job: client.push_layout(job[0], job[1], f"{private_registry}/parallel:{job[0].name}"),
                layouts,
            )
        )
    assert len(pushed) == 6
    for layout, digest in layouts:
        assert client.manifest(f"{private_registry}/parallel:{layout.name}").digest == digest  # type: ignore[union-attr]


@pytest.mark.slow
def test_a_build_with_a_wrong_password_says_docker_login_not_start_it(  # type: ignore[no-untyped-def]
    cli, tiny: Project, private_registry: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(docker_config(tmp_path / "bad", private_registry, USER, "nope")))
    result = cli("build", "--matrix", str(tiny.matrix), "--registry", private_registry, "--jobs", "1")
    assert result.code != 0
    assert f"docker login {private_registry}" in result.out + result.err
    assert "start it" not in result.out + result.err and "unreachable" not in result.out + result.err


def test_a_build_pushes_through_the_engine_with_docker_logins_credentials(  # type: ignore[no-untyped-def]
    cli, tiny: Project, private_registry: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine pushes (docker's own credentials go with the request, as `docker push` sends
    them), the registry cache is written with buildx's, and the tags move with ours."""
    monkeypatch.setenv(
        "DOCKER_CONFIG", str(docker_config(tmp_path / "good", private_registry, USER, PASSWORD))
    )
    result = cli(
        "build", "--matrix", str(tiny.matrix), "--registry", private_registry, "--select", "tiny-slim"
    )
    assert result.code == 0, result.out + result.err
    manifest = json.loads((tiny.root / "build" / "manifest.json").read_text())
    entry = manifest["variants"]["tiny-slim"]
    assert entry["status"] == "pushed"
    client = HttpRegistry(docker_config=tmp_path / "good")
    for tag in [entry["tags"]["immutable"], *entry["tags"]["moving"]]:
        remote = client.manifest(tag)
        assert remote is not None and remote.digest == entry["digest"], tag


def test_a_closed_port_is_unreachable(tmp_path: Path) -> None:
    with pytest.raises(RegistryUnreachable):
        HttpRegistry(docker_config=tmp_path).manifest(f"localhost:{free_port()}/x:y")


def test_variants_pushed_at_once_share_their_base_layers_without_a_race(
    registry: RegistryUnderTest, tmp_path: Path
) -> None:
    """Parallel builds push images that share layers; registry:2 refuses two concurrent uploads of
    one blob (DIGEST_INVALID), so each blob goes up once and the others find it."""
    from concurrent.futures import ThreadPoolExecutor

    from fakes import write_layout

    shared = os.urandom(8_000_000).hex()  # one 16 MB layer in every image
    layouts = []
    for n in range(6):
        layout = tmp_path / f"v{n}"
        layouts.append((layout, write_layout(layout, shared, {"Labels": {"n": str(n)}})))
    client = HttpRegistry()
    with ThreadPoolExecutor(max_workers=6) as pool:
        pushed = list(
            pool.map(
                lambda job: client.push_layout(job[0], job[1], f"{registry.address}/shared:v{job[0].name}"),
                layouts,
            )
        )
    assert sum(1 for b in pushed if b > 4_000_000) == 1, pushed  # the (8 MB compressed) layer went up once
    for layout, digest in layouts:
        assert registry.digest("shared", f"v{layout.name}") == digest


class Storage:
    """A blob store behind a registry's redirects that, like S3 with a presigned URL, refuses a
    request that also carries an Authorization header."""

    def __init__(self, root: Path) -> None:
        import http.server
        import threading

        self.root, self.seen = root, []
        storage = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                storage.seen.append((self.command, self.path, self.headers.get("Authorization")))
                path = storage.root / self.path.split("?")[0].lstrip("/")
                if self.headers.get("Authorization"):
                    self.send_error(400, "Only one auth mechanism allowed")
                    return
                if not path.is_file():
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(path.stat().st_size))
                self.end_headers()
                if self.command == "GET":
                    with path.open("rb") as stream:
                        shutil.copyfileobj(stream, self.wfile)

            do_HEAD = do_GET

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def redirecting_registry(tmp_path: Path) -> Iterator[tuple[str, Storage]]:
    """registry:2 with its `redirect` storage middleware (as ECR and Docker Hub send blobs to S3 or a
    CDN), wanting credentials; blobs are served by a Storage on another origin (127.0.0.1)."""
    stored = tmp_path / "storage"
    stored.mkdir()
    storage = Storage(stored)
    auth = tmp_path / "auth"
    auth.mkdir()
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=5)).decode()
    (auth / "htpasswd").write_text(f"{USER}:{hashed}\n")
    (auth / "config.yml").write_text(
        "version: 0.1\n"
        "storage:\n  filesystem:\n    rootdirectory: /var/lib/registry\n"
        "middleware:\n  storage:\n    - name: redirect\n"
        f"      options:\n        baseurl: http://127.0.0.1:{storage.port}/\n"
        "http:\n  addr: :5000\n"
        "auth:\n  htpasswd:\n    realm: tests\n    path: /auth/htpasswd\n"
    )

    def configured(container: Any) -> Any:
        # The image's own config path (its command names it): an argument would differ between
        # the image's entrypoint script and the bare binary.
        return (
            container.with_volume_mapping(str(auth), "/auth", "ro")
            .with_volume_mapping(str(auth / "config.yml"), "/etc/docker/registry/config.yml", "ro")
            .with_volume_mapping(str(stored), "/var/lib/registry", "rw")
        )

    try:
        with running_registry(configured) as running:
            yield running.address, storage
    finally:
        storage.server.shutdown()
        # The registry wrote its storage as root: removed from inside, for a rootless engine too.
        subprocess.run(
            [
                "docker",
                "run",
                "--rm",
                "-v",
                f"{stored}:/s",
                "--entrypoint",
                "rm",
                "registry:2",
                "-rf",
                "/s/docker",
            ],
            capture_output=True,
            check=False,
        )


def test_blobs_redirected_to_storage_are_fetched_without_the_registry_credentials(
    redirecting_registry: tuple[str, Storage], tmp_path: Path
) -> None:
    """urllib forwards Authorization on a redirect; S3 then answers 400 and other storage is handed
    the user's password. Docker drops it when the redirect leaves the registry's origin; so do we."""
    from fakes import write_layout

    from buildtool.build.oci import registry_unpacked_size

    address, storage = redirecting_registry
    layout = tmp_path / "layout"
    content = "layer " * 50_000
    digest = write_layout(layout, content, {"Labels": {"a": "b"}})
    client = HttpRegistry(docker_config=docker_config(tmp_path / "login", address, USER, PASSWORD))
    sent: list[int] = []  # what a progress line counts, chunk by chunk
    uploaded = client.push_layout(layout, digest, f"{address}/app:one", sent.append)
    assert len(sent) > 1 and sum(sent) == uploaded > 0
    manifest = client.manifest(f"{address}/app@{digest}")
    assert manifest is not None
    layer = manifest.document["layers"][0]  # type: ignore[index]
    config = manifest.document["config"]  # type: ignore[index]

    assert json.loads(client.blob(f"{address}/app", config["digest"]))["config"] == {"Labels": {"a": "b"}}
    with client.open_blob(f"{address}/app", layer["digest"]) as stream:
        assert gzip.decompress(stream.read()).decode() == content
    assert registry_unpacked_size(client, f"{address}/app", manifest, tmp_path / "sizes.json") == len(content)

    fetched = [(method, path) for method, path, _ in storage.seen if method == "GET"]
    assert any(layer["digest"].split(":")[1] in path for _, path in fetched), storage.seen
    assert [seen for seen in storage.seen if seen[2]] == []  # no credentials left the registry


def test_a_layer_is_measured_without_holding_it_in_memory(
    registry: RegistryUnderTest, tmp_path: Path
) -> None:
    """Measuring a base's layers (GBs for CUDA) streams them: memory stays far below a layer's size."""
    import tracemalloc

    from fakes import write_layout

    from buildtool.build.oci import registry_unpacked_size

    layout = tmp_path / "layout"
    content = os.urandom(16_000_000).hex()  # 32 MB unpacked, about 18 MB compressed
    digest = write_layout(layout, content)
    del content
    client = HttpRegistry()
    client.push_layout(layout, digest, f"{registry.address}/big:one")
    manifest = client.manifest(f"{registry.address}/big@{digest}")
    assert manifest is not None
    tracemalloc.start()
    try:
        size = registry_unpacked_size(client, f"{registry.address}/big", manifest, tmp_path / "sizes.json")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert size == 32_000_000
    assert peak < 8_000_000, f"peak {peak / 1e6:.1f} MB while measuring a 32 MB layer"


class Proxy:
    """A forwarding proxy in front of a registry; `intercept(handler, upstream answer or None)` may
    answer instead (True: handled), before (answer None) or after the registry saw the request."""

    def __init__(self, upstream: str, intercept: Callable[[Any, Any], bool]) -> None:
        import http.client
        import http.server
        import threading

        self.requests: list[tuple[str, str]] = []
        proxy = self

        class Forward(http.server.BaseHTTPRequestHandler):
            def forward(self) -> None:
                proxy.requests.append((self.command, self.path))
                if intercept(self, None):
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                connection = http.client.HTTPConnection(upstream, timeout=30)
                # The client's Host goes on: the registry's upload Location names it, so the PUT comes here.
                connection.request(self.command, self.path, body=body, headers=dict(self.headers.items()))
                answer = connection.getresponse()
                data = answer.read()
                if intercept(self, answer):
                    return
                self.send_response(answer.status)
                for name, value in answer.getheaders():
                    if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_HEAD = do_POST = do_PUT = forward

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Forward)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def __enter__(self) -> Proxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()


def answer(handler: Any, status: int, headers: dict[str, str] | None = None) -> bool:
    handler.send_response(status)
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.send_header("Content-Length", "0")
    handler.end_headers()
    return True


def test_a_commit_whose_answer_is_lost_is_found_committed(
    registry: RegistryUnderTest, tmp_path: Path
) -> None:
    """A large blob's commit can outlast the client's wait (GHCR takes seconds per GB), or its answer
    can be lost: the push asks the registry whether it holds the blob before failing."""
    from fakes import write_layout

    lost: list[str] = []

    def lose_commit_answers(handler: Any, upstream: Any) -> bool:
        if upstream is None or handler.command != "PUT" or "/blobs/uploads/" not in handler.path:
            return False
        if upstream.status == 201:
            lost.append(handler.path)
            handler.close_connection = True  # committed upstream; the client never hears it
            return True
        return False

    with Proxy(registry.address, lose_commit_answers) as proxy:
        layout = tmp_path / "layout"
        digest = write_layout(layout, os.urandom(500_000).hex())
        HttpRegistry().push_layout(layout, digest, f"{proxy.address}/lost:one")
    assert len(lost) == 2  # the layer's and the config's commits both lost their answer
    assert registry.digest("lost", "one") == digest


def test_a_registry_briefly_unavailable_is_asked_again(
    registry: RegistryUnderTest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GHCR and Docker Hub answer 502/503 now and then: a read or a tag is repeated (twice, after
    a pause); a rate limit that lifts in an hour fails at once and says what to do."""
    from fakes import write_layout

    from buildtool.registry import http

    monkeypatch.setattr(http, "RETRY_DELAYS", (0.05, 0.05))
    layout = tmp_path / "layout"
    digest = write_layout(layout, "content")
    HttpRegistry().push_layout(layout, digest, f"{registry.address}/flaky:one")
    failures = iter([503, 502])

    def unavailable_twice(handler: Any, upstream: Any) -> bool:
        if upstream is None and "/manifests/" in handler.path:
            status = next(failures, None)
            return answer(handler, status) if status else False
        return False

    with Proxy(registry.address, unavailable_twice) as proxy:
        manifest = HttpRegistry().manifest(f"{proxy.address}/flaky:one")
        assert manifest is not None and manifest.digest == digest
        assert [m for m, p in proxy.requests if "/manifests/" in p] == ["GET"] * 3

    with Proxy(registry.address, lambda h, u: u is None and answer(h, 503)) as proxy:
        with pytest.raises(RegistryError, match="answered 503"):
            HttpRegistry().manifest(f"{proxy.address}/flaky:one")
        assert len(proxy.requests) == 3  # three attempts, then the error

    def rate_limited(handler: Any, upstream: Any) -> bool:
        return upstream is None and answer(handler, 429, {"Retry-After": "3600"})

    with Proxy(registry.address, rate_limited) as proxy:
        with pytest.raises(RegistryError, match=r"rate-limiting.*docker login"):
            HttpRegistry().manifest(f"{proxy.address}/flaky:one")
        assert len(proxy.requests) == 1  # not worth waiting an hour for
