#!/usr/bin/env bash
# Turn on Docker's containerd image store on a runner (registry cache export and OCI layouts need it).
# The runner's daemon.json already holds its own settings: merge the feature into it (jq), restart the
# engine only when that changed the file, then check that the engine reports the containerd
# snapshotter before any build runs on it.
set -euo pipefail

config=${DOCKER_DAEMON_CONFIG:-/etc/docker/daemon.json}
current='{}'
if sudo test -s "$config"; then
  current=$(sudo cat "$config")
fi
merged=$(jq --sort-keys '.features["containerd-snapshotter"] = true' <<<"$current")
if [[ $merged != "$(jq --sort-keys . <<<"$current")" ]]; then
  printf '%s\n' "$merged" | sudo tee "$config" >/dev/null
  sudo systemctl restart docker
fi

for _ in $(seq 60); do
  docker info >/dev/null 2>&1 && break
  sleep 1
done
status=$(docker info --format '{{json .DriverStatus}}')
if ! jq -e 'any(.[]; .[0] == "driver-type" and .[1] == "io.containerd.snapshotter.v1")' <<<"$status" >/dev/null; then
  echo "::error::the Docker engine does not use the containerd image store after the restart (driver status: $status); builds would fail to export the registry cache" >&2
  exit 1
fi
echo "Docker engine: containerd image store ($config: $(jq --compact-output . <<<"$merged"))"
