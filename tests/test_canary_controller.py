"""reconcile_rollout + the sync engine on the real API server (envtest: kube-apiserver + kube-controller-manager,
upstream Gateway API CRDs) with simulated nodes that bind and ready Pods (tests/sim_nodes.py): state in a
ConfigMap, canary objects, router weights, promotion exactly once across restarts, an unreachable metrics
source, the replica router's achieved weight from really ready pods, and every canary object owned by the
inventory and pruned when it is done.

Cross-pool moves and rollbacks with either router are in test_canary_cluster.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from reconciler import labels as L
from reconciler.rollout import store
from reconciler.rollout.controller import reconcile_rollout
from reconciler.rollout.objects import revision_of
from reconciler.sync.engine import sync_environment
from reconciler.sync.inventory import load_inventory
from reconciler.rollout.metrics import VersionMetrics
from reconciler.rollout.state import Phase
from reconciler.catalog.load import ModelEntry
from reconciler.cluster.kube import KubeClient
from reconciler.errors import KubeError, MetricsError
from reconciler.render.environment import with_content_hash
from reconciler.render.manifests import model_objects
from reconciler.catalog.effective import effective_serving
from reconciler.catalog.pools import PoolsFile
from reconciler.catalog.specs import EnvironmentSpec, ModelSpec
from reconciler.results import ObjectRef
from tests.envtest import wait_for

ROOT = Path(__file__).resolve().parents[1]
POOLS = PoolsFile.model_validate(yaml.safe_load((ROOT / "environments" / "pools.yaml").read_text())).pools
ROUTE = "gateway.networking.k8s.io/v1"


# scripted metrics of a few hundred requests per interval: the minimum-sample guard (sized for a 100x error
# regression here) lets every analysis through; the guard itself is tested in test_canary_guard.py
LOOSE_GUARD = {"detectErrorIncrease": 99, "power": 0.55}
# the warm-up after each weight increase is tested on the pure machine (test_canary_guard.py); here every
# scripted interval is judged
NO_WARMUP = {"warmup": "0s"}


def env(ns: str, router: str = "gateway-api") -> EnvironmentSpec:
    return EnvironmentSpec.model_validate({
        "name": "prod", "cluster": {"context": "envtest"}, "namespace": ns, "registry": "r.example/models",
        "pools": ["gpu-a10g", "inf2"], "canary": True,
        "defaults": {"canary": {"steps": [50, 100], "interval": "1m", "failureThreshold": 2, "router": router,
                                "progressDeadline": "30m", **LOOSE_GUARD, **NO_WARMUP},
                     "slo": {"p95LatencyMs": 200, "errorRate": 0.01}}})


def model(accelerator: str = "gpu-a10g") -> ModelEntry:
    spec = ModelSpec.model_validate({"name": "iris", "owner": "a@b.c", "service": "service.py:Iris",
                                     "serving": {"replicas": 4}, "accelerator": accelerator})
    return ModelEntry("iris", ROOT / "models" / "iris", spec)


def desired(ns: str, image: str, pool: str = "gpu-a10g", router: str = "gateway-api") -> list[dict]:
    entry, e = model(pool), env(ns, router)
    objects = model_objects(entry, e, [POOLS[pool]], effective_serving(entry.spec, e), {pool: image})
    for obj in objects:
        obj["metadata"]["namespace"] = ns
        with_content_hash(obj)  # as render leaves them
    return objects


class FakeAnalysis:
    """Scripted metrics: a real Prometheus (tested in test_canary_prometheus) cannot be fed per-track traffic
    of pods that do not run."""

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


@dataclass
class Cluster:
    kube: KubeClient
    ns: str
    kubeconfig: Path

    def fresh_client(self) -> KubeClient:
        """A new client per tick, as after a reconciler restart: nothing is remembered in memory."""
        return KubeClient.from_kubeconfig(self.kubeconfig)


def settled(c: Cluster) -> bool:
    """Every Deployment of the namespace has rolled out its spec: observed, updated, ready and available."""
    for dep in c.kube.list("apps/v1", "Deployment", c.ns):
        status, want = dep.get("status") or {}, int(dep["spec"].get("replicas") or 0)
        if int(status.get("observedGeneration") or 0) < dep["metadata"]["generation"]:
            return False
        if any(int(status.get(k) or 0) != want for k in ("replicas", "updatedReplicas", "readyReplicas",
                                                          "availableReplicas")):
            return False
    return True


def tick(c: Cluster, objects: list[dict], now: float, analysis, *, entry=None, e=None):
    """One reconcile pass of the model: the rollout tick (reads only), then the sync engine writes; then the
    controllers and the simulated kubelet are let to settle, as between two passes of a running reconciler."""
    client = c.fresh_client()
    r = reconcile_rollout(client, entry or model(), e or env(c.ns), objects, now, pools=POOLS, analysis=analysis)
    result = sync_environment(client, "prod", c.ns, {"iris": r.objects}, protect=r.protect)
    assert not result.model_errors and result.error is None, (result.model_errors, result.error)
    wait_for(lambda: settled(c), timeout=90, what="the Deployments to roll out")
    client.close()
    return r, result


def live(c: Cluster, kind: str, name: str) -> dict | None:
    api = {"Deployment": "apps/v1", "Service": "v1", "ConfigMap": "v1", "HTTPRoute": ROUTE}[kind]
    return c.kube.get(ObjectRef(api, kind, c.ns, name))


def image(obj: dict) -> str:
    return obj["spec"]["template"]["spec"]["containers"][0]["image"]


def weights(route: dict) -> list[tuple[str, int]]:
    return [(b["name"], b["weight"]) for b in route["spec"]["rules"][-1]["backendRefs"]]


def owned(c: Cluster) -> set[tuple[str, str]]:
    inventory = load_inventory(c.kube, "prod", c.ns)
    return {(ref.kind, ref.name) for ref in inventory.entries}


@pytest.fixture
def cluster(envtest, kcm, kube, sim_nodes, new_namespace):
    ns = new_namespace("canary")
    # stable (4) and canary (up to 4) pods of one GPU each: three simulated GPU nodes of 4
    for i in (1, 2):
        sim_nodes.add_node(f"sim-gpu-a10g-{i}-{sim_nodes.suffix}", "gpu-a10g", sim_nodes.pools["gpu-a10g"])
    c = Cluster(kube, ns, envtest.kubeconfig)
    with sim_nodes.running(ns):
        sync_environment(kube, "prod", ns, {"iris": desired(ns, "r.example/models/iris:v1")})  # the stable version
        wait_for(lambda: settled(c), timeout=90, what="the stable Deployment ready")
        yield c


def test_healthy_canary_promotes_exactly_once_and_every_canary_object_is_owned(cluster) -> None:
    c = cluster
    analysis = FakeAnalysis()
    new = desired(c.ns, "r.example/models/iris:v2")
    t = 1_000_000.0

    r, _ = tick(c, new, t, analysis)
    assert r.state.phase is Phase.initializing and r.state.stable_revision == "r.example/models/iris:v1"
    canary = live(c, "Deployment", "iris-gpu-a10g-canary")
    assert image(canary) == "r.example/models/iris:v2" and canary["spec"]["replicas"] == 1  # scaled with weight
    assert canary["spec"]["selector"]["matchLabels"][L.TRACK] == "canary"
    assert live(c, "Service", "iris-gpu-a10g-canary")["spec"]["selector"][L.TRACK] == "canary"
    assert live(c, "Service", "iris-gpu-a10g")["spec"]["selector"][L.TRACK] == "stable"
    assert image(live(c, "Deployment", "iris-gpu-a10g")) == "r.example/models/iris:v1"  # stable stays
    cm = live(c, "ConfigMap", "rollout-iris")
    assert cm["metadata"]["labels"][L.MODEL] == "iris" and cm["metadata"]["labels"][L.ENVIRONMENT] == "prod"
    assert {("Deployment", "iris-gpu-a10g-canary"), ("Service", "iris-gpu-a10g-canary"), ("HTTPRoute", "iris"),
            ("ConfigMap", "rollout-iris"), ("Deployment", "iris-gpu-a10g")} <= owned(c)

    r, _ = tick(c, new, t + 5, analysis)
    assert r.state.canary_weight == 50
    assert weights(live(c, "HTTPRoute", "iris")) == [("iris-gpu-a10g", 50), ("iris-gpu-a10g-canary", 50)]
    assert live(c, "Deployment", "iris-gpu-a10g-canary")["spec"]["replicas"] == 2  # ceil(4 x 50 %)

    # stable's baseline, while initializing: this interval, then its last hour once (24 windows of 150 s)
    assert [call["track"] for call in analysis.calls] == ["stable"] * 25
    history = analysis.calls[1:]
    assert [call["now"] for call in history] == [t + 5 - 150 * j for j in range(23, -1, -1)]
    assert {call["interval_seconds"] for call in history} == {150}
    analysis.calls.clear()
    r, result = tick(c, new, t + 30, analysis)
    assert r.actions == [] and analysis.calls == []  # analysis not due yet: Prometheus not even asked
    assert result.summary().as_dict().get("configured", 0) == 0, [(str(o.ref), o.message) for o in result.objects if o.action.value == "configured"]  # an idle tick writes nothing

    r, _ = tick(c, new, t + 65, analysis)
    assert r.state.canary_weight == 100
    assert {call["track"] for call in analysis.calls} == {"stable", "canary"}
    assert weights(live(c, "HTTPRoute", "iris")) == [("iris-gpu-a10g", 0), ("iris-gpu-a10g-canary", 100)]

    r, _ = tick(c, new, t + 130, analysis)
    assert r.state.phase is Phase.promoting  # the stable Deployment rolls to v2 at full size first
    assert image(live(c, "Deployment", "iris-gpu-a10g")) == "r.example/models/iris:v2"
    assert live(c, "Deployment", "iris-gpu-a10g-canary") is not None  # still serving 100 %
    r, _ = tick(c, new, t + 140, analysis)
    assert r.state.phase is Phase.promoted and r.state.promotions == 1
    assert live(c, "Deployment", "iris-gpu-a10g-canary") is None  # pruned through the inventory
    assert live(c, "Service", "iris-gpu-a10g-canary") is None
    assert L.TRACK not in live(c, "Service", "iris-gpu-a10g")["spec"]["selector"]
    assert weights(live(c, "HTTPRoute", "iris")) == [("iris-gpu-a10g", 100)]
    assert ("Deployment", "iris-gpu-a10g-canary") not in owned(c)

    for later in (t + 200, t + 400):  # restarted reconcilers keep seeing a promoted state: nothing redone
        r, result = tick(c, new, later, analysis)
        assert r.actions == [] and result.summary().as_dict().get("configured", 0) == 0
    assert store.load(c.kube, "iris", c.ns).state.promotions == 1


def test_unreachable_prometheus_is_a_measurement_error_and_pauses(cluster) -> None:
    c = cluster
    analysis = FakeAnalysis(fail=True)
    new = desired(c.ns, "r.example/models/iris:v2")
    results = [tick(c, new, now, analysis)[0] for now in (0, 5, 65, 130, 195, 260)]
    assert "metrics unavailable" in results[2].message
    last = results[-1].state
    assert last.phase is Phase.progressing and last.paused and last.pause_reason == "measurement error"
    assert last.failed_checks == 0 and last.inconclusive_checks == 0 and last.promotions == 0


def test_replica_router_scales_only_the_canary_and_reports_the_achieved_weight(cluster) -> None:
    c = cluster
    new = desired(c.ns, "r.example/models/iris:v2", router="replicas")
    e = env(c.ns, "replicas")
    tick(c, new, 0, FakeAnalysis(), e=e)
    assert live(c, "Deployment", "iris-gpu-a10g-canary")["spec"]["replicas"] == 1
    r, _ = tick(c, new, 5, FakeAnalysis(), e=e)
    assert live(c, "Deployment", "iris-gpu-a10g")["spec"]["replicas"] == 4  # the stable is never written
    assert live(c, "Deployment", "iris-gpu-a10g-canary")["spec"]["replicas"] == 4  # 50 %: as many as stable
    r, _ = tick(c, new, 10, FakeAnalysis(), e=e)
    assert r.achieved_weight == 50.0 and r.state.canary_weight == 50  # 4 ready of 8
    r, _ = tick(c, new, 65, FakeAnalysis(), e=e)  # the analysis records what the interval really had
    assert r.state.history[-1].achieved_weight == 50.0 and r.state.canary_weight == 100
    r, _ = tick(c, new, 70, FakeAnalysis(), e=e)
    assert r.achieved_weight == 50.0  # "100 %" with the stable untouched is half of the pods: shown as such


def test_concurrent_writer_loses_with_a_conflict(cluster) -> None:
    c = cluster
    new = desired(c.ns, "r.example/models/iris:v2")
    tick(c, new, 0, FakeAnalysis())
    stored = store.load(c.kube, "iris", c.ns)
    store.save(c.kube, stored.state.evolve(paused=True), c.ns, stored.resource_version)
    with pytest.raises(KubeError) as info:
        store.save(c.kube, stored.state, c.ns, stored.resource_version)  # stale resourceVersion
    assert info.value.status == 409


def test_revision_of_prefers_the_model_hash_annotation() -> None:
    dep = desired("ns", "img:v1")[0]
    assert revision_of(dep) == "img:v1"
    dep["metadata"]["annotations"] = {L.MODEL_HASH: "sha256:abc"}
    assert revision_of(dep) == "sha256:abc"
