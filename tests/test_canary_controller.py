"""reconcile_rollout through the Kubernetes API stand-in: state in a ConfigMap, canary objects,
router weights, promotion exactly once across restarts, rollback, and the sync engine's skip/keep."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler import labels as L
from reconciler.rollout import store
from reconciler.rollout.controller import reconcile_rollout, revision_of
from reconciler.rollout.metrics import VersionMetrics
from reconciler.rollout.state import Phase
from reconciler.catalog.load import ModelEntry
from reconciler.errors import KubeError, MetricsError
from reconciler.render.manifests import model_objects
from reconciler.results import ObjectRef
from reconciler.catalog.effective import effective_serving
from reconciler.catalog.pools import PoolsFile
from reconciler.catalog.specs import EnvironmentSpec, ModelSpec

ROOT = Path(__file__).resolve().parents[1]
NS = "models-prod"
POOLS = PoolsFile.model_validate({"pools": {
    "gpu-a10g": {"kind": "gpu", "device": {"resource": "nvidia.com/gpu"}, "hourlyPrice": 1.006},
    "inf2": {"kind": "inferentia", "device": {"resource": "aws.amazon.com/neuron"}, "hugepages2Mi": "256Mi",
             "hourlyPrice": 0.758}}}).pools


def env(router: str = "gateway-api") -> EnvironmentSpec:
    return EnvironmentSpec.model_validate({
        "name": "prod", "cluster": {"context": "standin"}, "namespace": NS, "registry": "r.example/models",
        "pools": ["gpu-a10g", "inf2"], "canary": True,
        "defaults": {"canary": {"steps": [50, 100], "interval": "1m", "failureThreshold": 2, "router": router,
                                "progressDeadline": "30m"},
                     "slo": {"p95LatencyMs": 200, "errorRate": 0.01}}})


def model(accelerator: str = "gpu-a10g") -> ModelEntry:
    spec = ModelSpec.model_validate({"name": "iris", "owner": "a@b.c", "service": "service.py:Iris",
                                     "serving": {"replicas": 4}, "accelerator": accelerator})
    return ModelEntry("iris", ROOT / "models" / "iris", spec)


def desired(image: str, pool: str = "gpu-a10g", router: str = "gateway-api") -> list[dict]:
    entry, e = model(pool), env(router)
    objects = model_objects(entry, e, [POOLS[pool]], effective_serving(entry.spec, e), {pool: image})
    for obj in objects:
        obj["metadata"]["namespace"] = NS
    return objects


class FakeAnalysis:
    """Stands in for PrometheusAnalysis (tested against a real Prometheus in test_canary_prometheus)."""

    def __init__(self, canary_error: float = 0.001, canary_p95: float = 100.0, fail: bool = False) -> None:
        self.canary_error, self.canary_p95, self.fail = canary_error, canary_p95, fail
        self.calls: list[dict] = []

    def collect(self, **kw) -> VersionMetrics:
        self.calls.append(kw)
        if self.fail:
            raise MetricsError("Prometheus at http://prom:9090 is unreachable")
        canary = kw["track"] == "canary"
        return VersionMetrics(track=kw["track"], pool=kw["pool"], requests_per_second=20.0,
                              error_rate=self.canary_error if canary else 0.001,
                              p95_ms=self.canary_p95 if canary else 100.0, replicas=kw["replicas"],
                              hourly_price=kw["hourly_price"])


@pytest.fixture
def cluster(kube_api):
    from reconciler.cluster.kube import KubeClient

    kube_api.server.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    client = KubeClient.from_api_client(kube_api.api_client)
    for obj in desired("r.example/models/iris:v1"):  # what the sync engine deployed before
        client.apply(obj)
    return kube_api, client


def fresh_client(kube_api):
    """A new client per tick, as after a reconciler restart: nothing is remembered in memory."""
    from reconciler.cluster.kube import KubeClient

    return KubeClient.from_api_client(kube_api.api_client)


def live(kube_api, kind: str, name: str) -> dict | None:
    api = {"Deployment": "apps/v1", "Service": "v1", "ConfigMap": "v1",
           "HTTPRoute": "gateway.networking.k8s.io/v1"}[kind]
    return kube_api.server.get(api, kind, name, NS)


def image(obj: dict) -> str:
    return obj["spec"]["template"]["spec"]["containers"][0]["image"]


def weights(route: dict) -> list[tuple[str, int]]:
    return [(b["name"], b["weight"]) for b in route["spec"]["rules"][-1]["backendRefs"]]


def test_healthy_canary_through_the_standin_promotes_exactly_once(cluster) -> None:
    kube_api, _ = cluster
    analysis = FakeAnalysis()
    new = desired("r.example/models/iris:v2")
    t = 1_000_000.0

    r = reconcile_rollout(fresh_client(kube_api), model(), env(), new, t, pools=POOLS, analysis=analysis)
    assert r.state.phase is Phase.initializing and r.state.stable_revision == "r.example/models/iris:v1"
    canary = live(kube_api, "Deployment", "iris-gpu-a10g-canary")
    assert image(canary) == "r.example/models/iris:v2" and canary["spec"]["replicas"] == 4
    assert canary["spec"]["selector"]["matchLabels"][L.TRACK] == "canary"
    assert live(kube_api, "Service", "iris-gpu-a10g-canary")["spec"]["selector"][L.TRACK] == "canary"
    assert live(kube_api, "Service", "iris-gpu-a10g")["spec"]["selector"][L.TRACK] == "stable"
    assert ObjectRef("apps/v1", "Deployment", NS, "iris-gpu-a10g") in r.skip  # stable stays on v1
    cm = live(kube_api, "ConfigMap", "rollout-iris")
    assert cm["metadata"]["labels"][L.MODEL] == "iris" and cm["metadata"]["labels"][L.ENVIRONMENT] == "prod"

    r = reconcile_rollout(fresh_client(kube_api), model(), env(), new, t + 5, pools=POOLS, analysis=analysis)
    assert r.state.canary_weight == 50
    assert weights(live(kube_api, "HTTPRoute", "iris")) == [("iris-gpu-a10g", 50), ("iris-gpu-a10g-canary", 50)]

    r = reconcile_rollout(fresh_client(kube_api), model(), env(), new, t + 30, pools=POOLS, analysis=analysis)
    assert r.actions == [] and analysis.calls == []  # analysis not due yet: Prometheus not even asked

    r = reconcile_rollout(fresh_client(kube_api), model(), env(), new, t + 65, pools=POOLS, analysis=analysis)
    assert r.state.canary_weight == 100
    assert {c["track"] for c in analysis.calls} == {"stable", "canary"}
    assert weights(live(kube_api, "HTTPRoute", "iris")) == [("iris-gpu-a10g", 0), ("iris-gpu-a10g-canary", 100)]

    r = reconcile_rollout(fresh_client(kube_api), model(), env(), new, t + 130, pools=POOLS, analysis=analysis)
    assert r.state.phase is Phase.promoted and r.state.promotions == 1
    assert image(live(kube_api, "Deployment", "iris-gpu-a10g")) == "r.example/models/iris:v2"
    assert live(kube_api, "Deployment", "iris-gpu-a10g-canary") is None
    assert live(kube_api, "Service", "iris-gpu-a10g-canary") is None
    assert L.TRACK not in live(kube_api, "Service", "iris-gpu-a10g")["spec"]["selector"]
    assert all(name == "iris-gpu-a10g" for name, _ in weights(live(kube_api, "HTTPRoute", "iris")))
    assert r.skip == set()

    for later in (t + 200, t + 400):  # restarted reconcilers keep seeing a promoted state: nothing redone
        r = reconcile_rollout(fresh_client(kube_api), model(), env(), new, later, pools=POOLS, analysis=analysis)
        assert r.actions == [] and r.results == []
    assert store.load(fresh_client(kube_api), "iris", NS).state.promotions == 1


def test_bad_canary_is_rolled_back_and_stable_is_held(cluster) -> None:
    kube_api, _ = cluster
    analysis = FakeAnalysis(canary_error=0.3)
    new = desired("r.example/models/iris:v2")
    t = 0.0
    for now in (t, t + 5, t + 65, t + 130):
        r = reconcile_rollout(fresh_client(kube_api), model(), env(), new, now, pools=POOLS, analysis=analysis)
    assert r.state.phase is Phase.rolled_back
    assert "error rate 30.00%" in r.state.outcome
    assert image(live(kube_api, "Deployment", "iris-gpu-a10g")) == "r.example/models/iris:v1"
    assert live(kube_api, "Deployment", "iris-gpu-a10g-canary") is None
    assert weights(live(kube_api, "HTTPRoute", "iris")) == [("iris-gpu-a10g", 100), ("iris-gpu-a10g-canary", 0)]
    # the bad revision is still what git wants: the sync engine must keep the stable Deployment on v1
    assert ObjectRef("apps/v1", "Deployment", NS, "iris-gpu-a10g") in r.skip


def test_unreachable_prometheus_counts_as_no_data(cluster) -> None:
    kube_api, _ = cluster
    analysis = FakeAnalysis(fail=True)
    new = desired("r.example/models/iris:v2")
    results = [reconcile_rollout(fresh_client(kube_api), model(), env(), new, now, pools=POOLS, analysis=analysis)
               for now in (0, 5, 65, 130)]
    assert "metrics unavailable" in results[2].message
    assert results[-1].state.phase is Phase.rolled_back and results[-1].state.promotions == 0


def test_replica_router_splits_replicas(cluster) -> None:
    kube_api, _ = cluster
    new = desired("r.example/models/iris:v2", router="replicas")
    e = env("replicas")
    reconcile_rollout(fresh_client(kube_api), model(), e, new, 0, pools=POOLS, analysis=FakeAnalysis())
    assert live(kube_api, "Deployment", "iris-gpu-a10g-canary")["spec"]["replicas"] == 0
    reconcile_rollout(fresh_client(kube_api), model(), e, new, 5, pools=POOLS, analysis=FakeAnalysis())
    assert live(kube_api, "Deployment", "iris-gpu-a10g")["spec"]["replicas"] == 2
    assert live(kube_api, "Deployment", "iris-gpu-a10g-canary")["spec"]["replicas"] == 2


def test_cross_pool_canary_moves_to_the_cheaper_inferentia_pool(cluster) -> None:
    kube_api, _ = cluster
    new = desired("r.example/models/iris:v2", pool="inf2")
    analysis = FakeAnalysis(canary_p95=150)
    states = [reconcile_rollout(fresh_client(kube_api), model("inf2"), env(), new, now, pools=POOLS,
                                analysis=analysis) for now in (0, 5)]
    assert states[-1].state.cross_pool and states[-1].state.canary_pool == "inf2"
    assert weights(live(kube_api, "HTTPRoute", "iris")) == [("iris-gpu-a10g", 50), ("iris-inf2", 50)]
    # the GPU pool's objects are no longer desired but must survive until the canary is decided
    assert ObjectRef("apps/v1", "Deployment", NS, "iris-gpu-a10g") in states[-1].keep
    for now in (65, 130):
        r = reconcile_rollout(fresh_client(kube_api), model("inf2"), env(), new, now, pools=POOLS, analysis=analysis)
    assert r.state.phase is Phase.promoted and r.state.stable_pool == "inf2"
    assert any(c["hourly_price"] == 0.758 for c in analysis.calls)
    assert all(name == "iris-inf2" for name, _ in weights(live(kube_api, "HTTPRoute", "iris")))
    assert r.keep == set()  # now the sync engine may prune the GPU pool


def test_concurrent_writer_loses_with_a_conflict(cluster) -> None:
    kube_api, client = cluster
    new = desired("r.example/models/iris:v2")
    reconcile_rollout(client, model(), env(), new, 0, pools=POOLS, analysis=FakeAnalysis())
    stored = store.load(client, "iris", NS)
    store.save(client, stored.state.evolve(paused=True), NS, stored.resource_version)
    with pytest.raises(KubeError) as info:
        store.save(client, stored.state, NS, stored.resource_version)  # stale resourceVersion
    assert info.value.status == 409


def test_revision_of_prefers_the_model_hash_annotation() -> None:
    dep = desired("img:v1")[0]
    assert revision_of(dep) == "img:v1"
    dep["metadata"]["annotations"] = {L.MODEL_HASH: "sha256:abc"}
    assert revision_of(dep) == "sha256:abc"
