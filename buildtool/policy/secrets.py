"""What a secret looks like (facts.SECRET_PATTERNS, and values of variables named like one), for the
rules that refuse secrets in build args, rendered files and built images. Findings show four
characters and the length, never the value."""

from __future__ import annotations

import gzip
import io
import re
import tarfile
import zipfile
from collections.abc import Iterator

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


def secrets_in(text: str) -> Iterator[tuple[str, str]]:
    """(what it looks like, the value) for every secret-looking token in `text`."""
    for kind, pattern in facts.SECRET_PATTERNS:
        for match in re.finditer(pattern, text, re.ASCII):  # \b around ASCII tokens, in binary text too
            yield kind, match.group(0)


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
    (r"\.env(?:\.(?!example$|sample$|template$)[^/]+)?", "an environment file (.env)"),
    (r".+\.(?:p12|pfx|jks|keystore|bks|kdbx)", "a key store"),
    (r"id_(?:rsa|dsa|ecdsa|ed25519)", "an SSH private key"),
    (r"\.(?:netrc|pypirc|git-credentials|npmrc|htpasswd)", "a credentials file"),
    (r"credentials(?:\.json)?|config\.json", "a credentials file (AWS, gcloud, docker)"),
)
ARCHIVES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".zip", ".whl", ".gz")
MAX_UNPACKED = 256 << 20  # bytes read out of one archive: past this, the rest is not looked into


def secret_file(name: str) -> str | None:
    """What a file named `name` holds by convention, or None."""
    base = name.rsplit("/", 1)[-1]
    for pattern, what in SECRET_FILES:
        if re.fullmatch(pattern, base, re.IGNORECASE):
            if what.startswith("a credentials file (AWS") and "/." not in f"/{name}":
                continue  # credentials / config.json count only in a dot directory (~/.aws, ~/.docker)
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


def _members(name: str, content: bytes) -> Iterator[tuple[str, bytes]]:
    """The files inside an archive, up to MAX_UNPACKED bytes in all; nothing for other files."""
    lowered = name.lower()
    budget = MAX_UNPACKED
    try:
        if lowered.endswith((".zip", ".whl")) and zipfile.is_zipfile(io.BytesIO(content)):
            with zipfile.ZipFile(io.BytesIO(content)) as archive:
                for info in archive.infolist():
                    if not info.is_dir() and info.file_size <= budget:
                        budget -= info.file_size
                        yield info.filename, archive.read(info)
        elif ".tar" in lowered or lowered.endswith(".tgz"):
            with tarfile.open(fileobj=io.BytesIO(content)) as archive:
                for member in archive:
                    handle = (
                        archive.extractfile(member) if member.isfile() and member.size <= budget else None
                    )
                    if handle is not None:
                        budget -= member.size
                        yield member.name, handle.read()
        elif lowered.endswith(".gz"):
            yield name[: -len(".gz")], gzip.decompress(content)[:budget]
    except (OSError, EOFError, tarfile.TarError, zipfile.BadZipFile, ValueError):
        return  # not an archive after all: scanned as a file


def file_secrets(name: str, content: bytes, depth: int = 0) -> Iterator[tuple[str, int | None, str, str]]:
    """(the file, line or None, what it looks like, the value) for each secret in a build-context
    file: by its name, in its text (binary files too), as a DER key, and inside archives."""
    convention = secret_file(name)
    if convention:
        yield name, None, convention, name.rsplit("/", 1)[-1]
    if _der_private_key(content):
        yield name, None, "a private key (DER)", content[:8].hex()
    try:
        lines = content.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        lines = [content.decode("latin-1")]  # binary: no lines, the secret's bytes all the same
    for number, line in enumerate(lines, start=1):
        for kind, secret in secrets_in(line):
            yield name, number if len(lines) > 1 or number > 1 else None, kind, secret
    if depth < 2 and name.lower().endswith(ARCHIVES):
        for member, data in _members(name, content):
            yield from file_secrets(f"{name}!{member}", data, depth + 1)
