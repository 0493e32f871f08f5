"""The embedded default registry: a registry:2 container that `buildtool build` starts itself when
no registry is configured, on localhost:5000 (the engine treats 127.0.0.0/8 as insecure: plain HTTP).
Its data lives in a named volume, so images and build cache survive a restart.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request

from buildtool.errors import EngineError, Problem

CONTAINER = "buildtool-registry"
VOLUME = "buildtool-registry-data"
IMAGE = "registry:2"


def answers(address: str, timeout: float = 2.0) -> bool:
    """Whether a distribution registry answers on http://<address>/v2/."""
    try:
        with urllib.request.urlopen(f"http://{address}/v2/", timeout=timeout) as response:
            return bool(response.status == 200)
    except urllib.error.HTTPError as exc:
        return exc.code == 401  # a registry that wants credentials is still a registry
    except (OSError, ValueError):
        return False


def ensure_embedded_registry(address: str, wait_seconds: float = 30) -> str:
    """Make sure a registry answers on `address` (localhost:PORT), starting registry:2 if none does.
    Returns a sentence saying where it is, for the user."""
    if answers(address):
        return f"using the registry that answers on {address}"
    port = int(address.rsplit(":", 1)[1])
    import docker  # the SDK is only needed here: importing it costs every command 60 ms of startup
    import docker.errors

    try:
        client = docker.from_env()
        try:
            container = client.containers.get(CONTAINER)
            container.start()
            action = "restarted"
        except docker.errors.NotFound:
            client.containers.run(
                IMAGE,
                name=CONTAINER,
                detach=True,
                ports={"5000/tcp": ("127.0.0.1", port)},
                volumes={VOLUME: {"bind": "/var/lib/registry", "mode": "rw"}},
                restart_policy={"Name": "unless-stopped"},
                labels={"org.runpod-images.role": "embedded-registry"},
            )
            action = "started"
    except docker.errors.ImageNotFound:
        raise EngineError(
            Problem(
                f"the embedded registry needs the {IMAGE} image, which the engine lacks",
                hint=f"docker pull {IMAGE} (or ../shared/ci/seed-images.sh)",
            )
        ) from None
    except docker.errors.DockerException as exc:
        raise EngineError(
            Problem(
                f"cannot start the embedded registry: {exc}",
                hint="start a Docker engine (../shared/ci/engine.sh), or set REGISTRY",
            )
        ) from None
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        if answers(address):
            where = f"(container {CONTAINER}, volume {VOLUME})"
            return f"{action} the embedded registry {IMAGE} on {address} {where}"
        time.sleep(0.3)
    raise EngineError(
        Problem(
            f"the embedded registry did not answer on {address} within {wait_seconds:g} s",
            hint=f"docker logs {CONTAINER}",
        )
    )
