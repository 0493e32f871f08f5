"""Dockerfile evaluation: which images a rendered Dockerfile pulls, resolved as BuildKit resolves
them (ARG defaults and build args, stage names, COPY --from, RUN --mount from=)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

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
    # The rest of its build context: (path relative to the Dockerfile's directory, content).
    files: tuple[tuple[str, bytes], ...] = ()


@rule(
    "rendered-secrets", "dockerfile", "a token in a Dockerfile or a build-context file ends up in the image"
)
def rendered_secrets(dockerfile: RenderedDockerfile, context: Context) -> Iterator[Finding]:
    """Secret-looking text in the rendered Dockerfile (ENV, LABEL, ARG defaults, RUN lines) and in
    every file of the build context, with its file and line: text and binary files, DER keys, the
    files inside archives, and files that hold secrets by convention (.env, key stores)."""
    # Variants of a template share most lines and every context file: each is scanned once.
    by_line: dict[str, tuple[tuple[str, str], ...]] = context.once("secrets by line", dict)
    by_file: dict[tuple[str, bytes], list[tuple[str, int | None, str, str]]] = context.once(
        "secrets by file", dict
    )
    for number, line in enumerate(dockerfile.text.splitlines(), start=1):
        if line not in by_line:
            by_line[line] = tuple(secrets_in(line))
        for kind, secret in by_line[line]:
            where = Location(dockerfile.path, number)
            yield error(f"{dockerfile.path.name} holds {kind}: {redacted(secret)}", where, HINT)
    context_dir = dockerfile.path.parent
    for file in dockerfile.files:
        if file not in by_file:
            by_file[file] = file_secrets(*file)
        for name, at, kind, secret in by_file[file]:
            shown = "" if secret == name.rsplit("/", 1)[-1] else f": {redacted(secret)}"
            yield error(f"{name} holds {kind}{shown}", Location(context_dir / file[0], at), SECRET_FILE_HINT)


@dataclass(frozen=True)
class _Line:
    """What the parse needs to know of one line (with the escape character in force)."""

    comment: bool
    starts: tuple[str, str] | None  # (instruction, value) if the line can start one
    continues: bool  # ends with the escape character
    tail: str  # the line as a continuation adds it to the value
    tail_stripped: str  # the same, leading white space removed


_INSTRUCTION = re.compile(r"^\s*(\S+)\s+(.*)$")
_COMMENT = re.compile(r"^\s*#")
_ESCAPE_DIRECTIVE = re.compile(r"^\s*#\s*escape\s*=\s*(\\|`)\s*$", re.IGNORECASE)
_SYNTAX_DIRECTIVE = re.compile(r"^\s*#\s*syntax\s*=\s*(.*)\s*$", re.IGNORECASE)


def _without_escape(text: str, escape: str) -> str:
    text = text.rstrip()
    return text[:-1] if text.endswith(escape) else text


def _line(line: str, escape: str) -> _Line:
    started = _INSTRUCTION.match(line)
    return _Line(
        comment=bool(_COMMENT.match(line)),
        starts=(started.group(1).upper(), _without_escape(started.group(2), escape)) if started else None,
        continues=bool(re.match(r"^.*" + re.escape(escape) + r"\s*$", line)),
        tail=_without_escape(line, escape),
        tail_stripped=_without_escape(line.lstrip(), escape),
    )


def instructions(text: str, by_line: dict[tuple[str, str], _Line]) -> list[tuple[str, str, int]]:
    """(instruction, value, first line) of each instruction, comments left out, as dockerfile_parse's
    DockerfileParser.structure reads them (its algorithm, tested against it), with each distinct
    line examined once (`by_line`, shared by the Dockerfiles of one check)."""
    parts = text.split("\n")  # lines as readlines() gives them: "\n" ends a line, and only it
    lines = [part + "\n" for part in parts[:-1]] + ([parts[-1]] if parts[-1] else [])
    escape, directives = "\\", True
    found: list[tuple[str, str, int]] = []
    current: list[str | int] | None = None  # [instruction, value, first line] until it ends
    continuing = False
    for number, line in enumerate(lines, start=1):
        if directives:
            escaped = _ESCAPE_DIRECTIVE.match(line)
            if escaped:
                escape = escaped.group(1)
            elif not _SYNTAX_DIRECTIVE.match(line):
                directives = False
        key = (line, escape)
        facts = by_line.get(key)
        if facts is None:
            facts = by_line[key] = _line(line, escape)
        if facts.comment:
            continue  # also within an instruction that continues
        if not continuing:
            if facts.starts is None:
                continue
            current = [facts.starts[0], facts.starts[1], number]
        elif current is not None:
            current[1] = f"{current[1]}{facts.tail}" if current[1] else facts.tail_stripped
        continuing = facts.continues
        if not continuing and current is not None:
            found.append((str(current[0]), str(current[1]), int(current[2])))
            current = None
    return found


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
    catalogue = context.once("catalogue refs", lambda: [refs.parse(b.ref) for b in matrix.bases])
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
        elif not context.once(("a catalogue base", image), lambda: any(map(image.same_image, catalogue))):
            known = [b.ref for b in matrix.bases]
            hint = did_you_mean(name, known) or "add it to bases: in matrix.yaml with its tier"
            findings.append(
                error(
                    f"{instruction} {name} pulls {image}, which is not a base of the catalogue", where, hint
                )
            )

    for kind, value, line in _instructions(dockerfile, context):
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


# In the SHELL of images/_shared/macros.j2's reproducible_shell(): the RUN steps it runs set the
# file times of what they write.
REPRODUCIBLE_SHELL_MARK = "buildtool-run"
_SHELL_OPERATORS = ("&&", "||", ";", "|", "&", ")", "}")
_REPRODUCIBLE_HINT = "see docs/building.md, Reproducible images: the shapes each layer needs"


def _resolve(path: str, workdir: str) -> str:
    joined = path if path.startswith("/") else f"{workdir.rstrip('/')}/{path}"
    parts: list[str] = []
    for part in joined.split("/"):
        if part == "..":
            parts = parts[:-1]
        elif part not in ("", "."):
            parts.append(part)
    return "/" + "/".join(parts)


def _made_by_mkdir(words: list[str], workdir: str) -> set[str]:
    """The directories (and their parents) a RUN's `mkdir` commands make."""
    made: set[str] = set()
    for start, word in enumerate(words):
        if word.rsplit("/", 1)[-1] != "mkdir":
            continue
        for argument in words[start + 1 :]:
            if argument in _SHELL_OPERATORS or argument.endswith(";"):
                if argument.endswith(";") and argument != ";":
                    made |= _with_parents(_resolve(argument.rstrip(";"), workdir))
                break
            if not argument.startswith("-"):
                made |= _with_parents(_resolve(argument, workdir))
    return made


