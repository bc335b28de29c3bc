#!/usr/bin/env bash
# Argo Workflows (pinned quick-start-minimal release manifest: controller, argo-server, MinIO as the
# artifact repository), the in-cluster git server, the pipelines' ServiceAccount, and the Secret the
# e2e environment names for the DVC remote (the quick start's MinIO credentials). Then port-forwards
# the Argo server (2746), git (9418) and MinIO (9000) to the runner. Idempotent. Run after ../kind/up.sh.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../versions.env
. "$here/../versions.env"
logs=${RUNNER_TEMP:-/tmp}

kubectl create namespace argo --dry-run=client -o yaml | kubectl apply -f -
kubectl apply --server-side -n argo \
  -f "https://github.com/argoproj/argo-workflows/releases/download/$ARGO_WORKFLOWS_VERSION/quick-start-minimal.yaml"
for f in rbac.yaml git-server.yaml; do kubectl apply --dry-run=server -f "$here/$f" >/dev/null; done
kubectl apply -f "$here/rbac.yaml" -f "$here/git-server.yaml"
# the server acts with its own ServiceAccount, so `reconciler pipeline submit` needs no token: a
# throwaway cluster only (never in a shared one; there, ARGO_TOKEN with --auth-mode=client)
kubectl -n argo patch deployment argo-server --type=json \
  -p='[{"op": "replace", "path": "/spec/template/spec/containers/0/args", "value": ["server", "--auth-mode=server"]}]'
kubectl -n argo rollout status deployment/argo-server --timeout=300s
kubectl -n argo wait --for=condition=Available deployment/workflow-controller deployment/argo-server deployment/minio --timeout=300s
kubectl -n git wait --for=condition=Available deployment/git-server --timeout=180s

# the DVC remote's credentials, as the register step reads them (env vars from the named Secret)
access=$(kubectl -n argo get secret my-minio-cred -o jsonpath='{.data.accesskey}' | base64 -d)
secret=$(kubectl -n argo get secret my-minio-cred -o jsonpath='{.data.secretkey}' | base64 -d)
kubectl -n argo create secret generic dvc-minio --from-literal=AWS_ACCESS_KEY_ID="$access" \
  --from-literal=AWS_SECRET_ACCESS_KEY="$secret" --dry-run=client -o yaml | kubectl apply -f -

forward() { nohup kubectl -n "$1" port-forward "$2" "$3" > "$logs/port-forward-${2#svc/}.log" 2>&1 & }
forward argo svc/argo-server 2746:2746
forward git svc/git-server 9418:9418
forward argo svc/minio 9000:9000
for _ in $(seq 30); do
  curl -ksf https://127.0.0.1:2746/api/v1/version >/dev/null && break
  curl -sf http://127.0.0.1:2746/api/v1/version >/dev/null && break
  sleep 2
done
