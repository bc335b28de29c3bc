"""Canaries on the REAL API server (envtest: kube-apiserver + kube-controller-manager, upstream Gateway API
CRDs) with simulated nodes that bind and ready Pods (tests/sim_nodes.py), driven the way the sync engine
drives them: one rollout tick (reads only), then ``sync_environment`` validates everything with a
server-side dry run, applies, records the inventory and prunes.

- a cross-pool canary gpu-a10g -> inf2 with A/B header routing and mirroring, promoted, with the Gateway API
  router (HTTPRoute) and with the Istio router (VirtualService, accepted by the upstream CRD's schema under
  server-side apply); the GPU pool is scaled down only after the Inferentia Deployment is ready at full size;
  every object in the inventory;
- a canary that makes too many errors is rolled back with either router: the route goes back to stable only,
  the canary objects are pruned, the stable Deployment is untouched;
- a model removed from git during a canary leaves no object behind;
- an invalid canary object means zero writes to its environment.

Metrics come from a scripted source (the judges are tested on simulated traffic in test_canary_judge and
against a real Prometheus in test_canary_prometheus): a real Prometheus cannot be fed per-pool traffic here.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from reconciler import labels as L
from reconciler.catalog.effective import effective_serving
from reconciler.catalog.load import ModelEntry
from reconciler.catalog.pools import PoolsFile
from reconciler.catalog.specs import EnvironmentSpec, ModelSpec
from reconciler.cluster.kube import KubeClient
from reconciler.render.environment import with_content_hash
from reconciler.render.manifests import model_objects
from reconciler.results import ObjectRef
from reconciler.rollout.controller import reconcile_rollout
from reconciler.rollout.metrics import VersionMetrics
from reconciler.rollout.state import Phase
from reconciler.sync.engine import sync_environment
from reconciler.sync.inventory import load_inventory
from tests.envtest import wait_for

ROOT = Path(__file__).resolve().parents[1]
POOLS = PoolsFile.model_validate(yaml.safe_load((ROOT / "environments" / "pools.yaml").read_text())).pools
ROUTE = "gateway.networking.k8s.io/v1"
ISTIO = "networking.istio.io/v1"
ROUTES = {"gateway-api": (ROUTE, "HTTPRoute"), "istio": (ISTIO, "VirtualService")}


def env_spec(ns: str, **canary) -> EnvironmentSpec:
    return EnvironmentSpec.model_validate({
        "name": "prod", "cluster": {"context": "envtest"}, "namespace": ns, "registry": "r.example/models",
        "pools": ["gpu-a10g", "inf2"], "canary": True,
        "defaults": {"canary": {"steps": [25, 50, 100], "interval": "1m", "failureThreshold": 2,
                                "router": "gateway-api", "progressDeadline": "30m", "minRequests": 100,
                                "detectErrorIncrease": 99, "power": 0.55, **canary},
                     "slo": {"p95LatencyMs": 200, "errorRate": 0.01}}})


def entry(name: str, pool: str) -> ModelEntry:
    spec = ModelSpec.model_validate({"name": name, "owner": "a@b.c", "service": "service.py:Svc",
                                     "serving": {"replicas": 2}, "accelerator": pool,
                                     "architecture": "sklearn-scaler-mlp"})
    return ModelEntry(name, ROOT / "models" / name, spec)


def rendered(e: EnvironmentSpec, name: str, pool: str, image: str) -> list[dict]:
    model = entry(name, pool)
    objects = model_objects(model, e, [POOLS[pool]], effective_serving(model.spec, e), {pool: image})
    for obj in objects:
        obj["metadata"]["namespace"] = e.namespace
        with_content_hash(obj)  # as render leaves them
    return objects


class Metrics:
    """Healthy traffic for both tracks, with the pool prices of pools.yaml; ``canary_errors`` makes it unhealthy."""

    def __init__(self, canary_errors: float = 0.002) -> None:
        self.canary_errors = canary_errors

    def collect(self, **kw) -> VersionMetrics:
        requests = 50.0 * kw["interval_seconds"] * (0.5 if kw["track"] == "canary" else 1.0)
        rate = self.canary_errors if kw["track"] == "canary" else 0.002
        return VersionMetrics(track=kw["track"], pool=kw["pool"], requests_per_second=requests / kw["interval_seconds"],
                              error_rate=rate, p95_ms=120.0, requests=requests, errors=rate * requests,
                              replicas=kw["replicas"], hourly_price=kw["hourly_price"],
                              full_replicas=kw.get("full_replicas"))


def tick(kube: KubeClient, e: EnvironmentSpec, name: str, pool: str, objects: list[dict], now: float,
         others: dict[str, list[dict]] | None = None, metrics: Metrics | None = None):
    r = reconcile_rollout(kube, entry(name, pool), e, objects, now, pools=POOLS, analysis=metrics or Metrics())
    result = sync_environment(kube, e.name, e.namespace, {name: r.objects, **(others or {})}, protect=r.protect)
    return r, result


def deployment(kube: KubeClient, ns: str, name: str) -> dict | None:
    return kube.get(ObjectRef("apps/v1", "Deployment", ns, name))


def ready(obj: dict | None) -> int:
    return int(((obj or {}).get("status") or {}).get("readyReplicas") or 0)


def managed(kube: KubeClient, ns: str, model: str) -> set[tuple[str, str]]:
    """Every object of the model the reconciler labelled, on the server (routes included)."""
    out = set()
    for api, kind in (("apps/v1", "Deployment"), ("v1", "Service"), ("v1", "ConfigMap"), (ROUTE, "HTTPRoute"),
                      (ISTIO, "VirtualService"), ("autoscaling/v2", "HorizontalPodAutoscaler")):
        for obj in kube.list(api, kind, ns, label_selector=f"{L.MODEL}={model}"):
            out.add((kind, obj["metadata"]["name"]))
    return out


def owned(kube: KubeClient, ns: str) -> set[tuple[str, str]]:
    return {(ref.kind, ref.name) for ref in load_inventory(kube, "prod", ns).entries}


@pytest.fixture
def cluster(kcm, kube, sim_nodes, new_namespace):
    ns = new_namespace("canary")
    with sim_nodes.running(ns):
        yield kube, ns


def assert_route(kube: KubeClient, ns: str, router: str, stable: str, canary: str, weight: int) -> None:
    """The live route (as the server stored it) sends the header to the canary, mirrors 10 %, splits by weight."""
    api, kind = ROUTES[router]
    route = kube.get(ObjectRef(api, kind, ns, "iris"))
    assert route is not None, f"no {kind} iris"
    if router == "gateway-api":
        rules = route["spec"]["rules"]
        assert rules[0]["matches"][0]["headers"] == [{"type": "Exact", "name": "x-canary", "value": "always"}]
        assert rules[0]["backendRefs"][0]["name"] == canary
        assert rules[-1]["filters"][0]["requestMirror"]["percent"] == 10
        assert {b["name"]: b["weight"] for b in rules[-1]["backendRefs"]} == {stable: 100 - weight, canary: weight}
        return
    http = route["spec"]["http"]
    assert route["spec"]["hosts"] == [f"iris.{ns}.svc.cluster.local"]
    assert http[0]["match"] == [{"headers": {"x-canary": {"exact": "always"}}}]
    assert [d["destination"]["host"] for d in http[0]["route"]] == [f"{canary}.{ns}.svc.cluster.local"]
    assert http[-1]["mirror"]["host"] == f"{canary}.{ns}.svc.cluster.local"
    assert http[-1]["mirrorPercentage"] == {"value": 10}  # the server keeps the number; JSON drops the .0
    assert {d["destination"]["host"].split(".")[0]: d["weight"] for d in http[-1]["route"]} == {
        stable: 100 - weight, canary: weight}


@pytest.mark.parametrize("router", ["gateway-api", "istio"])
def test_cross_pool_canary_gpu_to_inferentia_end_to_end(cluster, router) -> None:
    kube, ns = cluster
    e = env_spec(ns, abHeader={"name": "x-canary", "value": "always"}, mirrorPercent=10, router=router)
    v1 = rendered(e, "iris", "gpu-a10g", "r.example/models/iris:v1-cuda")
    tick(kube, e, "iris", "gpu-a10g", v1, 0)  # first deployment: adopted as the stable version
    wait_for(lambda: ready(deployment(kube, ns, "iris-gpu-a10g")) == 2, timeout=90, what="GPU pool ready")

    v2 = rendered(e, "iris", "inf2", "r.example/models/iris:v2-neuron")
    log = []
    weights: set[int] = set()
    now = 1000.0
    for _ in range(40):
        r, result = tick(kube, e, "iris", "inf2", v2, now)
        assert result.error is None and not result.model_errors, (result.error, result.model_errors)
        gpu, inf2 = deployment(kube, ns, "iris-gpu-a10g"), deployment(kube, ns, "iris-inf2")
        log.append((r.state.phase, gpu is not None and ready(gpu), ready(inf2)))
        # every object the reconciler wrote for the model is in the inventory, at every step
        assert managed(kube, ns, "iris") <= owned(kube, ns), managed(kube, ns, "iris") - owned(kube, ns)
        if r.state.phase is Phase.progressing and r.state.canary_weight < 100:
            assert_route(kube, ns, router, "iris-gpu-a10g", "iris-inf2", r.state.canary_weight)
            weights.add(r.state.canary_weight)
        if r.state.phase is Phase.promoted and gpu is None:
            break
        # let the controllers and the simulated kubelet catch up before the next tick
        wait_for(lambda: ready(deployment(kube, ns, "iris-inf2")) >= int(
            (deployment(kube, ns, "iris-inf2") or {}).get("spec", {}).get("replicas") or 0), timeout=90,
            what="inf2 Deployment settled")
        now += 61
    phases = [p for p, _, _ in log]
    assert Phase.promoting in phases and phases[-1] is Phase.promoted, log
    assert r.state.stable_pool == "inf2" and r.state.promotions == 1
    # the old pool kept its full capacity until the new one was ready at full size, then went
    first_gone = next(i for i, (_, gpu_ready, _) in enumerate(log) if gpu_ready is False)
    assert all(gpu_ready == 2 for _, gpu_ready, _ in log[:first_gone]), log
    assert log[first_gone - 1][0] is Phase.promoting  # promoting held both pools ...
    assert log[first_gone][0] is Phase.promoted and log[first_gone][2] == 2, log  # ... until inf2 had 2 ready
    assert ready(deployment(kube, ns, "iris-inf2")) == 2
    assert ("Deployment", "iris-gpu-a10g") not in owned(kube, ns)
    assert managed(kube, ns, "iris") <= owned(kube, ns)
    assert weights == {25, 50}  # every step below 100 % was served through the route
    other = ROUTES["istio" if router == "gateway-api" else "gateway-api"]
    assert not any(kind == other[1] for kind, _ in managed(kube, ns, "iris"))  # one router's objects only


@pytest.mark.parametrize("router", ["gateway-api", "istio"])
def test_a_failing_canary_is_rolled_back_and_its_objects_pruned(cluster, router) -> None:
    kube, ns = cluster
    e = env_spec(ns, abHeader={"name": "x-canary", "value": "always"}, mirrorPercent=10, router=router)
    v1 = rendered(e, "iris", "gpu-a10g", "r.example/models/iris:v1-cuda")
    tick(kube, e, "iris", "gpu-a10g", v1, 0)
    wait_for(lambda: ready(deployment(kube, ns, "iris-gpu-a10g")) == 2, timeout=90, what="stable ready")
    stable_before = deployment(kube, ns, "iris-gpu-a10g")["spec"]["template"]
    v2 = rendered(e, "iris", "gpu-a10g", "r.example/models/iris:v2-cuda")
    bad = Metrics(canary_errors=0.10)  # 50x stable's error rate
    now, phases = 1000.0, []
    for _ in range(12):
        r, result = tick(kube, e, "iris", "gpu-a10g", v2, now, metrics=bad)
        assert result.error is None and not result.model_errors, (result.error, result.model_errors)
        phases.append(r.state.phase)
        if r.state.phase is Phase.progressing:
            assert_route(kube, ns, router, "iris-gpu-a10g", "iris-gpu-a10g-canary", r.state.canary_weight)
        if r.state.phase is Phase.rolled_back:
            break
        wait_for(lambda: ready(deployment(kube, ns, "iris-gpu-a10g-canary")) >= 1, timeout=90, what="canary ready")
        now += 61
    assert phases[-1] is Phase.rolled_back and Phase.progressing in phases, phases
    assert "decided by errors vs" in (r.state.outcome or ""), r.state.outcome
    assert r.state.canary_weight == 0 and r.state.stable_revision != r.state.canary_revision
    # the canary is gone, the route sends everything to stable, the stable Deployment was never rewritten
    assert deployment(kube, ns, "iris-gpu-a10g-canary") is None
    assert kube.get(ObjectRef("v1", "Service", ns, "iris-gpu-a10g-canary")) is None
    assert deployment(kube, ns, "iris-gpu-a10g")["spec"]["template"] == stable_before
    api, kind = ROUTES[router]
    route = kube.get(ObjectRef(api, kind, ns, "iris"))
    if route is not None:  # a route left in place must send all traffic to stable
        assert "iris-gpu-a10g-canary" not in str(route["spec"]), route["spec"]
    assert managed(kube, ns, "iris") <= owned(kube, ns)
    # a later pass, with git still wanting v2: the rolled-back revision is not tried again, stable stays on v1
    r, result = tick(kube, e, "iris", "gpu-a10g", v2, now + 61, metrics=bad)
    assert result.error is None and r.state.phase is Phase.rolled_back and not r.actions
    assert deployment(kube, ns, "iris-gpu-a10g")["spec"]["template"] == stable_before
    assert deployment(kube, ns, "iris-gpu-a10g-canary") is None


def test_model_removed_from_git_during_a_canary_leaves_no_object_behind(cluster) -> None:
    kube, ns = cluster
    e = env_spec(ns)
    other = {"keep": rendered(e, "keep", "inf2", "r.example/models/keep:1-neuron")}  # one GPU node: 4 GPUs
    v1 = rendered(e, "iris", "gpu-a10g", "r.example/models/iris:v1-cuda")
    tick(kube, e, "iris", "gpu-a10g", v1, 0, others=other)
    wait_for(lambda: ready(deployment(kube, ns, "iris-gpu-a10g")) == 2, timeout=90, what="stable ready")
    v2 = rendered(e, "iris", "gpu-a10g", "r.example/models/iris:v2-cuda")
    for now in (100, 200):
        r, _ = tick(kube, e, "iris", "gpu-a10g", v2, now, others=other)
        wait_for(lambda: ready(deployment(kube, ns, "iris-gpu-a10g-canary")) >= 1, timeout=90, what="canary ready")
    assert r.state.phase is Phase.progressing and r.state.canary_weight == 25
    during = managed(kube, ns, "iris")
    assert {("Deployment", "iris-gpu-a10g-canary"), ("Service", "iris-gpu-a10g-canary"), ("HTTPRoute", "iris"),
            ("ConfigMap", "rollout-iris"), ("Deployment", "iris-gpu-a10g")} <= during <= owned(kube, ns)

    result = sync_environment(kube, e.name, ns, other)  # iris is gone from git
    assert result.error is None
    assert managed(kube, ns, "iris") == set()
    # and what the controllers made for it goes too (ReplicaSets and Pods, garbage-collected)
    wait_for(lambda: not kube.list("v1", "Pod", ns, label_selector=f"{L.MODEL}=iris"), timeout=90,
             what="iris Pods garbage-collected")
    assert not kube.list("apps/v1", "ReplicaSet", ns, label_selector=f"{L.MODEL}=iris")
    assert {name for kind, name in owned(kube, ns)} == {"keep", "keep-inf2"}
    assert ready(deployment(kube, ns, "keep-inf2")) >= 1  # the other model is untouched


def test_an_invalid_canary_object_means_zero_writes_to_its_environment(cluster, envtest) -> None:
    kube, ns = cluster
    e = env_spec(ns)
    # a 52-character model name is a valid DNS label, and so is "<model>-gpu-a10g"; its canary Service
    # "<model>-gpu-a10g-canary" is 68 characters: the real server refuses it (a Service name is <= 63)
    name = "m" * 52
    v1 = rendered(e, name, "gpu-a10g", f"r.example/models/{name}:v1-cuda")
    tick(kube, e, name, "gpu-a10g", v1, 0)
    v2 = rendered(e, name, "gpu-a10g", f"r.example/models/{name}:v2-cuda")
    before = {(k, n) for k, n in managed(kube, ns, name)}
    mark = envtest.audit.mark()
    r, result = tick(kube, e, name, "gpu-a10g", v2, 100)
    events = [ev for ev in envtest.audit.since(mark, user="admin") if ev.namespace == ns]
    # the simulated kubelet (tests/sim_nodes.py) binds and readies Pods with the same admin user: not ours
    writes = [ev for ev in events if ev.write and not ev.dry_run and ev.resource != "pods"]
    assert writes == [], [(ev.verb, ev.resource) for ev in writes]
    assert any(ev.dry_run for ev in events)  # it was validated by the server, and refused
    errors = " ".join(result.model_errors[name])
    assert f"{name}-gpu-a10g-canary" in errors and "63" in errors
    assert managed(kube, ns, name) == before  # the stable version is as it was, nothing half-applied


@pytest.mark.parametrize("router", ["gateway-api", "istio"])
def test_two_models_in_one_environment_route_on_their_own_hostnames(cluster, router) -> None:
    """Both models in a canary at once on the real server: each route is accepted and claims only its model's host."""
    kube, ns = cluster
    e = env_spec(ns, router=router, routeDomain="models.example.com", steps=[50, 100])
    pools = {"iris": "gpu-a10g", "digits": "inf2"}  # the simulated nodes fit one canary per pool
    versions = {name: (rendered(e, name, pool, f"r.example/models/{name}:v1"),
                       rendered(e, name, pool, f"r.example/models/{name}:v2")) for name, pool in pools.items()}
    tick(kube, e, "iris", pools["iris"], versions["iris"][0], 0, others={"digits": versions["digits"][0]})
    tick(kube, e, "digits", pools["digits"], versions["digits"][0], 0, others={"iris": versions["iris"][0]})
    wait_for(lambda: all(ready(deployment(kube, ns, f"{n}-{p}")) >= 1 for n, p in pools.items()), timeout=90,
             what="both stable")
    states = {}
    for now in (100.0, 200.0):  # one rollout tick per model, then one sync of the environment with both
        ticks = {name: reconcile_rollout(kube, entry(name, pools[name]), e, versions[name][1], now, pools=POOLS,
                                         analysis=Metrics()) for name in versions}
        protect = {ref: why for r in ticks.values() for ref, why in r.protect.items()}
        result = sync_environment(kube, e.name, ns, {n: r.objects for n, r in ticks.items()}, protect=protect)
        assert result.error is None and not result.model_errors, (result.error, result.model_errors)
        states = {n: r.state for n, r in ticks.items()}
        wait_for(lambda: all(ready(deployment(kube, ns, f"{n}-{p}-canary")) >= 1 for n, p in pools.items()),
                 timeout=90, what="both canaries ready")
    assert all(s.phase is Phase.progressing and s.canary_weight == 50 for s in states.values()), states
    api, kind = ROUTES[router]
    hosts = {}
    for name in versions:
        route = kube.get(ObjectRef(api, kind, ns, name))
        assert route is not None, f"no {kind} {name}"
        hosts[name] = set(route["spec"]["hostnames" if router == "gateway-api" else "hosts"])
        assert f"{name}.{ns}.models.example.com" in hosts[name]
    assert not hosts["iris"] & hosts["digits"], hosts  # no (hostname, path) two models both claim
