"""reconcile_rollout + the sync engine through the Kubernetes API stand-in (which simulates Deployment
readiness): state in a ConfigMap, canary objects, router weights, promotion exactly once across
restarts, rollback, and every canary object owned by the inventory and pruned when it is done."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler import labels as L
from reconciler.rollout import store
from reconciler.rollout.controller import reconcile_rollout, revision_of
from reconciler.sync.engine import sync_environment
from reconciler.sync.inventory import load_inventory
from reconciler.rollout.metrics import VersionMetrics
from reconciler.rollout.state import Phase
from reconciler.catalog.load import ModelEntry
from reconciler.errors import KubeError, MetricsError
from reconciler.render.environment import with_content_hash
from reconciler.render.manifests import model_objects
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
        with_content_hash(obj)  # as render leaves them
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
        error = self.canary_error if canary else 0.001
        requests = 20.0 * kw["interval_seconds"]
        return VersionMetrics(track=kw["track"], pool=kw["pool"], requests_per_second=20.0, error_rate=error,
                              p95_ms=self.canary_p95 if canary else 100.0, replicas=kw["replicas"],
                              hourly_price=kw["hourly_price"], requests=requests, errors=error * requests,
                              full_replicas=kw.get("full_replicas"))


def fresh_client(kube_api):
    """A new client per tick, as after a reconciler restart: nothing is remembered in memory."""
    from reconciler.cluster.kube import KubeClient

    return KubeClient.from_api_client(kube_api.api_client)


def tick(kube_api, objects: list[dict], now: float, analysis, *, entry=None, e=None):
    """One reconcile pass of the model: the rollout tick (reads only), then the sync engine writes."""
    client = fresh_client(kube_api)
    r = reconcile_rollout(client, entry or model(), e or env(), objects, now, pools=POOLS, analysis=analysis)
    result = sync_environment(client, "prod", NS, {"iris": r.objects}, protect=r.protect)
    assert not result.model_errors and result.error is None, (result.model_errors, result.error)
    return r, result


def live(kube_api, kind: str, name: str) -> dict | None:
    api = {"Deployment": "apps/v1", "Service": "v1", "ConfigMap": "v1",
           "HTTPRoute": "gateway.networking.k8s.io/v1"}[kind]
    return kube_api.server.get(api, kind, name, NS)


def image(obj: dict) -> str:
    return obj["spec"]["template"]["spec"]["containers"][0]["image"]


def weights(route: dict) -> list[tuple[str, int]]:
    return [(b["name"], b["weight"]) for b in route["spec"]["rules"][-1]["backendRefs"]]


def owned(kube_api) -> set[tuple[str, str]]:
    inventory = load_inventory(fresh_client(kube_api), "prod", NS)
    return {(ref.kind, ref.name) for ref in inventory.entries}


@pytest.fixture
def cluster(kube_api):
    from reconciler.cluster.kube import KubeClient

    kube_api.server.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    client = KubeClient.from_api_client(kube_api.api_client)
    sync_environment(client, "prod", NS, {"iris": desired("r.example/models/iris:v1")})  # the stable version
    return kube_api, client


def test_healthy_canary_promotes_exactly_once_and_every_canary_object_is_owned(cluster) -> None:
    kube_api, _ = cluster
    analysis = FakeAnalysis()
    new = desired("r.example/models/iris:v2")
    t = 1_000_000.0

    r, _ = tick(kube_api, new, t, analysis)
    assert r.state.phase is Phase.initializing and r.state.stable_revision == "r.example/models/iris:v1"
    canary = live(kube_api, "Deployment", "iris-gpu-a10g-canary")
    assert image(canary) == "r.example/models/iris:v2" and canary["spec"]["replicas"] == 1  # scaled with weight
    assert canary["spec"]["selector"]["matchLabels"][L.TRACK] == "canary"
    assert live(kube_api, "Service", "iris-gpu-a10g-canary")["spec"]["selector"][L.TRACK] == "canary"
    assert live(kube_api, "Service", "iris-gpu-a10g")["spec"]["selector"][L.TRACK] == "stable"
    assert image(live(kube_api, "Deployment", "iris-gpu-a10g")) == "r.example/models/iris:v1"  # stable stays
    cm = live(kube_api, "ConfigMap", "rollout-iris")
    assert cm["metadata"]["labels"][L.MODEL] == "iris" and cm["metadata"]["labels"][L.ENVIRONMENT] == "prod"
    assert {("Deployment", "iris-gpu-a10g-canary"), ("Service", "iris-gpu-a10g-canary"), ("HTTPRoute", "iris"),
            ("ConfigMap", "rollout-iris"), ("Deployment", "iris-gpu-a10g")} <= owned(kube_api)

    r, _ = tick(kube_api, new, t + 5, analysis)
    assert r.state.canary_weight == 50
    assert weights(live(kube_api, "HTTPRoute", "iris")) == [("iris-gpu-a10g", 50), ("iris-gpu-a10g-canary", 50)]
    assert live(kube_api, "Deployment", "iris-gpu-a10g-canary")["spec"]["replicas"] == 2  # ceil(4 x 50 %)

    assert [c["track"] for c in analysis.calls] == ["stable"]  # stable's baseline, while initializing
    analysis.calls.clear()
    r, result = tick(kube_api, new, t + 30, analysis)
    assert r.actions == [] and analysis.calls == []  # analysis not due yet: Prometheus not even asked
    assert result.summary().as_dict().get("configured", 0) == 0, [(str(o.ref), o.message) for o in result.objects if o.action.value == "configured"]  # an idle tick writes nothing

    r, _ = tick(kube_api, new, t + 65, analysis)
    assert r.state.canary_weight == 100
    assert {c["track"] for c in analysis.calls} == {"stable", "canary"}
    assert weights(live(kube_api, "HTTPRoute", "iris")) == [("iris-gpu-a10g", 0), ("iris-gpu-a10g-canary", 100)]

    r, _ = tick(kube_api, new, t + 130, analysis)
    assert r.state.phase is Phase.promoting  # the stable Deployment rolls to v2 at full size first
    assert image(live(kube_api, "Deployment", "iris-gpu-a10g")) == "r.example/models/iris:v2"
    assert live(kube_api, "Deployment", "iris-gpu-a10g-canary") is not None  # still serving 100 %
    r, _ = tick(kube_api, new, t + 140, analysis)
    assert r.state.phase is Phase.promoted and r.state.promotions == 1
    assert live(kube_api, "Deployment", "iris-gpu-a10g-canary") is None  # pruned through the inventory
    assert live(kube_api, "Service", "iris-gpu-a10g-canary") is None
    assert L.TRACK not in live(kube_api, "Service", "iris-gpu-a10g")["spec"]["selector"]
    assert weights(live(kube_api, "HTTPRoute", "iris")) == [("iris-gpu-a10g", 100)]
    assert ("Deployment", "iris-gpu-a10g-canary") not in owned(kube_api)

    for later in (t + 200, t + 400):  # restarted reconcilers keep seeing a promoted state: nothing redone
        r, result = tick(kube_api, new, later, analysis)
        assert r.actions == [] and result.summary().as_dict().get("configured", 0) == 0
    assert store.load(fresh_client(kube_api), "iris", NS).state.promotions == 1


def test_bad_canary_is_rolled_back_stable_is_held_and_the_canary_pruned(cluster) -> None:
    kube_api, _ = cluster
    analysis = FakeAnalysis(canary_error=0.3)
    new = desired("r.example/models/iris:v2")
    for now in (0, 5, 65, 130):
        r, _ = tick(kube_api, new, now, analysis)
    assert r.state.phase is Phase.rolled_back
    assert "error rate 30.00%" in r.state.outcome
    assert image(live(kube_api, "Deployment", "iris-gpu-a10g")) == "r.example/models/iris:v1"
    assert live(kube_api, "Deployment", "iris-gpu-a10g-canary") is None
    assert weights(live(kube_api, "HTTPRoute", "iris")) == [("iris-gpu-a10g", 100)]
    # the bad revision is still what git wants: the next passes keep the stable Deployment on v1
    r, _ = tick(kube_api, new, 500, analysis)
    assert image(live(kube_api, "Deployment", "iris-gpu-a10g")) == "r.example/models/iris:v1"


def test_unreachable_prometheus_is_inconclusive_and_pauses(cluster) -> None:
    kube_api, _ = cluster
    analysis = FakeAnalysis(fail=True)
    new = desired("r.example/models/iris:v2")
    results = [tick(kube_api, new, now, analysis)[0] for now in (0, 5, 65, 130, 195, 260)]
    assert "metrics unavailable" in results[2].message
    last = results[-1].state
    assert last.phase is Phase.progressing and last.paused and last.pause_reason == "inconclusive"
    assert last.failed_checks == 0 and last.promotions == 0


def test_replica_router_scales_only_the_canary_and_reports_the_achieved_weight(cluster) -> None:
    kube_api, _ = cluster
    new = desired("r.example/models/iris:v2", router="replicas")
    e = env("replicas")
    tick(kube_api, new, 0, FakeAnalysis(), e=e)
    assert live(kube_api, "Deployment", "iris-gpu-a10g-canary")["spec"]["replicas"] == 1
    r, _ = tick(kube_api, new, 5, FakeAnalysis(), e=e)
    assert live(kube_api, "Deployment", "iris-gpu-a10g")["spec"]["replicas"] == 4  # the stable is never written
    assert live(kube_api, "Deployment", "iris-gpu-a10g-canary")["spec"]["replicas"] == 4  # 50 %: as many as stable
    r, _ = tick(kube_api, new, 10, FakeAnalysis(), e=e)
    assert r.achieved_weight == 50.0 and r.state.canary_weight == 50  # 4 ready of 8
    r, _ = tick(kube_api, new, 65, FakeAnalysis(), e=e)  # the analysis records what the interval really had
    assert r.state.history[-1].achieved_weight == 50.0 and r.state.canary_weight == 100
    r, _ = tick(kube_api, new, 70, FakeAnalysis(), e=e)
    assert r.achieved_weight == 50.0  # "100 %" with the stable untouched is half of the pods: shown as such


def test_cross_pool_canary_moves_to_the_cheaper_inferentia_pool(cluster) -> None:
    kube_api, _ = cluster
    new = desired("r.example/models/iris:v2", pool="inf2")
    analysis = FakeAnalysis(canary_p95=150)
    for now in (0, 5):
        r, result = tick(kube_api, new, now, analysis, entry=model("inf2"))
    assert r.state.cross_pool and r.state.canary_pool == "inf2"
    assert weights(live(kube_api, "HTTPRoute", "iris")) == [("iris-gpu-a10g", 50), ("iris-inf2", 50)]
    # the GPU pool's objects are no longer rendered but survive until the canary is decided
    assert live(kube_api, "Deployment", "iris-gpu-a10g") is not None
    for now in (65, 130):
        r, _ = tick(kube_api, new, now, analysis, entry=model("inf2"))
    assert r.state.phase is Phase.promoting and live(kube_api, "Deployment", "iris-gpu-a10g") is not None
    r, _ = tick(kube_api, new, 140, analysis, entry=model("inf2"))
    assert r.state.phase is Phase.promoted and r.state.stable_pool == "inf2"
    assert any(c["hourly_price"] == 0.758 for c in analysis.calls)
    assert weights(live(kube_api, "HTTPRoute", "iris")) == [("iris-inf2", 100)]
    r, _ = tick(kube_api, new, 150, analysis, entry=model("inf2"))
    assert live(kube_api, "Deployment", "iris-gpu-a10g") is None  # pruned only after inf2 was ready


def test_concurrent_writer_loses_with_a_conflict(cluster) -> None:
    kube_api, client = cluster
    new = desired("r.example/models/iris:v2")
    tick(kube_api, new, 0, FakeAnalysis())
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
