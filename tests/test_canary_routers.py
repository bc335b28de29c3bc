"""Traffic routers: the exact HTTPRoute / VirtualService / replica changes, pure and through the
Kubernetes API stand-in; generated HTTPRoutes validate against the upstream CRD schema."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from reconciler import labels as L
from reconciler.rollout.routers import (Backends, GatewayAPIRouter, IstioRouter, ReplicaRouter, Traffic,
                                       apply_changes, replica_split, router_for)
from reconciler.errors import ReconcilerError
from reconciler.results import ObjectRef

ROOT = Path(__file__).resolve().parents[1]
HTTPROUTE_CRD = ROOT / ".." / "shared" / "schemas" / "gateway.networking.k8s.io_httproutes.crd.yaml"

B = Backends(model="iris", namespace="models-prod", environment="prod", stable_service="iris-gpu-a10g",
             canary_service="iris-gpu-a10g-canary", stable_deployment="iris-gpu-a10g",
             canary_deployment="iris-gpu-a10g-canary", port=80, total_replicas=4)
CROSS = Backends(model="digits", namespace="models-prod", environment="prod", stable_service="digits-gpu-a10g",
                 canary_service="digits-inf2", stable_deployment="digits-gpu-a10g", canary_deployment="digits-inf2",
                 total_replicas=3)
LABELS = {L.MANAGED_BY: L.MANAGER, L.MODEL: "iris", L.ENVIRONMENT: "prod"}


def test_httproute_weights_header_and_mirror_exactly() -> None:
    route = GatewayAPIRouter(gateway="models", gateway_namespace="gateways").httproute(
        B, Traffic(25, header=("x-canary", "always"), mirror_percent=10))
    assert route == {
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "iris", "namespace": "models-prod", "labels": LABELS},
        "spec": {
            "parentRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "models",
                            "namespace": "gateways"}],
            "rules": [
                {"matches": [{"path": {"type": "PathPrefix", "value": "/"},
                              "headers": [{"type": "Exact", "name": "x-canary", "value": "always"}]}],
                 "backendRefs": [{"name": "iris-gpu-a10g-canary", "port": 80, "weight": 1}]},
                {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                 "backendRefs": [{"name": "iris-gpu-a10g", "port": 80, "weight": 75},
                                 {"name": "iris-gpu-a10g-canary", "port": 80, "weight": 25}],
                 "filters": [{"type": "RequestMirror", "requestMirror": {
                     "backendRef": {"name": "iris-gpu-a10g-canary", "port": 80}, "percent": 10}}]},
            ],
        },
    }


def test_virtualservice_weights_header_and_mirror_exactly() -> None:
    vs = IstioRouter().virtualservice(CROSS, Traffic(40, header=("x-pool", "inf2"), mirror_percent=5))
    stable = {"host": "digits-gpu-a10g.models-prod.svc.cluster.local", "port": {"number": 80}}
    canary = {"host": "digits-inf2.models-prod.svc.cluster.local", "port": {"number": 80}}
    assert vs["spec"] == {
        "hosts": ["digits.models-prod.svc.cluster.local"],
        "http": [
            {"name": "canary-header", "match": [{"headers": {"x-pool": {"exact": "inf2"}}}],
             "route": [{"destination": canary, "weight": 100}]},
            {"name": "primary", "route": [{"destination": stable, "weight": 60}, {"destination": canary, "weight": 40}],
             "mirror": canary, "mirrorPercentage": {"value": 5.0}},
        ],
    }
    assert vs["apiVersion"] == "networking.istio.io/v1" and vs["metadata"]["name"] == "digits"


@pytest.mark.parametrize(("total", "weight", "expected"), [
    (4, 0, (4, 0)), (4, 10, (3, 1)), (4, 25, (3, 1)), (4, 50, (2, 2)), (4, 90, (1, 3)), (4, 100, (0, 4)),
    (10, 25, (7, 3)), (1, 10, (1, 1)), (3, 50, (1, 2)),
])
def test_replica_split_is_closest_ratio_with_one_each(total: int, weight: int, expected: tuple[int, int]) -> None:
    assert replica_split(total, weight) == expected


def test_replica_router_patches_both_deployments_and_refuses_header_routing() -> None:
    changes = ReplicaRouter().changes(B, Traffic(50))
    assert [(c.op, c.ref, c.body) for c in changes] == [
        ("patch", ObjectRef("apps/v1", "Deployment", "models-prod", "iris-gpu-a10g"), {"spec": {"replicas": 2}}),
        ("patch", ObjectRef("apps/v1", "Deployment", "models-prod", "iris-gpu-a10g-canary"), {"spec": {"replicas": 2}}),
    ]
    with pytest.raises(ReconcilerError, match="cannot route by header"):
        ReplicaRouter().changes(B, Traffic(10, header=("x-canary", "1")))
    with pytest.raises(ReconcilerError, match="unknown canary router"):
        router_for("linkerd")


def _httproute_schema() -> dict:
    if not HTTPROUTE_CRD.exists():
        pytest.skip(f"the upstream HTTPRoute CRD is not at {HTTPROUTE_CRD.resolve()} (CI has ../shared beside the checkout)")
    crd = yaml.safe_load(HTTPROUTE_CRD.read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    return version["schema"]["openAPIV3Schema"]


@pytest.mark.parametrize("traffic", [Traffic(0), Traffic(10), Traffic(100), Traffic(30, header=("x-canary", "1")),
                                     Traffic(50, mirror_percent=20)])
def test_generated_httproutes_validate_against_the_upstream_crd(traffic: Traffic) -> None:
    import jsonschema

    schema = _httproute_schema()
    route = GatewayAPIRouter(hostnames=("iris.example.com",)).httproute(B, traffic)
    jsonschema.validate(route, schema)


def test_the_crd_schema_would_reject_a_broken_route() -> None:
    import jsonschema

    schema = _httproute_schema()
    route = GatewayAPIRouter().httproute(B, Traffic(10))
    route["spec"]["rules"][0]["backendRefs"][0]["weight"] = 2_000_000  # above the schema's maximum
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(route, schema)


# --------------------------------------------------------------------------- through the Kubernetes API stand-in


def _client(kube_api):
    from reconciler.cluster.kube import KubeClient

    kube_api.server.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "models-prod"}})
    return KubeClient.from_api_client(kube_api.api_client)


def _deployment(name: str, replicas: int) -> dict:
    labels = {L.MODEL: "iris", L.POOL: "gpu-a10g"}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": "models-prod", "labels": dict(labels)},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {**labels, L.TRACK: name.rsplit("-", 1)[-1]}},
                     "template": {"metadata": {"labels": {**labels, L.TRACK: name.rsplit("-", 1)[-1]}},
                                  "spec": {"containers": [{"name": "bento", "image": "registry/iris:1"}]}}}}


def test_gateway_router_through_the_standin_sets_exact_backend_weights(kube_api) -> None:
    client = _client(kube_api)
    router = GatewayAPIRouter(gateway="models")
    for weight in (10, 50):
        apply_changes(client, router.changes(B, Traffic(weight, header=("x-canary", "always"))))
        live = client.get(ObjectRef("gateway.networking.k8s.io/v1", "HTTPRoute", "models-prod", "iris"))
        assert live["metadata"]["labels"] == LABELS
        rules = live["spec"]["rules"]
        assert rules[0]["backendRefs"] == [{"name": "iris-gpu-a10g-canary", "port": 80, "weight": 1}]
        assert rules[0]["matches"][0]["headers"] == [{"type": "Exact", "name": "x-canary", "value": "always"}]
        assert rules[1]["backendRefs"] == [{"name": "iris-gpu-a10g", "port": 80, "weight": 100 - weight},
                                           {"name": "iris-gpu-a10g-canary", "port": 80, "weight": weight}]
    # dropping the header rule and adding a mirror: server-side apply removes what we no longer send
    apply_changes(client, router.changes(B, Traffic(0, mirror_percent=100)))
    live = client.get(ObjectRef("gateway.networking.k8s.io/v1", "HTTPRoute", "models-prod", "iris"))
    assert len(live["spec"]["rules"]) == 1
    assert live["spec"]["rules"][0]["backendRefs"][1]["weight"] == 0
    assert live["spec"]["rules"][0]["filters"] == [{"type": "RequestMirror", "requestMirror": {
        "backendRef": {"name": "iris-gpu-a10g-canary", "port": 80}, "percent": 100}}]
    assert len(kube_api.server.objects("HTTPRoute")) == 1


def test_istio_router_through_the_standin_sets_exact_route_weights(kube_api) -> None:
    client = _client(kube_api)
    apply_changes(client, IstioRouter().changes(CROSS, Traffic(25)))
    live = client.get(ObjectRef("networking.istio.io/v1", "VirtualService", "models-prod", "digits"))
    assert live["spec"]["hosts"] == ["digits.models-prod.svc.cluster.local"]
    assert [(r["destination"]["host"], r["weight"]) for r in live["spec"]["http"][0]["route"]] == [
        ("digits-gpu-a10g.models-prod.svc.cluster.local", 75), ("digits-inf2.models-prod.svc.cluster.local", 25)]
    assert "mirror" not in live["spec"]["http"][0]


def test_replica_router_through_the_standin_scales_both_deployments(kube_api) -> None:
    client = _client(kube_api)
    kube_api.server.create(_deployment("iris-gpu-a10g-stable", 4))
    kube_api.server.create(_deployment("iris-gpu-a10g-canary", 0))
    backends = Backends(model="iris", namespace="models-prod", environment="prod", stable_service="iris-gpu-a10g",
                        canary_service="iris-gpu-a10g-canary", stable_deployment="iris-gpu-a10g-stable",
                        canary_deployment="iris-gpu-a10g-canary", total_replicas=4)
    for weight, expected in ((25, (3, 1)), (50, (2, 2)), (0, (4, 0))):
        apply_changes(client, ReplicaRouter().changes(backends, Traffic(weight)))
        got = tuple(kube_api.server.get("apps/v1", "Deployment", name, "models-prod")["spec"]["replicas"]
                    for name in ("iris-gpu-a10g-stable", "iris-gpu-a10g-canary"))
        assert got == expected
