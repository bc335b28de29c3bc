#!/usr/bin/env bash
# Turn the job's checkout into the repository the e2e cluster follows:
#  - environments/e2e/ from .github/e2e/environment/ (kind registry, Gateway API canaries, PodMonitors);
#  - one model only, MODEL: every model's HTTPRoute matches PathPrefix "/" on the same Gateway with no
#    hostname (reconciler/rollout/routers.py), so a second model's route would compete for the same
#    traffic; docs/ci.md lists this as a known limit;
#  - the model's weights trained at the pinned lock and pushed to the local DVC remote (.dvc-storage/);
#  - committed, and pushed to a bare repository ORIGIN (`reconciler run --repo-url ORIGIN` follows it).
# Usage: add-environment.sh ORIGIN [MODEL]
set -euo pipefail
origin=$1
model=${2:-iris-classifier}
# shellcheck source=../environment.sh
. "$(dirname "$0")/../environment.sh"
for dir in models/*/; do
  name=$(basename "$dir")
  [ "$name" = "$model" ] || git rm -rq "models/$name"
done
reconciler pipeline run train --model "$model" --push
git add -A environments/e2e models
git commit -qm "e2e: environment e2e on kind, serving $model"
if [ ! -d "$origin" ]; then git init -q --bare -b main "$origin"; fi
git remote remove e2e 2>/dev/null || true
git remote add e2e "$origin"
git push -q e2e HEAD:refs/heads/main
echo "origin $origin at $(git rev-parse --short HEAD)"
