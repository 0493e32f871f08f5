#!/usr/bin/env bash
# The CI run (ci.yml, on push) of a commit that completed successfully, and its smoke results copied
# into a directory: what a release may promote. Any other state of the commit's runs (none yet, still
# running, failed, cancelled) is an error that says which runs exist and what to do.
# Usage: tested-run.sh COMMIT RESULTS_DIR   (GH_REPO and GH_TOKEN in the environment)
set -euo pipefail

sha=$1 results=$2
: "${GH_REPO:?GH_REPO names the repository whose runs to read}"

run_id=$(gh run list --workflow ci.yml --commit "$sha" --event push --status success --limit 1 \
  --json databaseId --jq '.[0].databaseId // empty')
if [[ -z $run_id ]]; then
  runs=$(gh run list --workflow ci.yml --commit "$sha" --event push --limit 20 \
    --json databaseId,status,conclusion,url --jq '.[] | "\(.status)/\(.conclusion // "-") \(.url)"')
  echo "::error::no CI run of $sha (ci.yml, on push, in $GH_REPO) completed successfully, so nothing of it was tested end to end and nothing is promoted. Runs of this commit: ${runs:-none}. Wait for a run in progress to finish, or re-run the failed jobs of the last one, then re-run this job." >&2
  exit 1
fi
echo "CI run $run_id of $sha completed successfully: its smoke results are what this release promotes"

download=$(mktemp -d)
trap 'rm -rf "$download"' EXIT
gh run download "$run_id" --pattern 'smoke-*' --dir "$download"
mkdir -p "$results"
found=0
while IFS= read -r -d '' file; do
  cp "$file" "$results/"
  found=$((found + 1))
done < <(find "$download" -name '*.json' -print0)
if ((found == 0)); then
  echo "::error::CI run $run_id of $sha has no smoke-* artifacts with results (expired after their retention?); build and smoke the commit again" >&2
  exit 1
fi
echo "$found smoke result(s) in $results"
