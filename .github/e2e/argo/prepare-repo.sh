#!/usr/bin/env bash
# The repository the Argo pipelines run from: environments/e2e/ (pipelines: namespace, ServiceAccount,
# DVC remote `minio` and its credentials Secret), the DVC remote `minio` (the quick start's MinIO, as the
# pods reach it), committed and pushed to the in-cluster git server. On the runner, the same remote is
# reached through the port-forward (a --local override, not committed).
# Usage: prepare-repo.sh   (after install.sh; prints the commit)
set -euo pipefail
# shellcheck source=../environment.sh
. "$(dirname "$0")/../environment.sh"
dvc remote add --force minio s3://my-bucket/dvc
dvc remote modify minio endpointurl http://minio.argo.svc.cluster.local:9000
dvc remote modify --local minio endpointurl http://127.0.0.1:9000
dvc remote default --local minio   # runner side: `reconciler plan` checks the proposed weights in MinIO
git add -A environments/e2e .dvc/config
git commit -qm "e2e: environment e2e with the MinIO DVC remote"
git push -q git://127.0.0.1:9418/repo.git HEAD:refs/heads/main
git rev-parse HEAD
