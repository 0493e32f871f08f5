"""Dockerfile evaluation: which images a rendered Dockerfile pulls, resolved as BuildKit resolves
them (ARG defaults and build args, stage names, COPY --from, RUN --mount from=)."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from dockerfile_parse import DockerfileParser

from buildtool import refs
from buildtool.errors import Finding, Location, did_you_mean
from buildtool.policy.catalogue import refusal_for
from buildtool.policy.registry import Context, error, rule
from buildtool.policy.secrets import HINT, SECRET_FILE_HINT, file_secrets, redacted, secrets_in


@dataclass(frozen=True)
class RenderedDockerfile:
    text: str
    path: Path  # where it will be written: findings point there
    build_args: Mapping[str, str]
    files: tuple[tuple[Path, bytes], ...] = ()  # the rest of its build context, where each will be written


@rule(
    "rendered-secrets", "dockerfile", "a token in a Dockerfile or a build-context file ends up in the image"
)
def rendered_secrets(dockerfile: RenderedDockerfile, context: Context) -> Iterator[Finding]:
    """Secret-looking text in the rendered Dockerfile (ENV, LABEL, ARG defaults, RUN lines) and in
    every file of the build context, with its file and line: text and binary files, DER keys, the
    files inside archives, and files that hold secrets by convention (.env, key stores)."""
    for number, line in enumerate(dockerfile.text.splitlines(), start=1):
        for kind, secret in secrets_in(line):
            where = Location(dockerfile.path, number)
            yield error(f"{dockerfile.path.name} holds {kind}: {redacted(secret)}", where, HINT)
    context_dir = dockerfile.path.parent
    for path, content in dockerfile.files:
        relative = path.relative_to(context_dir).as_posix() if path.is_relative_to(context_dir) else path.name
        for name, at, kind, secret in file_secrets(relative, content):
            shown = "" if secret == name.rsplit("/", 1)[-1] else f": {redacted(secret)}"
            yield error(f"{name} holds {kind}{shown}", Location(path, at), SECRET_FILE_HINT)


_VAR = re.compile(
    r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?::(?P<op>[-+])(?P<word>[^}]*))?\}"
    r"|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))"
)


def _substitute(text: str, values: Mapping[str, str | None]) -> tuple[str, list[str]]:
    missing: list[str] = []

    def one(match: re.Match[str]) -> str:
        name = match.group("braced") or match.group("plain")
        value = values.get(name)
        op, word = match.group("op"), match.group("word")
        if op == "-":
            return value if value else word
        if op == "+":
            return word if value else ""
        if value is None:
            missing.append(name)
            return ""
        return value

    return _VAR.sub(one, text), missing


def _flags(words: list[str]) -> dict[str, str]:
    """'--from=x', '--mount=type=bind,from=x,target=/y' -> {'from': 'x', 'mount': '...'}."""
    out: dict[str, str] = {}
    for word in words:
        if word.startswith("--") and "=" in word:
            key, _, value = word[2:].partition("=")
            out.setdefault(key.lower(), value)
    return out


def _mount_sources(words: list[str]) -> list[str]:
    """The from= of every RUN --mount (each --mount is its own flag)."""
    sources = []
    for word in words:
        if word.lower().startswith("--mount="):
            fields = dict(f.partition("=")[::2] for f in word[len("--mount=") :].split(","))
            if fields.get("from"):
                sources.append(fields["from"])
    return sources


@rule("dockerfile-from", "dockerfile", "an image pulled from outside the catalogue skips every base rule")
def pulled_images(dockerfile: RenderedDockerfile, context: Context) -> list[Finding]:
    """Every image the Dockerfile pulls, resolved as BuildKit resolves it, must be a catalogue base
    and never a refused repository: each FROM (after ARG defaults and build args), COPY --from and
    RUN --mount from=. A name is a stage only if an earlier stage has it (case-insensitive), or is
    a stage's index; `FROM x AS x` pulls the image x, and a later `FROM x` means that stage."""
    matrix, path, build_args = context.matrix, dockerfile.path, dockerfile.build_args
    parser = DockerfileParser(fileobj=io.BytesIO(dockerfile.text.encode("utf-8")))
    catalogue = [refs.parse(b.ref) for b in matrix.bases]
    args: dict[str, str | None] = {}
    stages: list[str] = []  # lower-cased names of the stages so far, in order
    seen_from = False
    findings: list[Finding] = []

    def check_source(written: str, instruction: str, where: Location) -> None:
        name, missing = _substitute(written, args)
        if missing:
            findings.append(
                error(
                    f"{instruction} {written} uses ${{{missing[0]}}}, which has no default and no build arg",
                    where,
                    f"give ARG {missing[0]} a default",
                )
            )
            return
        if name.lower() in stages or name == "scratch" or (name.isdigit() and int(name) < len(stages)):
            return
        try:
            image = refs.parse(name)
        except refs.InvalidReference as exc:
            findings.append(error(f"{instruction} {name}: {exc}", where, "fix the reference"))
            return
        refused = refusal_for(image, matrix.policy)
        if refused is not None:
            refusal = error(
                f"{instruction} {name} pulls {image.name}: {refused.reason}",
                where,
                "build FROM a catalogue base (runpod/pytorch, pytorch/pytorch)",
            )
            findings.append(replace(refusal, rule="refused-repository"))
        elif not any(image.same_image(base) for base in catalogue):
            known = [b.ref for b in matrix.bases]
            hint = did_you_mean(name, known) or "add it to bases: in matrix.yaml with its tier"
            findings.append(
                error(
                    f"{instruction} {name} pulls {image}, which is not a base of the catalogue", where, hint
                )
            )

    for instruction in parser.structure:
        kind, value, line = instruction["instruction"], instruction["value"], instruction["startline"] + 1
        where = Location(path, line)
        words = value.split()
        if kind == "ARG" and not seen_from:
            for token in words:
                name, _, default = token.partition("=")
                args[name] = build_args.get(name, default.strip("\"'") if "=" in token else None)
            continue
        if kind == "FROM":
            seen_from = True
            plain = [w for w in words if not w.startswith("--")]
            if plain:
                check_source(plain[0], "FROM", where)  # before its own name exists
            stages.append(plain[2].lower() if len(plain) >= 3 and plain[1].lower() == "as" else "")
        elif kind in ("COPY", "ADD") and "from" in _flags(words):
            check_source(_flags(words)["from"], f"{kind} --from", where)
        elif kind == "RUN":
            for source in _mount_sources(words):
                check_source(source, "RUN --mount from=", where)
    return findings
