"""Python dependency locks per image: images/<name>/requirements.in -> requirements.lock.

The lock is every package the image's `pip install` adds, transitive ones included, each pinned
with its hashes, installed with `pip install --no-deps --require-hashes`: nothing is resolved at
build time, so a rebuild on another day installs the same files whatever the index holds then. What
the base image already ships for its torch (torch and everything torch needs) is left out: the base
provides it, pinned by digest. Because --no-deps fills no gap, a lock is proved complete when it is
written (complete_lock) and again in the image after the install (smoke/lockcheck.py).

Generated with uv (`uv pip compile --universal --generate-hashes`) against the index pip uses.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from buildtool import facts
from buildtool.errors import EngineError, Location, Problem
from buildtool.plan import Plan

INPUT_NAME = "requirements.in"
LOCK_NAME = "requirements.lock"
UNLOCKED_NAME = "requirements.txt"
PROVIDED_MARK = "# provided-by-base:"
_HASH = re.compile(r"\s--hash[= ]\S+")
_PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s;\\]+)")


@dataclass(frozen=True)
class LockJob:
    """One image's lock: where its input and lock live, and what its bases provide."""

    image: str
    directory: Path
    python: str  # the oldest Python of the image's bases (the universal lock covers newer ones)
    base_torch: tuple[str, ...]  # public torch versions the bases ship ('2.11.0'); none: no torch

    @property
    def input(self) -> Path:
        return self.directory / INPUT_NAME

    @property
    def lock(self) -> Path:
        return self.directory / LOCK_NAME


@dataclass(frozen=True)
class LockedPin:
    name: str  # canonical
    version: str
    hashes: int
    line: int


def lock_jobs(plan: Plan) -> list[LockJob]:
    """A job per image of the plan whose template has a requirements.in."""
    by_image: dict[str, list[tuple[str, str | None]]] = {}
    directories: dict[str, Path] = {}
    for variant in plan.variants:
        image, base = variant.image, variant.base
        if not (image.template / INPUT_NAME).is_file():
            continue
        directories[image.name] = image.template
        torch = Version(base.torch).public if base.torch and facts.is_version(base.torch) else None
        by_image.setdefault(image.name, []).append((base.python, torch))
    jobs = []
    for name, bases in sorted(by_image.items()):
        pythons = sorted({p for p, _ in bases}, key=lambda v: tuple(int(x) for x in v.split(".")))
        torches = tuple(sorted({t for _, t in bases if t}))
        jobs.append(LockJob(name, directories[name], pythons[0], torches))
    return jobs


def uv_command() -> str:
    found = shutil.which("uv")
    if found:
        return found
    try:
        from uv import find_uv_bin  # the `uv` wheel ships its binary
    except ImportError:
        raise EngineError(
            Problem(
                "locking dependencies needs uv, which is not installed",
                hint="pip install uv (or pip install -e '.[lock]')",
            )
        ) from None
    return str(find_uv_bin())


def _compile(
    uv: str, requirements: str, python: str, extra: Iterable[str] = (), keep: str | None = None
) -> str:
    """uv's resolution of `requirements`. `keep`: the lock as it is, whose versions uv keeps where
    they still fit (its output file is its preferences), as pip-compile does; None: the newest."""
    with tempfile.TemporaryDirectory(prefix="deplock-") as temporary:
        source = Path(temporary) / INPUT_NAME
        source.write_text(requirements)
        output = Path(temporary) / LOCK_NAME
        if keep is not None:
            output.write_text(keep)
        done = subprocess.run(
            [
                uv,
                "pip",
                "compile",
                str(source),
                "--universal",
                "--python-version",
                python,
                "--no-header",
                "--quiet",
                "--output-file",
                str(output),
                *extra,
            ],
            capture_output=True,
            text=True,
            check=False,
            cwd=temporary,
        )
        text = output.read_text() if done.returncode == 0 else ""
    if done.returncode != 0:
        raise EngineError(
            Problem(
                f"uv could not resolve the requirements: {done.stderr.strip()[-800:]}",
                hint="fix requirements.in (versions that exist and fit together)",
            )
        )
    return text.replace(str(source), INPUT_NAME)


