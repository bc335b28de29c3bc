#!/usr/bin/env bash
# What the canary needs besides the reconciler: Envoy Gateway (Gateway API with weighted HTTPRoutes),
# prometheus-operator + a Prometheus scraping PodMonitors, the Gateway `models`, and a load generator.
# Pinned release manifests (../versions.env). Idempotent. Run after up.sh.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../versions.env
. "$here/../versions.env"
gh=https://github.com

kubectl apply -f "$here/namespaces.yaml"
# Envoy Gateway (its install.yaml carries the Gateway API CRDs it supports)
kubectl apply --server-side -f "$gh/envoyproxy/gateway/releases/download/$ENVOY_GATEWAY_VERSION/install.yaml"
kubectl -n envoy-gateway-system wait --for=condition=Available deployment/envoy-gateway --timeout=300s
# prometheus-operator (bundle: CRDs + operator in `default`); its CRDs are too big for client-side apply
kubectl apply --server-side -f "$gh/prometheus-operator/prometheus-operator/releases/download/$PROMETHEUS_OPERATOR_VERSION/bundle.yaml"
kubectl wait --for=condition=Established crd/prometheuses.monitoring.coreos.com crd/podmonitors.monitoring.coreos.com --timeout=120s
kubectl -n default wait --for=condition=Available deployment/prometheus-operator --timeout=300s

# the repository's own manifests: a server-side dry run first (the CRDs are installed now), then apply
for f in prometheus-rbac.yaml prometheus.yaml gateway.yaml loadgen.yaml; do
  kubectl apply --dry-run=server -f "$here/$f" >/dev/null
done
kubectl apply -f "$here/prometheus-rbac.yaml" -f "$here/prometheus.yaml" -f "$here/gateway.yaml"
kubectl -n loadgen create configmap loadgen --from-file=loadgen.py="$here/loadgen.py" --dry-run=client -o yaml |
  kubectl apply -f -
kubectl apply -f "$here/loadgen.yaml"
kubectl -n models-e2e wait --for=condition=Programmed gateway/models --timeout=300s
kubectl -n monitoring wait --for=condition=Available prometheus/e2e --timeout=300s
# the load generator targets the Gateway's (ClusterIP) address
address=$(kubectl -n models-e2e get gateway models -o jsonpath='{.status.addresses[0].value}')
# every model's HTTPRoute claims its own hostname, <model>.<namespace>.<canary.routeDomain>
# (reconciler/rollout/routers.py; routeDomain in .github/e2e/environment/environment.yaml)
model=${MODEL:-iris-classifier}
kubectl -n loadgen set env deployment/loadgen "TARGET=http://$address/predict" "HOST=$model.models-e2e.e2e.test"
echo "gateway models at $address; Prometheus on http://127.0.0.1:9090"
