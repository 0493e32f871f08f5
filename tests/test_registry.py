"""The registry client against a real registry:2 that wants credentials (htpasswd, Basic auth),
with credentials taken from a docker config.json as `docker login` writes it."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bcrypt
import pytest
from conftest import RegistryUnderTest, free_port, running_registry

from buildtool.errors import RegistryDenied, RegistryUnreachable
from buildtool.registry import HttpRegistry

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
