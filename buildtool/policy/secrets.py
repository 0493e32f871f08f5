"""What a secret looks like (facts.SECRET_PATTERNS, and values of variables named like one), for the
rules that refuse secrets in build args, rendered files and built images. Findings show four
characters and the length, never the value."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import lzma
import re
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from typing import Protocol

from buildtool import facts

HINT = (
    "pass tokens at run time as RunPod secrets ({{ RUNPOD_SECRET_<name> }}; list the name under the "
    "image's secrets:), and at build time through a BuildKit secret mount (RUN "
    "--mount=type=secret,id=<name>), never ENV, LABEL, ARG or a file of the build context"
)

SECRET_FILE_HINT = "remove it from the template directory (and from git history if it was pushed): " + HINT

# A secret's name, as a whole word of it: HF_TOKEN, DB_PASSWORD, AWS_SECRET_ACCESS_KEY, OPENAI_API_KEY;
# not TOKENIZERS_PARALLELISM or MAX_TOKENS, which Hugging Face images set.
SECRET_NAME = re.compile(r"(?:^|_)(TOKEN|SECRET|PASSWORD|PASSWD|API_KEY|ACCESS_KEY)(?:_|$)", re.IGNORECASE)
# Settings, not secrets, whatever the name (PAD_TOKEN_ID=0, ..._TOKEN_LIMIT=4096, USE_AUTH_TOKEN=true).
NOT_A_SECRET = re.compile(r"(?:[0-9.]+|true|false|yes|no|on|off|none)", re.IGNORECASE)


def redacted(value: str) -> str:
    """Enough to find it, never the secret itself."""
    return f"'{value[:4]}...' ({len(value)} characters)"


# \b around ASCII tokens, in binary text too. No pattern matches a line break of any kind, so a
# text without a match as a whole has none in any of its lines.
_PATTERNS = tuple((kind, re.compile(pattern, re.ASCII)) for kind, pattern in facts.SECRET_PATTERNS)


def secrets_in(text: str) -> Iterator[tuple[str, str]]:
    """(what it looks like, the value) for every secret-looking token in `text`."""
    for kind, pattern in _PATTERNS:
        for match in pattern.finditer(text):
            yield kind, match.group(0)


def _any_secret(text: str) -> bool:
    return any(pattern.search(text) for _, pattern in _PATTERNS)


def looks_secret(name: str, value: str) -> Iterator[tuple[str, str]]:
    """The secrets in `value`, and the value itself when `name` names a secret and it holds one (a
    reference such as ${HF_TOKEN} or {{ RUNPOD_SECRET_HF_TOKEN }} is not a value)."""
    found = list(secrets_in(value))
    valued = value and not value.startswith(("$", "{{")) and not NOT_A_SECRET.fullmatch(value)
    if not found and name and SECRET_NAME.search(name) and valued:
        found = [(f"a value for {name}", value)]
    yield from found


# Files that hold secrets by convention, whatever they contain now: (name pattern, what it is).
SECRET_FILES: tuple[tuple[str, str], ...] = (
    (r"(?:.*\.)?env(?:\.(?!example$|sample$|template$|dist$)[^/]+)?|\.envrc", "an environment file (.env)"),
    (r".+\.(?:p12|pfx|jks|keystore|bks|kdbx)", "a key store"),
    (r"id_(?:rsa|dsa|ecdsa|ed25519)", "an SSH private key"),
    (r"\.(?:netrc|pypirc|git-credentials|npmrc|htpasswd|pgpass)|kubeconfig", "a credentials file"),
    (r"application_default_credentials\.json", "a credentials file (gcloud)"),
    (r"credentials(?:\.json)?|config\.json", "a credentials file (AWS, gcloud, docker)"),
)
MAX_UNPACKED = 256 << 20  # bytes read out of the archives of one file, nested ones included
MAX_DEPTH = 8  # archives inside archives


def secret_file(name: str) -> str | None:
    """What a file named `name` holds by convention, or None."""
    base = name.rsplit("!", 1)[-1].rsplit("/", 1)[-1]
    for pattern, what in SECRET_FILES:
        if re.fullmatch(pattern, base, re.IGNORECASE):
            if what.startswith("a credentials file (AWS") and "/." not in f"/{name}":
                continue  # credentials / config.json count only in a dot directory (~/.aws, ~/.docker)
            if base.lower() == "env":  # a directory or tool named env is no environment file
                continue
            return what
    return None


def _der_private_key(content: bytes) -> bool:
    """A DER private key: one ASN.1 SEQUENCE spanning the file, then INTEGER 0 or 1 (the version
    of PKCS#8, PKCS#1 and SEC1 keys) and the next field (a SEQUENCE, INTEGER or OCTET STRING)."""
    if len(content) < 8 or content[0] != 0x30:
        return False
    first = content[1]
    if first < 0x80:
        length, start = first, 2
    elif 0x81 <= first <= 0x84:
        size = first & 0x7F
        length, start = int.from_bytes(content[2 : 2 + size], "big"), 2 + size
    else:
        return False
    version = content[start : start + 3]
    return (
        start + length == len(content)
        and version in (b"\x02\x01\x00", b"\x02\x01\x01")
        and (content[start + 3 : start + 4] in (b"\x30", b"\x02", b"\x04"))
    )


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class _Budget:
    """What may still be unpacked from one context file's archives; `exceeded` once it ran out."""

    def __init__(self) -> None:
        self.left = MAX_UNPACKED
        self.exceeded = False

    def read(self, handle: _Readable, size_hint: int | None = None) -> bytes | None:
        if size_hint is not None and size_hint > self.left:
            self.exceeded = True
            return None
        data = handle.read(self.left + 1)
        if len(data) > self.left:
            self.exceeded = True
            return None
        self.left -= len(data)
        return data


def _members(name: str, content: bytes, budget: _Budget) -> Iterator[tuple[str, bytes]]:
    """The files inside an archive, recognised by its first bytes (not its name); nothing for
    other files. Reads no more than the budget allows, streaming: a small bomb stays small."""
    try:
        if content[:4] == b"PK\x03\x04":
            with zipfile.ZipFile(io.BytesIO(content)) as archive:
                for info in archive.infolist():
                    if not info.is_dir():
                        with archive.open(info) as handle:
                            data = budget.read(handle)
                        if data is None:
                            return
                        yield info.filename, data
        elif (
            content[:2] == b"\x1f\x8b"
            or content[:3] == b"BZh"
            or content[:6] == b"\xfd7zXZ\x00"
            or (content[257:262] == b"ustar")
        ):
            if tarfile.is_tarfile(io.BytesIO(content)):
                with tarfile.open(fileobj=io.BytesIO(content)) as archive:
                    for member in archive:
                        extracted = archive.extractfile(member) if member.isfile() else None
                        if extracted is not None:
                            data = budget.read(extracted, member.size)
                            if data is None:
                                return
                            yield member.name, data
            elif content[:2] == b"\x1f\x8b":
                with gzip.GzipFile(fileobj=io.BytesIO(content)) as unzipped:
                    data = budget.read(unzipped)
                if data is not None:
                    yield name.removesuffix(".gz") + ".unpacked", data
            elif content[:3] == b"BZh" or content[:6] == b"\xfd7zXZ\x00":
                opener = bz2.BZ2File if content[:3] == b"BZh" else lzma.LZMAFile
                with opener(io.BytesIO(content)) as stream:
                    data = budget.read(stream)
                if data is not None:
                    yield name + ".unpacked", data
    except (OSError, EOFError, tarfile.TarError, zipfile.BadZipFile, ValueError, lzma.LZMAError):
        return  # not an archive after all: scanned as a file


def file_secrets(name: str, content: bytes) -> list[tuple[str, int | None, str, str]]:
    """(the file, line or None, what it looks like, the value) for each secret in a build-context
    file: by its name, in its text (binary files too), as a DER key, and inside archives (found by
    their first bytes, nested ones too). An archive too large to read whole is itself a finding.
    Scanned once per name and content: variants of one template share their context's files."""
    key = (name, hashlib.sha256(content).digest())
    with _SCANNED_LOCK:
        found = _SCANNED.get(key)
    if found is None:
        found = list(_file_secrets(name, content))
        with _SCANNED_LOCK:  # a library caller may render from threads
            if len(_SCANNED) >= _SCANNED_MAX:
                _SCANNED.pop(next(iter(_SCANNED)))
            _SCANNED[key] = found
    return list(found)


_SCANNED: dict[tuple[str, bytes], list[tuple[str, int | None, str, str]]] = {}
_SCANNED_MAX = 16384
_SCANNED_LOCK = threading.Lock()


def _file_secrets(
    name: str, content: bytes, depth: int = 0, budget: _Budget | None = None
) -> Iterator[tuple[str, int | None, str, str]]:
    top = budget is None
    budget = budget or _Budget()
    convention = secret_file(name)
    if convention:
        yield name, None, convention, name.rsplit("/", 1)[-1]
    if _der_private_key(content):
        yield name, None, "a private key (DER)", content[:8].hex()
    try:
        text = content.decode("utf-8")
        lines = text.splitlines() if _any_secret(text) else []
    except UnicodeDecodeError:
        text = content.decode("latin-1")  # binary: no lines, the secret's bytes all the same
        lines = [text] if _any_secret(text) else []
    for number, line in enumerate(lines, start=1):
        for kind, secret in secrets_in(line):
            yield name, number if len(lines) > 1 or number > 1 else None, kind, secret
    if depth < MAX_DEPTH:
        for member, data in _members(name, content, budget):
            yield from _file_secrets(f"{name}!{member}", data, depth + 1, budget)
    if top and budget.exceeded:
        limit = MAX_UNPACKED >> 20
        what = f"archives that unpack to more than {limit} MiB, which the secret scan cannot read whole"
        yield name, None, what, name.rsplit("/", 1)[-1]
