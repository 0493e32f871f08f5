#!/usr/bin/env bash
# Install buildtool exactly as locked: requirements/tool.txt hash-checked with nothing resolved
# against the index, then the package itself without its dependencies or an isolated build (its
# backend, setuptools, is in the lock), then pip check. Usage: install-tool.sh [PYTHON]
set -euo pipefail
python=${1:-python}
"$python" -m pip install --require-hashes --no-deps -r requirements/tool.txt
"$python" -m pip install --no-deps --no-build-isolation .
"$python" -m pip check
