"""What a secret looks like (facts.SECRET_PATTERNS, and values of variables named like one), for the
rules that refuse secrets in build args, rendered files and built images. Findings show four
characters and the length, never the value."""

from __future__ import annotations

import re
from collections.abc import Iterator

from buildtool import facts

HINT = (
    "pass tokens at run time as RunPod secrets ({{ RUNPOD_SECRET_<name> }}; list the name under the "
    "image's secrets:), and at build time through a BuildKit secret mount (RUN "
    "--mount=type=secret,id=<name>), never ENV, LABEL, ARG or a file of the build context"
)

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
        for match in re.finditer(pattern, text):
            yield kind, match.group(0)


def looks_secret(name: str, value: str) -> Iterator[tuple[str, str]]:
    """The secrets in `value`, and the value itself when `name` names a secret and it holds one (a
    reference such as ${HF_TOKEN} or {{ RUNPOD_SECRET_HF_TOKEN }} is not a value)."""
    found = list(secrets_in(value))
    valued = value and not value.startswith(("$", "{{")) and not NOT_A_SECRET.fullmatch(value)
    if not found and name and SECRET_NAME.search(name) and valued:
        found = [(f"a value for {name}", value)]
    yield from found
