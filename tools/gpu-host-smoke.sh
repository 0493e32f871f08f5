#!/usr/bin/env bash
# The smoke suite and the attention benchmark on a bare GPU host (no Docker, torch installed), from
# this checkout; the result is named for reports/samples/ (<device>-<variant>.json: the GPU first), unedited.
#
#   tools/gpu-host-smoke.sh [OUT_DIR] [python -m smoke options...]
#
# OUT_DIR defaults to $OUT (the device tool's folder), else smoke-results/. Exit code: the suite's.
# Under a limit per command (the device tool: 600 s), pass a budget below it, so that the result
# is written whatever the machine's speed: tools/gpu-host-smoke.sh "$OUT" --budget 480
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
out=${1:-${OUT:-smoke-results}}
shift || true
python=${PYTHON:-python3}
if ! name=$("$python" -c 'import torch; print(torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu")' 2>/dev/null); then
  echo "error: $python cannot import torch: install torch (the suite needs it), or set PYTHON" >&2
  exit 2
fi
device=$(printf '%s' "$name" | tr '[:upper:]' '[:lower:]' | tr -cs 'a-z0-9' '-' | sed 's/-$//')
mkdir -p "$out/raw"
"$python" -m smoke --variant host --bench --out "$out/raw" "$@"
status=$?
if [ -f "$out/raw/host.json" ]; then
  cp "$out/raw/host.json" "$out/$device-host.json"
  echo "wrote $out/$device-host.json: commit it under reports/samples/ as it is"
fi
exit "$status"
