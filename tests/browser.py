"""Headless Chromium for the report's HTML: the DOM as the browser built it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


def dom_of(page: Path, scratch: Path) -> str:
    chromium = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    assert chromium, "Debian's chromium package is needed (apt-get install chromium; .ci/run installs it)"
    flags = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={scratch / 'chromium-profile'}",
    ]
    done = subprocess.run(
        [*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120, check=True
    )
    return done.stdout
