#!/usr/bin/env bash
# What the merge workflow (main.yaml) does for a change, against the kind registry: build the changed
# model's Bento and image (`reconciler build --env e2e`: bentoml build + containerize + push, digest read
# back from the registry into images.lock.json), commit the model change with the lock, push to the
# e2e origin that `reconciler run` follows. Usage: release.sh MESSAGE
set -euo pipefail
message=$1
root=$(git rev-parse --show-toplevel)
cd "$root"
reconciler build --env e2e --output json > "${RUNNER_TEMP:-/tmp}/build.json"
python - "${RUNNER_TEMP:-/tmp}/build.json" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
print(json.dumps(report, indent=2))
failed = [r["model"] for r in report["models"] if r["action"] == "failed"]
assert report["ok"] and not failed, f"build failed for {failed}"
PY
test -f images.lock.json || { echo "reconciler build wrote no images.lock.json (no image was pushed)" >&2; exit 1; }
git add -A models images.lock.json
git commit -qm "$message"
git push -q e2e HEAD:refs/heads/main
echo "released $(git rev-parse --short HEAD): $message"
