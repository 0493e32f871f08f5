"""HTTP for the registry client: `docker login`'s credentials, Basic and Bearer token challenges, and
redirects that keep credentials on the registry's own origin, and when to repeat a request.

Registries serve blobs by redirecting to storage: ECR to presigned S3 URLs, Docker Hub to its CDN,
registry:2 with its `redirect` storage middleware. urllib's redirect handler forwards every header,
the registry's Authorization included: S3 answers 400 ("Only one auth mechanism allowed") and any
other storage host would be handed the user's credentials. Docker (Go's net/http) drops Authorization
when a redirect leaves the origin; so does this.
"""

from __future__ import annotations

import base64
import json
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from buildtool.errors import RegistryDenied, RegistryError

RETRY_DELAYS = (1.0, 4.0)  # seconds before the 2nd and the 3rd attempt of a repeatable request
TRANSIENT_STATUSES = (429, 500, 502, 503, 504)
MAX_RETRY_AFTER = 30.0  # a rate limit that lifts later than this fails now, and says so

Send = Callable[[str, str, dict[str, str]], tuple[int, bytes]]  # (method, url, headers) -> (status, body)


def origin(url: str) -> tuple[str, str]:
    parts = urllib.parse.urlsplit(url)
    default = {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, f"{(parts.hostname or '').lower()}:{parts.port or default}"


class SameOriginCredentials(urllib.request.HTTPRedirectHandler):
    """Follows redirects as urllib does, without Authorization once the redirect leaves the origin."""

    def redirect_request(
        self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any, newurl: str
    ) -> urllib.request.Request | None:
        redirected = super().redirect_request(req, fp, code, msg, headers, newurl)
        if redirected is not None and origin(newurl) != origin(req.full_url):
            for name in [n for n in redirected.headers if n.lower() == "authorization"]:
                del redirected.headers[name]
            redirected.unredirected_hdrs.pop("Authorization", None)
        return redirected


def opener() -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(SameOriginCredentials())


def docker_credentials(docker_config: Path, host: str) -> tuple[str | None, str | None]:
    """`docker login`'s user and secret for `host`: credHelpers, credsStore, then config.json auths."""
    config_path = docker_config / "config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    helper = config.get("credHelpers", {}).get(host) or config.get("credsStore")
    if helper:
        done = subprocess.run(
            [f"docker-credential-{helper}", "get"],
            input=host,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode == 0:
            answer = json.loads(done.stdout)
            return answer.get("Username"), answer.get("Secret")
    entry = config.get("auths", {}).get(host) or config.get("auths", {}).get(f"https://{host}")
    if entry and entry.get("auth"):
        user, _, secret = base64.b64decode(entry["auth"]).decode().partition(":")
        return user, secret
    return None, None


def authorization(
    host: str, challenge: str, scope: str, credentials: tuple[str | None, str | None], send: Send
) -> str:
    """The Authorization value that answers a 401's WWW-Authenticate `challenge` for `scope`."""
    scheme, _, params = challenge.partition(" ")
    user, secret = credentials
    basic = "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode() if user else None
    if scheme.lower() == "basic":
        if basic is None:
            raise RegistryDenied(f"{host} wants credentials: run docker login {host}")
        return basic
    fields = dict(part.split("=", 1) for part in split_challenge(params))
    fields = {k.strip().lower(): v.strip('"') for k, v in fields.items()}
    if "realm" not in fields:
        raise RegistryDenied(f"{host} answered 401 with an unusable challenge '{challenge}'")
    query = urllib.parse.urlencode({"service": fields.get("service", host), "scope": scope})
    status, body = send("GET", f"{fields['realm']}?{query}", {"Authorization": basic} if basic else {})
    if status != 200:
        raise RegistryDenied(f"{host} refused a token for {scope} ({status}): run docker login {host}")
    answer = json.loads(body)
    return "Bearer " + str(answer.get("token") or answer.get("access_token"))


def split_challenge(params: str) -> list[str]:
    """'realm="a,b",service="x"' -> ['realm="a,b"', 'service="x"'] (commas inside quotes kept)."""
    parts, current, quoted = [], "", False
    for char in params:
        if char == '"':
            quoted = not quoted
        if char == "," and not quoted:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    if current.strip():
        parts.append(current.strip())
    return parts


def retry_wait(status: int, retry_after: str | None, delay: float | None) -> float | None:
    """Seconds to wait before repeating a request that got `status`, or None to answer with it: a
    registry that is briefly unavailable is asked again; a rate limit only when it lifts soon."""
    if delay is None or status not in TRANSIENT_STATUSES:
        return None
    if retry_after is None:
        return delay
    try:
        wait = float(retry_after)
    except ValueError:
        return delay  # an HTTP date: not worth parsing for a short wait
    return wait if wait <= MAX_RETRY_AFTER else None


def lower_keys(items: Iterable[tuple[str, str]]) -> dict[str, str]:
    """HTTP header names are case-insensitive (Go's registry sends 'Www-Authenticate')."""
    return {key.lower(): value for key, value in items}


def raise_for(status: int, body: bytes, ref: str) -> None:
    """The error an answer of `status` is, with what to run; nothing for a success."""
    if status == 429:
        raise RegistryError(
            f"{ref}: the registry is rate-limiting this client (429): wait, or docker login to the "
            "registry (Docker Hub's limits are far higher for a signed-in account)"
        )
    if status in (401, 403):
        host = ref.split("/", 1)[0]
        what = "the credentials were refused" if status == 401 else "this account may not push or pull here"
        raise RegistryDenied(
            f"{ref}: {what} ({status}): run docker login {host} with an account that may push to it"
        )
    if status >= 400:
        raise RegistryError(f"{ref}: the registry answered {status}: {body[:200].decode('utf-8', 'replace')}")
