#!/usr/bin/env bash
# A kind cluster with a local registry on localhost:5001 (kind's "local registry" guide): the e2e
# environment's registry, so `reconciler build --env e2e` pushes there and records the digest, and the
# node pulls the same digest. Idempotent. Needs docker and kind (versions in ../versions.env).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../versions.env
. "$here/../versions.env"

if [ "$(docker inspect -f '{{.State.Running}}' "$REGISTRY_NAME" 2>/dev/null || true)" != true ]; then
  docker run -d --restart=always -p "127.0.0.1:${REGISTRY_PORT}:5000" --network bridge \
    --name "$REGISTRY_NAME" "$REGISTRY_IMAGE"
fi
if ! kind get clusters | grep -qx "$KIND_CLUSTER"; then
  kind create cluster --name "$KIND_CLUSTER" --image "$KIND_NODE_IMAGE" --config "$here/cluster.yaml" --wait 120s
fi
# localhost:5001 inside a node is the node itself: point containerd at the registry container
for node in $(kind get nodes --name "$KIND_CLUSTER"); do
  docker exec "$node" mkdir -p "/etc/containerd/certs.d/localhost:${REGISTRY_PORT}"
  printf '[host."http://%s:5000"]\n' "$REGISTRY_NAME" |
    docker exec -i "$node" cp /dev/stdin "/etc/containerd/certs.d/localhost:${REGISTRY_PORT}/hosts.toml"
done
if [ "$(docker inspect -f='{{json .NetworkSettings.Networks.kind}}' "$REGISTRY_NAME")" = null ]; then
  docker network connect kind "$REGISTRY_NAME"
fi
kubectl apply -f "$here/registry-hosting.yaml"
kubectl config use-context "kind-$KIND_CLUSTER"
kubectl get nodes -L gitops.ml/pool
