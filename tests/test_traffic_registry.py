"""A canary router is one registry entry: a fake router (an SMI TrafficSplit, as Linkerd reads it) is
registered here and nothing else changes; the spec accepts it and its options, the effective policy
carries them, and the controller weights traffic through it and asks its capabilities, never its name.
Router options come from the spec (the Gateway's name and namespace)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from reconciler import labels as L
from reconciler.catalog.effective import effective_canary, effective_serving
from reconciler.catalog.load import ModelEntry
from reconciler.catalog.pools import PoolsFile
from reconciler.catalog.specs import EnvironmentSpec, ModelSpec
from reconciler.errors import ReconcilerError
from reconciler.render.manifests import model_objects
from reconciler.results import ObjectRef
from reconciler.rollout.controller import check_router
from reconciler.rollout.objects import achieved_weight, canary_replicas, rollout_objects
from reconciler.rollout.state import Phase, Policy, RolloutState
from reconciler.traffic import ROUTERS, Backends, Change, RouterKind, Traffic, router_for

ROOT = Path(__file__).resolve().parents[1]
POOLS = PoolsFile.model_validate(yaml.safe_load((ROOT / "environments" / "pools.yaml").read_text())).pools


class SplitOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    apex: str | None = None


@dataclass(frozen=True)
class TrafficSplitRouter:
    apex: str | None = None
    name: str = "fake-smi"

    def changes(self, b: Backends, t: Traffic) -> list[Change]:
        body: dict[str, Any] = {
            "apiVersion": "split.smi-spec.io/v1alpha4", "kind": "TrafficSplit",
            "metadata": {"name": b.model, "namespace": b.namespace, "labels": b.labels},
            "spec": {"service": self.apex or b.model,
                     "backends": [{"service": b.stable_service, "weight": 100 - t.canary_weight},
                                  {"service": b.canary_service, "weight": t.canary_weight}]}}
        return [Change("apply", ObjectRef.of(body), body)]


@pytest.fixture
def fake_router(monkeypatch: pytest.MonkeyPatch) -> RouterKind:
    kind = RouterKind("fake-smi", weight_by="route", header_routing=False, mirroring=False, options=SplitOptions,
                      make=lambda options, domain: TrafficSplitRouter(apex=options.apex))
    monkeypatch.setitem(ROUTERS, kind.name, kind)
    return kind


def env(canary: dict[str, Any]) -> EnvironmentSpec:
    return EnvironmentSpec.model_validate({
        "name": "prod", "cluster": {"context": "prod"}, "namespace": "models-prod", "registry": "r.example/models",
        "pools": ["gpu-a10g"], "canary": True,
        "defaults": {"canary": {"steps": [50, 100], **canary}, "slo": {"p95LatencyMs": 200}}})


def entry() -> ModelEntry:
    spec = ModelSpec.model_validate({"name": "iris", "owner": "a@b.c", "service": "service.py:Iris",
                                     "serving": {"replicas": 4}, "accelerator": "gpu-a10g"})
    return ModelEntry("iris", ROOT / "models" / "iris", spec)


def progressing(e: EnvironmentSpec) -> tuple[RolloutState, list[dict]]:
    model = entry()
    desired = model_objects(model, e, [POOLS["gpu-a10g"]], effective_serving(model.spec, e), {"gpu-a10g": "img:2"})
    policy = Policy.from_spec(effective_canary(model.spec, e))
    state = RolloutState("iris", "prod", policy, phase=Phase.progressing, stable_revision="r1", canary_revision="r2",
                         stable_pool="gpu-a10g", canary_pool="gpu-a10g", step_index=0, canary_weight=50)
    return state, desired


def test_a_registered_router_is_read_by_the_spec_the_policy_and_the_controller(fake_router: RouterKind) -> None:
    e = env({"router": "fake-smi", "routerOptions": {"apex": "iris-apex"}})
    canary = effective_canary(entry().spec, e)
    assert (canary.router, canary.router_options) == ("fake-smi", {"apex": "iris-apex"})
    router = router_for(canary.router, canary.router_options)
    state, desired = progressing(e)
    objects, _ = rollout_objects(state, desired, e, router, revision="r2", stable_replicas=4, state_version=None)
    split = next(o for o in objects if o["kind"] == "TrafficSplit")
    assert split["spec"] == {"service": "iris-apex", "backends": [
        {"service": "iris-gpu-a10g", "weight": 50}, {"service": "iris-gpu-a10g-canary", "weight": 50}]}
    # weight by route: the stable Service is narrowed to the stable track, the canary scales with the weight
    stable = next(o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] == "iris-gpu-a10g")
    assert stable["spec"]["selector"][L.TRACK] == "stable"
    assert canary_replicas("fake-smi", 50, full=4, stable=4, phase=Phase.progressing) == 2
    # no verify: the written weight once the canary has a ready pod
    assert achieved_weight("fake-smi", 50, stable_ready=4, canary_ready=1) == 50.0


def test_the_controller_refuses_what_the_entry_says_the_router_cannot_do(fake_router: RouterKind) -> None:
    e = env({"router": "fake-smi", "abHeader": {"name": "x-canary", "value": "1"}})
    state, _ = progressing(e)
    with pytest.raises(ReconcilerError, match="abHeader needs a router with header routing") as refused:
        check_router("iris", state.policy, router_for("fake-smi"))
    assert "gateway-api, istio" in str(refused.value.fix) and "fake-smi" not in str(refused.value.fix)
    fake_router_with_headers = RouterKind("fake-smi", weight_by="route", header_routing=True, mirroring=False,
                                          make=fake_router.make, options=SplitOptions)
    ROUTERS["fake-smi"] = fake_router_with_headers
    check_router("iris", state.policy, router_for("fake-smi"))  # the capability, not the name, decides


def test_an_unregistered_router_or_option_is_a_spec_error_naming_the_choices(fake_router: RouterKind) -> None:
    with pytest.raises(ValidationError, match="unknown router 'linkerd': use one of fake-smi, gateway-api, istio"):
        env({"router": "linkerd"})
    with pytest.raises(ValidationError, match=r"routerOptions.apexx: Extra inputs are not permitted.*takes apex"):
        env({"router": "fake-smi", "routerOptions": {"apexx": "a"}})
    with pytest.raises(ValidationError, match="routerOptions needs router beside it"):
        env({"routerOptions": {"apex": "a"}})


def test_the_gateway_comes_from_the_spec() -> None:
    e = env({"router": "gateway-api", "routerOptions": {"gateway": "edge", "gatewayNamespace": "gateways"}})
    state, desired = progressing(e)
    canary = effective_canary(entry().spec, e)
    router = router_for(canary.router, canary.router_options, domain="models.example.com")
    objects, _ = rollout_objects(state, desired, e, router, revision="r2", stable_replicas=4, state_version=None)
    route = next(o for o in objects if o["kind"] == "HTTPRoute")
    assert route["spec"]["parentRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "edge",
                                            "namespace": "gateways"}]
    assert route["spec"]["hostnames"] == ["iris.models-prod.models.example.com"]
    default = router_for("gateway-api", {})
    assert default.changes(Backends("iris", "ns", "prod", "a", "b", "a", "b"), Traffic(10))[0].body["spec"][
        "parentRefs"][0]["name"] == "models"