def _with_parents(path: str) -> set[str]:
    out = {path}
    while path != "/":
        path = path.rsplit("/", 1)[0] or "/"
        out.add(path)
    return out


def _copy_arguments(value: str) -> tuple[dict[str, str], list[str]]:
    words = value.split()
    flags = _flags(words)
    if any(w.lower() in ("--link", "--link=true") for w in words):
        flags["link"] = "true"
    plain = [w for w in words if not w.startswith("--")]
    rest = " ".join(plain)
    if rest.startswith("["):  # COPY ["a/", "/b/"]
        try:
            listed = json.loads(rest)
            plain = [str(p) for p in listed] if isinstance(listed, list) else plain
        except ValueError:
            pass
    return flags, plain


@rule(
    "reproducible-layers",
    "dockerfile",
    "a layer holding the build's own clock differs on every rebuild: an immutable tag cannot be checked",
)
def reproducible_layers(dockerfile: RenderedDockerfile, context: Context) -> list[Finding]:
    """Every layer the Dockerfile builds must come out byte for byte the same on any machine, or a
    rebuild of a commit cannot be compared with its immutable tag (and the registry cache stops
    matching): RUN steps after the reproducible shell (macros.j2 reproducible_shell), in shell
    form; COPY of whole directories (`app/`, ending in /) onto a directory that exists (made by a
    RUN mkdir, or directly under /); WORKDIR only into a directory that exists. A COPY of a file, a
    COPY or WORKDIR that makes a directory, gives that directory the time of the build."""
    steps = tuple(s for s in _instructions(dockerfile, context) if s[0] in _SHAPE_KINDS)
    # The variants of a template differ in values these steps do not hold: worked out once.
    shaped = context.once(("layer shapes", steps), lambda: _layer_shapes(steps))
    return [
        replace(f, problem=replace(f.problem, location=Location(dockerfile.path, f.problem.location.line)))
        if f.problem.location
        else f
        for f in shaped
    ]


