"""What a failed build step's own output says went wrong, in one line for the build's message.

BuildKit's error for a RUN step is only its exit code ("process ... did not complete successfully:
exit code: 1"); the cause is in the step's output: pip's `ERROR:` line (and the indented lines after
it, which name the package), or smoke/lockcheck.py's `lockcheck:` lines. A
failed build then names the step and the package, in the terminal and in a job summary.
"""

from __future__ import annotations

from collections.abc import Sequence

LOCKCHECK = "lockcheck: "  # smoke/lockcheck.py's prefix
PIP_ERROR = "ERROR: "
MAX_DETAIL = 3  # indented lines kept after pip's error line
MAX_CHARS = 1200


def explain(lines: Sequence[str]) -> str | None:
    """The installer's own words for the failure in a step's output, or None when it has none."""
    checked = [line.strip().removeprefix(LOCKCHECK) for line in lines if line.strip().startswith(LOCKCHECK)]
    if checked:
        return _short("lockcheck: " + "; ".join(checked))
    for number, line in enumerate(lines):
        text = line.strip()
        if not text.startswith(PIP_ERROR):
            continue
        words = [text.removeprefix(PIP_ERROR)]
        for detail in lines[number + 1 : number + 1 + MAX_DETAIL]:  # the package, when pip names it
            if not detail.startswith((" ", "\t")) or not detail.strip():
                break
            words.append(detail.strip())
        return _short("pip: " + " ".join(words))
    return None


def _short(text: str) -> str:
    return text if len(text) <= MAX_CHARS else text[: MAX_CHARS - 3] + "..."
