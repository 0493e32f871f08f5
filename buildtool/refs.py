"""Image references: one parser for the whole package, as the distribution reference grammar and the
Docker engine read them (docker/distribution `reference`: ParseNormalizedNamed).

    python:3.11-slim                    -> docker.io/library/python:3.11-slim
    index.docker.io/nvidia/cuda:13.0.0  -> docker.io/nvidia/cuda:13.0.0   (a Docker Hub alias)
    localhost:5000/tiny@sha256:...      -> localhost:5000/tiny@sha256:...

Policies compare normalised names, so a refused repository cannot be reached through another
spelling of the same image.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

DOCKER_HUB = "docker.io"
# Hosts that name Docker Hub: the engine's legacy default, its API endpoint and its web host.
DOCKER_HUB_ALIASES = frozenset(
    {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}
)
OFFICIAL_NAMESPACE = "library"

_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
DOMAIN = re.compile(rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?")
PATH_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
TAG = re.compile(r"[\w][\w.-]{0,127}")
DIGEST = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}")
MAX_NAME = 255


class InvalidReference(ValueError):
    """Not an image reference; the message says why."""


@dataclass(frozen=True)
class ImageRef:
    domain: str  # normalised: Docker Hub's aliases are docker.io
    path: str  # "library/python", "nvidia/cuda"
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """The normalised repository name: docker.io/library/python."""
        return f"{self.domain}/{self.path}"

    @property
    def familiar(self) -> str:
        """The repository as users write it: python, nvidia/cuda, ghcr.io/org/image."""
        if self.domain == DOCKER_HUB:
            return self.path.removeprefix(f"{OFFICIAL_NAMESPACE}/")
        return self.name

    @property
    def tag_or_latest(self) -> str:
        return self.tag or "latest"

    def __str__(self) -> str:
        return self.name + (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")

    def by_digest(self, digest: str) -> ImageRef:
        """The repository at `digest`, no tag: what runs exactly one image."""
        return ImageRef(self.domain, self.path, None, digest)

    def same_image(self, other: ImageRef) -> bool:
        """The same repository and tag (a digest pin does not make it another image)."""
        return self.name == other.name and self.tag_or_latest == other.tag_or_latest

    def is_under(self, prefix: str) -> bool:
        """Whether this image lives under `prefix` (a registry host, or host/namespace)."""
        wanted = prefix.rstrip("/")
        if "/" not in wanted:
            return self.domain == normalise_domain(wanted)
        return self.name == _normalise_name(wanted) or self.name.startswith(_normalise_name(wanted) + "/")


def normalise_domain(domain: str) -> str:
    return DOCKER_HUB if domain.lower() in DOCKER_HUB_ALIASES else domain


def _normalise_name(name: str) -> str:
    return parse(name).name


@functools.lru_cache(maxsize=65536)  # a plan's Dockerfiles name the same few references
def parse(text: str) -> ImageRef:
    """Parse and normalise an image reference; InvalidReference says what is wrong."""
    if not text or text != text.strip() or any(c.isspace() for c in text):
        raise InvalidReference(f"'{text}' has spaces or is empty")
    remainder, at, digest = text.partition("@")
    if at and not DIGEST.fullmatch(digest):
        raise InvalidReference(f"'{text}': '{digest}' is not a digest (algorithm:hex, e.g. sha256:...)")
    name, tag = remainder, None
    slash, colon = remainder.rfind("/"), remainder.rfind(":")
    if colon > slash:
        name, tag = remainder[:colon], remainder[colon + 1 :]
        if not TAG.fullmatch(tag):
            raise InvalidReference(f"'{text}': '{tag}' is not a tag (letters, digits, '_', '.', '-')")
    first, has_slash, rest = name.partition("/")
    # The engine's rule: the first component is a registry host when it has a '.' or ':', is
    # localhost, or has upper case (a repository path never does).
    if has_slash and (any(c in first for c in ".:") or first == "localhost" or first != first.lower()):
        domain, path = first, rest
        if not DOMAIN.fullmatch(domain):
            raise InvalidReference(f"'{text}': '{domain}' is not a registry host")
        if domain != domain.lower():
            raise InvalidReference(f"'{text}': registry hosts are written in lower case ('{domain.lower()}')")
    else:
        domain, path = DOCKER_HUB, name
    domain = normalise_domain(domain)
    if path != path.lower():
        raise InvalidReference(f"'{text}': repository names are lower case ('{path.lower()}')")
    components = path.split("/")
    if not all(PATH_COMPONENT.fullmatch(c) for c in components):
        raise InvalidReference(f"'{text}': '{path}' is not a repository path")
    if domain == DOCKER_HUB and len(components) == 1:
        path = f"{OFFICIAL_NAMESPACE}/{path}"
    if len(f"{domain}/{path}") > MAX_NAME:
        raise InvalidReference(f"'{text}': the repository name is longer than {MAX_NAME} characters")
    return ImageRef(domain, path, tag, digest or None)


def try_parse(text: str) -> ImageRef | None:
    try:
        return parse(text)
    except InvalidReference:
        return None
