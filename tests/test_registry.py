"""The registry client against a real registry:2 that wants credentials (htpasswd, Basic auth),
with credentials taken from a docker config.json as `docker login` writes it."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest
from conftest import TEST_LABEL, docker_ok, free_port

from buildtool.localregistry import answers
from buildtool.registry import HttpRegistry, RegistryDenied, RegistryUnreachable

pytestmark = pytest.mark.container
USER, PASSWORD = "builder", "s3cret-for-tests"


@pytest.fixture
def private_registry(tmp_path: Path) -> Iterator[str]:
    from testcontainers.core.container import DockerContainer

    docker_ok()
    auth = tmp_path / "auth"
    auth.mkdir()
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=5)).decode()
    (auth / "htpasswd").write_text(f"{USER}:{hashed}\n")
    port = free_port()
    container = (
        DockerContainer("registry:2")
        .with_bind_ports(5000, port)
        .with_volume_mapping(str(auth), "/auth", "ro")
        .with_env("REGISTRY_AUTH", "htpasswd")
        .with_env("REGISTRY_AUTH_HTPASSWD_REALM", "tests")
        .with_env("REGISTRY_AUTH_HTPASSWD_PATH", "/auth/htpasswd")
        .with_kwargs(labels={TEST_LABEL: "1"})
    )
    container.start()
    try:
        address = f"localhost:{port}"
        deadline = time.monotonic() + 30
        while not answers(address) and time.monotonic() < deadline:
            time.sleep(0.2)
        yield address
    finally:
        container.stop()


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


def test_a_closed_port_is_unreachable(tmp_path: Path) -> None:
    with pytest.raises(RegistryUnreachable):
        HttpRegistry(docker_config=tmp_path).manifest(f"localhost:{free_port()}/x:y")
