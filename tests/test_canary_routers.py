"""Traffic routers: the exact HTTPRoute / VirtualService, the replica router's sizes and achieved
weights (pure); generated HTTPRoutes validate against the upstream CRD schema."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from reconciler import labels as L
from reconciler.rollout.objects import achieved_weight, canary_replicas
from reconciler.traffic import Backends, GatewayAPIRouter, IstioRouter, ReplicaRouter, Traffic, router_for
from reconciler.rollout.state import Phase
from reconciler.errors import ReconcilerError

ROOT = Path(__file__).resolve().parents[1]
HTTPROUTE_CRD = ROOT / "tests" / "upstream-schemas" / "gateway.networking.k8s.io_httproutes.crd.yaml"

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
            "hostnames": ["iris.models-prod.svc.cluster.local"],  # the model's own: no other model claims it
        },
    }


def test_every_model_routes_on_its_own_hostname() -> None:
    # found by he2e: with PathPrefix "/" and no hostnames, a second model's route on the shared Gateway
    # conflicted with the first, and Gateway API precedence sent all traffic to the oldest route
    routes = [GatewayAPIRouter(domain="models.example.com").httproute(b, Traffic(10)) for b in (B, CROSS)]
    assert [r["spec"]["hostnames"] for r in routes] == [["iris.models-prod.models.example.com"],
                                                        ["digits.models-prod.models.example.com"]]
    vs = IstioRouter(domain="models.example.com").virtualservice(B, Traffic(10))
    assert vs["spec"]["hosts"] == ["iris.models-prod.svc.cluster.local", "iris.models-prod.models.example.com"]
    assert GatewayAPIRouter(hostnames=("a.example",)).httproute(B, Traffic(10))["spec"]["hostnames"] == ["a.example"]


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


@pytest.mark.parametrize(("weight", "stable", "expected"), [
    (5, 4, 1), (10, 4, 1), (25, 4, 1), (50, 4, 4), (75, 4, 4), (100, 4, 4), (10, 10, 1), (25, 9, 3), (0, 4, 1),
])
def test_replica_router_scales_the_canary_alone_and_reports_what_it_achieves(weight, stable, expected) -> None:
    # measured on main: with 4 replicas, 5/10/25 % all became 1 replica (~25 %) while status said "5 %"
    replicas = canary_replicas("replicas", weight, full=stable, stable=stable, phase=Phase.progressing)
    assert replicas == expected
    achieved = achieved_weight("replicas", weight, stable_ready=stable, canary_ready=replicas)
    assert achieved == pytest.approx(100 * replicas / (stable + replicas))
    # nothing is ready yet: the canary gets nothing, whatever the step says
    assert achieved_weight("replicas", weight, stable_ready=stable, canary_ready=0) == 0.0


def test_mesh_routers_scale_canary_replicas_with_the_weight() -> None:
    # setCanaryScale-style: ceil(full x weight), at least one; full size while promoting
    assert [canary_replicas("gateway-api", w, full=4, stable=4, phase=Phase.progressing)
            for w in (0, 5, 25, 50, 60, 100)] == [1, 1, 1, 2, 3, 4]
    assert canary_replicas("istio", 5, full=4, stable=4, phase=Phase.promoting) == 4
    assert achieved_weight("istio", 25, stable_ready=4, canary_ready=1) == 25.0
    assert achieved_weight("istio", 25, stable_ready=4, canary_ready=0) == 0.0


def test_replica_router_writes_no_route_and_refuses_header_routing() -> None:
    assert ReplicaRouter().changes(B, Traffic(50)) == []
    with pytest.raises(ReconcilerError, match="cannot route by header"):
        ReplicaRouter().changes(B, Traffic(10, header=("x-canary", "1")))
    with pytest.raises(ReconcilerError, match="unknown canary router"):
        router_for("linkerd")


def test_no_canary_means_one_backend() -> None:
    single = Backends(**{**B.__dict__, "canary_service": B.stable_service})
    route = GatewayAPIRouter().httproute(single, Traffic(0))
    assert route["spec"]["rules"][-1]["backendRefs"] == [{"name": "iris-gpu-a10g", "port": 80, "weight": 100}]
    vs = IstioRouter().virtualservice(single, Traffic(0))
    assert [d["weight"] for d in vs["spec"]["http"][-1]["route"]] == [100]


def _httproute_schema() -> dict:
    assert HTTPROUTE_CRD.is_file(), "the upstream HTTPRoute CRD is missing: `git checkout -- tests/upstream-schemas`"
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
