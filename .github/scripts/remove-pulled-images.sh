#!/usr/bin/env bash
# After a smoke job on a persistent self-hosted runner: remove the images it pulled (multi-GB each),
# named by digest in build/manifest.json, so that the host's disk does not fill commit by commit.
set -euo pipefail

manifest=${1:-build/manifest.json}
if [[ ! -f $manifest ]]; then
  echo "no $manifest: this job pulled nothing"
  exit 0
fi
mapfile -t images < <(jq -r '.variants[].image' "$manifest")
for image in "${images[@]}"; do
  if docker image inspect "$image" >/dev/null 2>&1; then
    docker image rm --force "$image" >/dev/null
    echo "removed $image"
  fi
done
