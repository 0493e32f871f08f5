#!/usr/bin/env bash
# The one script to run on a bare GPU host (no Docker, torch installed), from this checkout: the smoke
# suite held to what the default variant's base declares (torch, CUDA, and the driver floor of that
# CUDA), then the attention benchmark at the FlashAttention-3 paper's shapes for every SDPA backend,
# with nvidia-smi's facts (clocks, power, memory) in the result; all under a budget, so that the
# result is written even when the machine is slower than planned.
#
#   tools/gpu-host-smoke.sh [OUT_DIR] [python -m smoke options...]
#
# OUT_DIR: $OUT (the device tool's folder), else smoke-results/. Writes OUT_DIR/<device>-host.json
# (the GPU first, for reports/samples/: commit it unedited). Exit code: the suite's.
# Each default is an environment variable: SMOKE_TORCH=2.11.0+cu130 SMOKE_CUDA=13.0 (the default
# variant's base in matrix.yaml), SMOKE_DRIVER_FLOOR=580.65 (facts.DRIVER_FLOOR_BY_CUDA for it; a
# test keeps the three equal to those), BUDGET=390 (seconds of checks and shapes started: the run
# fits 7 minutes on an H200 with 16 cores, start-up included). Options given after OUT_DIR win.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
out=${OUT:-smoke-results}
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then  # a first argument that is no option is OUT_DIR
  out=$1
  shift
fi
python=${PYTHON:-python3}
torch=${SMOKE_TORCH:-2.11.0+cu130}
cuda=${SMOKE_CUDA:-13.0}
floor=${SMOKE_DRIVER_FLOOR:-580.65}
budget=${BUDGET:-390}
if ! name=$("$python" -c 'import torch; print(torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu")' 2>/dev/null); then
  echo "error: $python cannot import torch: install torch (the suite needs it), or set PYTHON" >&2
  exit 2
fi
device=$(printf '%s' "$name" | tr '[:upper:]' '[:lower:]' | tr -cs 'a-z0-9' '-' | sed 's/-$//')
mkdir -p "$out/raw"
"$python" -m smoke --variant host --bench --torch "$torch" --cuda "$cuda" --driver-floor "$floor" \
  --budget "$budget" --out "$out/raw" "$@"
status=$?
if [ -f "$out/raw/host.json" ]; then
  cp "$out/raw/host.json" "$out/$device-host.json"
  echo "wrote $out/$device-host.json: commit it under reports/samples/ as it is"
else
  echo "error: the suite wrote no result (exit code $status)" >&2
fi
exit "$status"
