"""Is an image's lock installed whole? Run in the image right after
`pip install --no-deps --require-hashes -r requirements.lock` (images/_shared/macros.j2).

With --no-deps pip resolves nothing against the index, so a new upstream release cannot change or
break the install; but nothing then notices a lock that misses a dependency, until the worker fails
at import on RunPod. This fails the build instead, naming the package:
  1. each pin of the lock whose marker holds here is installed at exactly its version;
  2. each requirement of those distributions, with the extras that other requirements ask of them
     (pydantic[email] needs email-validator), is installed at a version it accepts: the lock's own
     packages or the base's (torch and what it installs, which the lock leaves to the base).
Unlike `pip check`, it follows extras, and it leaves alone what the base image ships broken among
its own packages (nothing of the lock depends on it).

Standalone (it runs before the smoke package is copied in): the standard library and the packaging
that pip vendors; Python 3.8 and newer. Exit 0 with one line, or 1 with one line per problem, each
starting with 'lockcheck: ' (buildtool names them in a failed build's message).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

try:  # pip, which just installed the lock, carries packaging
    from pip._vendor.packaging.requirements import InvalidRequirement, Requirement
    from pip._vendor.packaging.utils import canonicalize_name
    from pip._vendor.packaging.version import InvalidVersion, Version
except ImportError:  # pragma: no cover - an interpreter without pip
    from packaging.requirements import InvalidRequirement, Requirement  # type: ignore[assignment]
    from packaging.utils import canonicalize_name  # type: ignore[assignment]
    from packaging.version import InvalidVersion, Version  # type: ignore[assignment]

PREFIX = "lockcheck: "
_OPTION = re.compile(r"\s--hash[= ]\S+")


def lock_requirements(text: str) -> list[Requirement]:
    """The requirements of a pip requirements file (continuation lines joined, options and comments
    left out)."""
    out: list[Requirement] = []
    for logical in _logical_lines(text):
        line = _OPTION.sub("", " " + logical).strip()
        if not line or line.startswith("-"):
            continue  # --index-url and the like: not a package
        try:
            out.append(Requirement(line))
        except InvalidRequirement as exc:
            raise ValueError(f"not a requirement in the lock: {line!r}: {exc}") from None
    return out


def _logical_lines(text: str) -> list[str]:
    lines: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        line = "" if line.startswith("#") else line.split(" #", 1)[0].rstrip()
        if line.endswith("\\"):
            current += " " + line[:-1]
            continue
        current += " " + line
        if current.strip():
            lines.append(current.strip())
        current = ""
    if current.strip():
        lines.append(current.strip())
    return lines


def installed(path: list[str] | None = None) -> dict[str, metadata.Distribution]:
    """Installed distributions (on `path`, default sys.path) by canonical name; the first on the path
    wins, as import does."""
    out: dict[str, metadata.Distribution] = {}
    found = metadata.distributions() if path is None else metadata.distributions(path=path)
    for dist in found:
        name = dist.metadata["Name"]
        if name:
            out.setdefault(canonicalize_name(name), dist)
    return out


def _version(text: str) -> Version | None:
    try:
        return Version(text)
    except InvalidVersion:
        return None


def _applies(requirement: Requirement, extras: Iterable[str] = ("",)) -> bool:
    """Whether the requirement's marker holds for any of the spellings of an extra: the packaging
    that pip 24.0 and older vendor (21.3) compares extra names as written, not normalised."""
    marker = requirement.marker
    return marker is None or any(marker.evaluate({"extra": extra}) for extra in extras)


def _spellings(dist: metadata.Distribution, extra: str) -> set[str]:
    """An extra as asked (normalised) and as the distribution declares it (Provides-Extra)."""
    declared = dist.metadata.get_all("Provides-Extra") or []
    return {extra, extra.replace("-", "_")} | {e for e in declared if canonicalize_name(e) == extra}


def problems(lock_text: str, dists: dict[str, metadata.Distribution]) -> list[str]:
    """What is missing or at another version than the lock and its requirements want."""
    found: list[str] = []
    pins = [r for r in lock_requirements(lock_text) if _applies(r)]
    for pin in pins:
        dist = dists.get(canonicalize_name(pin.name))
        if dist is None:
            found.append(f"{pin} is in the lock but not installed")
            continue
        version = _version(dist.version)
        if version is None or not pin.specifier.contains(version, prereleases=True):
            found.append(f"the lock pins {pin}, but {dist.version} is installed")
    # Each distribution is checked once per extra asked of it, starting from the lock's pins.
    queue: list[tuple[str, str, str]] = [(canonicalize_name(p.name), "", "the lock") for p in pins]
    queue += [
        (canonicalize_name(p.name), canonicalize_name(e), "the lock") for p in pins for e in sorted(p.extras)
    ]
    seen: set[tuple[str, str]] = set()
    while queue:
        name, extra, asked_by = queue.pop(0)
        if (name, extra) in seen or name not in dists:
            continue
        seen.add((name, extra))
        dist = dists[name]
        holder = f"{dist.metadata['Name']} {dist.version}" + (
            f" [{extra}] (asked by {asked_by})" if extra else ""
        )
        spellings = _spellings(dist, extra) if extra else set()
        for text in dist.requires or []:
            try:
                requirement = Requirement(text)
            except InvalidRequirement:
                continue  # a distribution's own broken metadata: pip would not install it either
            if extra:  # only what the extra adds: the plain requirements are checked without it
                if (
                    requirement.marker is None
                    or not _applies(requirement, spellings)
                    or _applies(requirement)
                ):
                    continue
            elif not _applies(requirement):
                continue
            wanted = canonicalize_name(requirement.name)
            have = dists.get(wanted)
            if have is None:
                found.append(
                    f"{holder} requires {requirement.name}{requirement.specifier}, which is not installed"
                )
                continue
            version = _version(have.version)
            if version is None or not requirement.specifier.contains(version, prereleases=True):
                found.append(
                    f"{holder} requires {requirement.name}{requirement.specifier}, but {have.version} "
                    "is installed"
                )
            queue.append((wanted, "", holder))
            queue += [(wanted, canonicalize_name(e), holder) for e in sorted(requirement.extras)]
    return found


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python3 lockcheck.py requirements.lock", file=sys.stderr)
        return 2
    text = Path(argv[0]).read_text(encoding="utf-8")
    try:
        found = problems(text, installed())
    except ValueError as exc:
        found = [str(exc)]
    if not found:
        print(f"{PREFIX}{argv[0]}: every locked package and what it requires is installed")
        return 0
    for line in found:
        print(PREFIX + line)
    print(
        f"{PREFIX}{argv[0]} is not complete for this base: pip installed it with --no-deps, so what it "
        "lacks stays missing. Fix: buildtool lock-deps --image <image> (nox -s lock), and commit the lock"
    )
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
