#!/usr/bin/env bash
# Room for multi-GB CUDA bases on a GitHub-hosted runner (about 14 GB free as it starts): remove the
# toolchains this workflow does not use, as runpod/containers does. Only on hosted runners: on a
# self-hosted one these paths are someone else's.
set -euo pipefail

if [[ ${RUNNER_ENVIRONMENT:-} != github-hosted ]]; then
  echo "not a GitHub-hosted runner (RUNNER_ENVIRONMENT=${RUNNER_ENVIRONMENT:-unset}): nothing removed"
  exit 0
fi
df -h / | tail -1
sudo rm -rf /usr/share/dotnet /usr/local/lib/android /opt/ghc /usr/local/.ghcup \
  /opt/hostedtoolcache/CodeQL /usr/local/share/boost /usr/share/swift
sudo docker image prune --all --force >/dev/null
df -h / | tail -1