_SHAPE_KINDS = frozenset({"FROM", "SHELL", "RUN", "WORKDIR", "COPY", "ADD"})


def _instructions(dockerfile: RenderedDockerfile, context: Context) -> list[tuple[str, str, int]]:
    """The Dockerfile's instructions, read once for all the rules of a check."""
    by_line: dict[tuple[str, str], _Line] = context.once("dockerfile lines", dict)
    return context.once(("instructions", dockerfile.text), lambda: instructions(dockerfile.text, by_line))


def _layer_shapes(steps: tuple[tuple[str, str, int], ...]) -> list[Finding]:
    findings: list[Finding] = []
    reproducible_shell, workdir, made = False, "/", {"/"}
    for kind, value, line in steps:
        where = Location(Path("Dockerfile"), line)
        if kind == "FROM":
            reproducible_shell, workdir, made = False, "/", {"/"}
        elif kind == "SHELL":
            reproducible_shell = REPRODUCIBLE_SHELL_MARK in value
        elif kind == "RUN":
            words = value.split()
            command = " ".join(w for w in words if not w.startswith("--"))
            if command.startswith("["):
                findings.append(
                    error(
                        "RUN in exec form ([...]) runs without the shell that sets file times",
                        where,
                        "write it in shell form: RUN command args",
                    )
                )
            elif not reproducible_shell:
                findings.append(
                    error(
                        "RUN before the reproducible shell: the files it writes keep the build's time",
                        where,
                        'put {{ m.reproducible_shell() }} right after FROM (import "macros.j2" as m)',
                    )
                )
            made |= _made_by_mkdir(words, workdir)
        elif kind == "WORKDIR":
            workdir = _resolve(value.strip(), workdir)
            if workdir not in made:
                findings.append(
                    error(
                        f"WORKDIR {value.strip()} makes {workdir}, with the build's time",
                        where,
                        f'make it first in a RUN: {{{{ m.directories("{workdir}") }}}}',
                    )
                )
                made |= _with_parents(workdir)
        elif kind in ("COPY", "ADD"):
            flags, paths = _copy_arguments(value)
            if len(paths) < 2:
                continue
            *sources, destination = paths
            files = [s for s in sources if not s.endswith("/")]
            if files:
                findings.append(
                    error(
                        f"{kind} {files[0]} copies a file: the directory it lands in gets the build's time",
                        where,
                        f"put it in a directory of the context and copy that whole ({kind} app/ /app/); "
                        "a file only a RUN reads: RUN --mount=type=bind,source=...,target=/tmp/...",
                    )
                )
                continue
            target = _resolve(destination, workdir)
            parent = target.rsplit("/", 1)[0] or "/"
            top_level = parent == "/"
            if not destination.endswith("/") or not (top_level or (target in made and "link" not in flags)):
                how = "--link makes its parents" if "link" in flags else f"{target} is not made by then"
                findings.append(
                    error(
                        f"{kind} {' '.join(sources)} {destination}: {how}, with the build's time",
                        where,
                        f'copy onto a directory a RUN made: {{{{ m.directories("{target}") }}}}, then '
                        f"{kind} {sources[0]} {target}/ (without --link), or onto /<name>/",
                    )
                )
            made |= _with_parents(target)
    return [
        replace(f, problem=replace(f.problem, hint=f"{f.problem.hint}; {_REPRODUCIBLE_HINT}"))
        for f in findings
    ]