def provided_by_torch(uv: str, torch: str, python: str) -> dict[str, str]:
    """torch and everything it installs, as the base image ships them: name -> version."""
    text = _compile(uv, f"torch=={torch}\n", python, ["--no-annotate"])
    return {pin.name: pin.version for pin in parse_lock(text)}


def generate(job: LockJob, uv: str | None = None, upgrade: bool = False) -> str:
    """The lock text for `job` (deterministic for a given index state and lock). The versions of the
    lock as it is are kept where they still fit requirements.in (`upgrade`: the newest instead). The
    images install it with --no-deps, so it must be complete: proved here against uv's full
    resolution (complete_lock)."""
    uv = uv or uv_command()
    keep = None if upgrade or not job.lock.is_file() else preferences(job.lock.read_text(encoding="utf-8"))
    shipped: dict[str, str] = {}
    for torch in job.base_torch:
        shipped |= provided_by_torch(uv, torch, job.python)
    requirements = job.input.read_text(encoding="utf-8")
    constraints = "".join(f"torch=={t}\n" for t in job.base_torch[:1]) if len(job.base_torch) == 1 else ""
    # Everything the image needs, the base's packages included, as uv resolves it.
    resolved = parse_lock(_compile(uv, requirements + constraints, job.python, [], keep))
    wanted = {pin.name: pin.version for pin in resolved}
    # A package of the base's torch that the image needs at another version (vLLM's cuda-python
    # pins cuda-bindings~=13.4 where torch takes any 13.x) is locked: pip installs that one.
    provided = {name for name in shipped if wanted.get(name, shipped[name]) == shipped[name]}
    extra = ["--generate-hashes"]
    for name in sorted(provided):
        extra += ["--no-emit-package", name]
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as handle:
        handle.write(constraints)
        constraint_file = Path(handle.name)
    try:
        if constraints:
            extra += ["--constraint", str(constraint_file)]
        body = _compile(uv, requirements, job.python, extra, keep)
    finally:
        constraint_file.unlink(missing_ok=True)
    body = body.replace(str(constraint_file), "the base's torch")
    complete_lock(job.image, parse_lock(body), provided, resolved)
    base_note = (
        f"# Left out, the base ships them: torch {', '.join(job.base_torch)} and what it installs.\n"
        f"{PROVIDED_MARK} {' '.join(sorted(provided))}\n"
        if job.base_torch
        else ""
    )
    return (
        f"# The {job.image} image's Python packages, locked with hashes from {INPUT_NAME} for Python "
        f">= {job.python}.\n"
        "# Installed with pip install --no-deps --require-hashes: nothing is resolved at build time.\n"
        f"# Regenerate: buildtool lock-deps --image {job.image} (--upgrade for the newest releases)\n"
        + base_note
        + body
    )


def complete_lock(
    image: str, locked: Sequence[LockedPin], provided: Iterable[str], resolved: Sequence[LockedPin]
) -> None:
    """Raise, naming the packages, unless the lock and what it leaves to the base are exactly uv's
    full resolution (each version: a universal lock can hold two, under markers), each with a hash:
    with --no-deps nothing fills a gap at build time."""
    left = set(provided)
    have = {(pin.name, pin.version) for pin in locked}
    needed = {(pin.name, pin.version) for pin in resolved}
    gaps = sorted(f"{n}=={v}" for n, v in needed - have if n not in left)
    unneeded = sorted(f"{n}=={v}" for n, v in have - needed)
    unhashed = sorted(f"{pin.name}=={pin.version}" for pin in locked if pin.hashes == 0)
    if gaps or unhashed or unneeded:
        said = [
            f"needed but not locked: {', '.join(gaps)}" if gaps else "",
            f"without a hash: {', '.join(unhashed)}" if unhashed else "",
            f"locked but not needed: {', '.join(unneeded)}" if unneeded else "",
        ]
        raise EngineError(
            Problem(
                f"the lock written for image '{image}' is not complete ({'; '.join(s for s in said if s)}): "
                "the image installs it with --no-deps, so the build would miss these",
                hint="run buildtool lock-deps again (the index may have changed between uv's two "
                "resolutions); if it persists, pin the package in requirements.in",
            )
        )


