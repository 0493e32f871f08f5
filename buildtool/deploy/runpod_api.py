"""RunPod's REST API v2, as the deploy command calls it: plain HTTPS with the user's API key.

Only what a deploy sends: a read of the GPU catalog, JSON bodies to the create operations,
`Authorization: Bearer <key>`, and errors as RunPod answers them (`application/problem+json`: title,
detail, status).
"""

from __future__ import annotations

import ipaddress
import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from buildtool.deploy.specs import RUNPOD_API, ApiRequest
from buildtool.errors import ConfigError, DeployError, Problem

USER_AGENT = "runpod-images-buildtool"


def is_loopback(host: str) -> bool:
    """localhost, 127.0.0.0/8, ::1 (and ::ffff:127.x): what never leaves this machine."""
    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or bool(mapped and mapped.is_loopback)


def checked_api_url(url: str, source: str = "the API URL") -> str:
    """`url` if the API key may be sent to it: https, or http to this machine only (a stand-in).
    ConfigError (exit 2) otherwise, before anything is sent; `source` says where the URL came from."""
    parts = urllib.parse.urlsplit(url)
    try:
        host = parts.hostname
        _ = parts.port  # a port that is not a number raises ValueError
    except ValueError:
        host = None
    if parts.scheme not in ("https", "http") or not host:
        raise ConfigError(
            Problem(
                f"{source} '{url}' is not an https:// URL with a host",
                hint=f"set {source} to {RUNPOD_API}, or leave it unset",
            )
        )
    if parts.scheme == "http" and not is_loopback(host):
        raise ConfigError(
            Problem(
                f"{source} '{url}' is plain http: the RunPod API key would be sent unencrypted to {host} "
                "(Authorization: Bearer); nothing was sent",
                hint=f"use https:// (RunPod's API is {RUNPOD_API}); plain http is taken only for a local "
                "stand-in on localhost, 127.0.0.0/8 or [::1]",
            )
        )
    return url


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is not followed: urllib would send the key on to wherever it points (http too)."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)
# A loopback stand-in is reached directly: an http_proxy would carry the key in plain text.
_LOOPBACK_OPENER = urllib.request.build_opener(_NoRedirect, urllib.request.ProxyHandler({}))


class RunPodApi:
    def __init__(self, api_key: str, base_url: str = RUNPOD_API, timeout: float = 60) -> None:
        self.api_key = api_key
        self.base_url = checked_api_url(base_url).rstrip("/")
        self.timeout = timeout
        self._opener = _OPENER if self.base_url.startswith("https://") else _LOOPBACK_OPENER

    def send(self, request: ApiRequest, variant: str) -> dict[str, Any]:
        """The created resource, as RunPod answers it."""
        answer = self._call(request.method, request.path, request.body, request.operation, variant)
        return answer if isinstance(answer, dict) else {"answer": answer}

    def gpu_catalog(self, variant: str) -> dict[str, str | None]:
        """GPU type id -> its serverless pool today (`GET /v2/catalog/gpus`, listGpuTypes)."""
        from buildtool.deploy.catalog import CATALOG_PATH, read_catalog

        answer = self._call("GET", CATALOG_PATH, None, "listGpuTypes", variant)
        return read_catalog(answer, self.base_url + CATALOG_PATH)

    def _call(self, method: str, path: str, body: object, operation: str, variant: str) -> object:
        url = self.base_url + path
        headers = {
            "Authorization": f"Bearer {self.api_key}",
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
        }
        data = None
        if body is not None:
            data = json.dumps(body, sort_keys=True).encode()
            headers["Content-Type"] = "application/json"
        http = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with self._opener.open(http, timeout=self.timeout) as response:
                answer = response.read()
        except urllib.error.HTTPError as exc:
            raise DeployError(
                Problem(
                    f"{operation} ({method} {url}) refused: {exc.code} {_reason(exc.read())}",
                    variant=variant,
                    hint=_hint(exc.code),
                )
            ) from None
        except (TimeoutError, urllib.error.URLError, ConnectionError) as exc:
            raise DeployError(
                Problem(
                    f"{operation}: {self.base_url} cannot be reached: {getattr(exc, 'reason', exc)}",
                    variant=variant,
                    hint="check the network, or --api-url / $RUNPOD_API_URL",
                )
            ) from None
        try:
            return json.loads(answer or b"{}")
        except ValueError:
            return {}


def _reason(body: bytes) -> str:
    try:
        problem = json.loads(body)
    except ValueError:
        return body[:300].decode("utf-8", "replace")
    if isinstance(problem, dict):
        parts = [str(problem[k]) for k in ("title", "detail", "error", "message") if problem.get(k)]
        errors = problem.get("errors")
        if isinstance(errors, list):
            parts += [json.dumps(e, sort_keys=True) for e in errors[:5]]
        if parts:
            return "; ".join(parts)
    return json.dumps(problem)[:300]


def _hint(status: int) -> str:
    if 300 <= status < 400:
        return "a redirect is not followed (the key would go with it): check --api-url / $RUNPOD_API_URL"
    if status in (401, 403):
        return (
            "check RUNPOD_API_KEY: it must read the GPU catalog and write templates and serverless "
            "endpoints (or pods)"
        )
    if status in (400, 409, 422):
        return "the spec does not fit the account (a template of that name, an unknown volume id?)"
    return "try again; RunPod may be busy"