def preferences(lock_text: str) -> str:
    """The pins of a lock as uv reads preferences (name==version ; marker), each line checked: a
    line a hand edit broke is left out, so that it cannot stop the lock from being written anew."""
    out = []
    for _, logical in _logical_lines(lock_text):
        line = _HASH.sub("", logical).strip()
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            continue
        if str(requirement.specifier).startswith("=="):
            out.append(line + "\n")
    return "".join(out)


def parse_lock(text: str) -> list[LockedPin]:
    """The pinned entries of a pip requirements file in hash mode (continuation lines joined)."""
    pins: list[LockedPin] = []
    for line_number, logical in _logical_lines(text):
        match = _PIN.match(logical)
        if match:
            pins.append(
                LockedPin(
                    canonicalize_name(match["name"]),
                    match["version"],
                    logical.count("--hash="),
                    line_number,
                )
            )
    return pins


def provided_by_base(text: str) -> set[str]:
    """The packages a lock leaves to the base image (its provided-by-base line)."""
    for line in text.splitlines():
        if line.startswith(PROVIDED_MARK):
            return {canonicalize_name(n) for n in line.removeprefix(PROVIDED_MARK).split()}
    return set()


def _logical_lines(text: str) -> Iterator[tuple[int, str]]:
    current: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if not current:
            start = number
        if line.endswith("\\"):
            current.append(line[:-1].strip())
            continue
        current.append(line)
        joined = " ".join(part for part in current if part)
        current = []
        if joined:
            yield start, joined


@dataclass(frozen=True)
class LockProblem:
    message: str
    where: Location
    hint: str


def lock_problems(directory: Path, image: str) -> list[LockProblem]:
    """Why an image's dependencies are not installed exactly as locked, if they are not."""
    unlocked = directory / UNLOCKED_NAME
    source, lock = directory / INPUT_NAME, directory / LOCK_NAME
    fix = f"buildtool lock-deps --image {image}"
    out: list[LockProblem] = []
    if unlocked.is_file():
        out.append(
            LockProblem(
                f"image '{image}' installs from {UNLOCKED_NAME}, which pins no transitive dependency "
                "and no hash: a rebuild on another day installs other files",
                Location(unlocked, 1),
                f"rename it to {INPUT_NAME}, run {fix}, and install {LOCK_NAME} with --require-hashes",
            )
        )
    if not source.is_file():
        return out
    if not lock.is_file():
        return [*out, LockProblem(f"image '{image}' has no {LOCK_NAME}", Location(source, 1), f"run {fix}")]
    lock_text = lock.read_text(encoding="utf-8")
    pins = {pin.name: pin for pin in parse_lock(lock_text)}
    provided = provided_by_base(lock_text)
    for pin in pins.values():
        if pin.hashes == 0:
            out.append(
                LockProblem(
                    f"{pin.name}=={pin.version} has no --hash", Location(lock, pin.line), f"run {fix}"
                )
            )
    for line_number, logical in _logical_lines(source.read_text(encoding="utf-8")):
        try:
            wanted = Requirement(logical)
        except InvalidRequirement as exc:
            out.append(LockProblem(f"not a requirement: {exc}", Location(source, line_number), "fix it"))
            continue
        if canonicalize_name(wanted.name) in provided:
            continue  # the base ships it (torch and what torch installs)
        locked = pins.get(canonicalize_name(wanted.name))
        if locked is None or not wanted.specifier.contains(locked.version, prereleases=True):
            has = f"locks {locked.version}" if locked else "does not lock it"
            out.append(
                LockProblem(
                    f"{INPUT_NAME} wants {wanted} but {LOCK_NAME} {has}",
                    Location(source, line_number),
                    f"run {fix}",
                )
            )
    return out


def write_locks(plan: Plan, images: tuple[str, ...] = (), upgrade: bool = False) -> list[Path]:
    """Generate and write the lock of each image (all images of the plan, or those named); each
    keeps its versions where they still fit, unless `upgrade`."""
    from buildtool.files import write_atomically

    uv = uv_command()
    # Every lock is generated before any is written: one that cannot be leaves all as they were.
    texts = [
        (job.lock, generate(job, uv, upgrade)) for job in lock_jobs(plan) if not images or job.image in images
    ]
    for path, text in texts:
        write_atomically(path, text)
    return [path for path, _ in texts]
