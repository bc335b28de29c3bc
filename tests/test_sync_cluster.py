"""Sync scenarios on the real API server (envtest: tests/envtest.py), through the real official client.

Writes are counted from the API server's audit log; faults (5xx, 429, timeouts, dropped connections) come
from a fault-injecting proxy in front of the real server (tests/fault_proxy.py); Pods run on simulated
nodes (tests/sim_nodes.py) with the real controller-manager.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from reconciler import labels
from reconciler.cluster.kube import KubeClient, RetryPolicy
from reconciler.results import Action, ObjectRef
from reconciler.sync.engine import sync_environment
from reconciler.sync.inventory import load_inventory
from reconciler.sync.planner import SyncOptions
from tests.envtest import ControlPlane
from tests.fault_proxy import Fault, FaultProxy

FAST = RetryPolicy(attempts=6, initial=0.01, cap=0.05, max_retry_after=0.05)


@dataclass
class Cluster:
    plane: ControlPlane
    kube: KubeClient
    namespace: str
    env: str
    tmp: Path
    mark: int = 0

    def new_client(self, cls: type[KubeClient] = KubeClient, kubeconfig: Path | None = None,
                   retry: RetryPolicy | None = FAST) -> KubeClient:
        """A fresh client (a restarted process)."""
        return cls.from_kubeconfig(kubeconfig or self.plane.kubeconfig, retry=retry)

    def events(self):
        return self.plane.audit.since(self.mark, user="admin")

    def writes(self) -> int:
        return sum(e.write for e in self.events())

    def dry_runs(self) -> int:
        return sum(e.dry_run for e in self.events())

    def reset_counts(self) -> None:
        self.mark = self.plane.audit.mark()

    def proxy(self) -> FaultProxy:
        return FaultProxy(self.plane)

    def names(self, kind: str, api_version: str = "v1") -> set[str]:
        return {o["metadata"]["name"] for o in self.kube.list(api_version, kind, self.namespace)
                if (o["metadata"].get("labels") or {}).get(labels.MANAGED_BY) == labels.MANAGER}


@pytest.fixture
def cluster(envtest, new_namespace, tmp_path) -> Iterator[Cluster]:
    ns = new_namespace("sync")
    kube = KubeClient.from_kubeconfig(envtest.kubeconfig, retry=FAST)
    c = Cluster(envtest, kube, ns, f"e{uuid.uuid4().hex[:6]}", tmp_path)
    c.reset_counts()
    yield c
    kube.close()


def hashed(obj: dict) -> dict:
    from reconciler.render.environment import with_content_hash

    return with_content_hash(obj)


def model_objects(model: str, ns: str, env: str, image: str = "registry/m:1", replicas: int = 1) -> list[dict]:
    common = {labels.MANAGED_BY: labels.MANAGER, labels.MODEL: model, labels.ENVIRONMENT: env}
    sel = {labels.MODEL: model}
    return [
        hashed({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": model, "namespace": ns, "labels": dict(common)},
                "spec": {"selector": sel, "ports": [{"name": "http", "port": 80, "targetPort": 3000}]}}),
        hashed({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": f"{model}-cpu", "namespace": ns, "labels": dict(common)},
                "spec": {"replicas": replicas, "selector": {"matchLabels": sel},
                         "template": {"metadata": {"labels": {**common, **sel}},
                                      "spec": {"containers": [{"name": "bento", "image": image}]}}}}),
    ]


def desired(c: Cluster, models: dict[str, str]) -> dict[str, list[dict]]:
    return {m: model_objects(m, c.namespace, c.env, image) for m, image in models.items()}


def sync(c: Cluster, want: dict[str, list[dict]], kube: KubeClient | None = None, **options: Any):
    return sync_environment(kube or c.kube, c.env, c.namespace, want,
                            options=SyncOptions(concurrency=4, **options))


def counts(result) -> dict[str, int]:
    return result.summary().as_dict()


THREE = {"iris": "r/iris:1", "digits": "r/digits:1", "wine": "r/wine:1"}


def test_first_apply_then_noop_pass_writes_nothing(cluster):
    c = cluster
    first = sync(c, desired(c, THREE))
    assert first.ok, first.as_dict()
    assert counts(first) == {"created": 6}
    assert c.names("Deployment", "apps/v1") == {"iris-cpu", "digits-cpu", "wine-cpu"}
    inv = load_inventory(c.kube, c.env, c.namespace)
    assert len(inv.entries) == 6 and all(e.hash.startswith("sha256:") for e in inv.entries.values())

    c.reset_counts()
    again = sync(c, desired(c, THREE))
    assert counts(again) == {"unchanged": 6}
    events = c.events()
    assert c.writes() == 0 and c.dry_runs() == 0
    assert {e.verb for e in events} <= {"get", "list"} and events


def test_one_model_changed_only_its_objects_are_written(cluster):
    c = cluster
    sync(c, desired(c, THREE))
    c.reset_counts()
    result = sync(c, desired(c, {**THREE, "digits": "r/digits:2"}))
    assert result.ok
    changed = [(r.ref.name, r.action) for r in result.objects if r.action is not Action.unchanged]
    assert changed == [("digits-cpu", Action.configured)]
    assert c.writes() == 2  # the Deployment and the inventory record
    live = c.kube.get(ObjectRef("apps/v1", "Deployment", c.namespace, "digits-cpu"))
    assert live["spec"]["template"]["spec"]["containers"][0]["image"] == "r/digits:2"


def test_model_deleted_from_git_only_its_objects_are_pruned(cluster):
    c = cluster
    sync(c, desired(c, THREE))
    # an object with our labels that we never applied: not ours to prune
    foreign = model_objects("stranger", c.namespace, c.env)[0]
    c.kube.apply(foreign, field_manager="kubectl")
    c.reset_counts()
    result = sync(c, desired(c, {k: v for k, v in THREE.items() if k != "wine"}))
    pruned = sorted((r.ref.kind, r.ref.name) for r in result.objects if r.action is Action.pruned)
    assert pruned == [("Deployment", "wine-cpu"), ("Service", "wine")]
    assert c.names("Service") == {"iris", "digits", "stranger"}
    assert c.writes() == 3  # two deletes and the inventory
    assert len(load_inventory(c.kube, c.env, c.namespace).entries) == 4


def test_schema_invalid_model_is_skipped_with_all_errors_others_applied(cluster):
    c = cluster
    want = desired(c, THREE)
    bad = want["digits"][1]
    bad["spec"]["template"]["spec"]["containers"][0].pop("image")
    bad["spec"]["selector"] = {"matchLabels": {"other": "x"}}  # does not match the template: a second error
    hashed(bad)
    result = sync(c, want)
    assert not result.ok
    errors = result.model_errors["digits"]
    assert any("image" in e for e in errors) and any("selector" in e for e in errors)
    assert {r.ref.name: r.action for r in result.objects if r.model == "digits"} == {
        "digits": Action.skipped, "digits-cpu": Action.skipped}
    assert c.names("Deployment", "apps/v1") == {"iris-cpu", "wine-cpu"}
    assert "digits" not in c.names("Service")  # nothing of the invalid model was applied
    assert result.by_model()["iris"].as_dict() == {"created": 2}


def test_api_faults_mid_sync_converge_without_duplicates(cluster):
    c = cluster
    with c.proxy() as proxy:
        proxy.inject(Fault(path="deployments/digits-cpu", method="PATCH", status=500, count=2))
        proxy.inject(Fault(path="services/wine", method="PATCH", status=429, retry_after=1, count=1))
        proxy.inject(Fault(path="deployments/iris-cpu", method="PATCH", delay=4, count=1))  # past the timeout
        proxy.inject(Fault(path="services/iris", method="PATCH", dry_run=False, drop=True, count=1))
        kube = c.new_client(kubeconfig=proxy.kubeconfig(c.tmp / "proxy.kubeconfig"))
        kube.request_timeout = 2  # generous: a loaded machine must not time out the requests not delayed
        result = sync(c, desired(c, THREE), kube=kube)
        assert all(f.hits == f.count for f in proxy.faults)
    assert result.ok, result.as_dict()
    assert counts(result) == {"created": 6}
    assert kube.stats.retries >= 5
    assert c.names("Deployment", "apps/v1") == {"iris-cpu", "digits-cpu", "wine-cpu"}
    assert c.names("Service") == {"iris", "digits", "wine"}
    assert counts(sync(c, desired(c, THREE))) == {"unchanged": 6}


def test_retries_exhausted_fail_the_pass_and_the_next_pass_converges(cluster):
    c = cluster
    with c.proxy() as proxy:
        proxy.inject(Fault(path="deployments", method="PATCH", status=503, count=100))
        kube = c.new_client(kubeconfig=proxy.kubeconfig(c.tmp / "proxy.kubeconfig"))
        result = sync(c, desired(c, THREE), kube=kube)
    assert result.failed and "503" in str(result.error or "") + str(result.as_dict())
    assert sync(c, desired(c, THREE)).ok
    assert c.names("Deployment", "apps/v1") == {"iris-cpu", "digits-cpu", "wine-cpu"}


class Crash(BaseException):
    """The process dying: not an error anything catches."""


def crashing_after(n: int):
    class Crashing(KubeClient):
        applied = 0

        def apply(self, obj, field_manager=labels.MANAGER, force=True, dry_run=False):
            if not dry_run and obj["kind"] != "ConfigMap":
                if Crashing.applied >= n:
                    raise Crash()
                Crashing.applied += 1
            return super().apply(obj, field_manager, force, dry_run)

    return Crashing


def test_killed_mid_sync_restart_converges_and_nothing_leaks(cluster):
    c = cluster
    kube = c.new_client(crashing_after(3))
    with pytest.raises(Crash):
        sync_environment(kube, c.env, c.namespace, desired(c, THREE), options=SyncOptions(concurrency=1))
    assert 1 <= len(c.names("Service")) <= 3
    # while it was down, one model left git: what the dead pass created of it must still be pruned
    restarted = c.new_client()
    result = sync_environment(restarted, c.env, c.namespace, desired(c, {k: v for k, v in THREE.items() if k != "iris"}),
                              options=SyncOptions(concurrency=1))
    assert result.ok, result.as_dict()
    assert c.names("Service") == {"digits", "wine"}
    assert c.names("Deployment", "apps/v1") == {"digits-cpu", "wine-cpu"}
    inv = load_inventory(restarted, c.env, c.namespace)
    assert {r.name for r in inv.entries} == {"digits", "wine", "digits-cpu", "wine-cpu"}
    assert counts(sync(c, desired(c, {k: v for k, v in THREE.items() if k != "iris"}))) == {"unchanged": 4}


def test_empty_render_prunes_nothing_without_allow(cluster):
    c = cluster
    sync(c, desired(c, THREE))
    result = sync(c, {})
    assert not any(r.action is Action.pruned for r in result.objects)
    assert len(c.names("Service")) == 3
    result = sync(c, {}, allow_empty_prune=True)
    assert sum(r.action is Action.pruned for r in result.objects) == 6
    assert c.names("Service") == set()


def test_dry_run_writes_nothing_and_reports_the_plan(cluster):
    c = cluster
    sync(c, desired(c, THREE))
    c.reset_counts()
    result = sync(c, desired(c, {"iris": "r/iris:9", "digits": "r/digits:1"}), dry_run=True)
    assert c.writes() == 0
    acts = {(r.ref.name, r.action) for r in result.objects if r.action is not Action.unchanged}
    assert acts == {("iris-cpu", Action.configured), ("wine", Action.pruned), ("wine-cpu", Action.pruned)}


def test_drift_reported_and_self_healed(cluster):
    c = cluster
    sync(c, desired(c, THREE))
    ref = ObjectRef("apps/v1", "Deployment", c.namespace, "iris-cpu")
    c.kube.patch(ref, {"spec": {"template": {"spec": {"containers": [{"name": "bento", "image": "evil:1"}]}}}},
                 type="strategic", field_manager="kubectl-edit")
    reported = sync(c, desired(c, THREE))
    (drifted,) = [r for r in reported.objects if "drifted" in r.message]
    assert drifted.ref == ref and drifted.action is Action.unchanged
    healed = sync(c, desired(c, THREE), self_heal=True)
    # the whole pass in the message: this failed once (1 of 1,045 at load ~12, a 40-minute suite) with no write
    # and was not reproduced alone; the objects' messages and notes say which step left the drift unhealed
    assert [(r.ref.name, r.action) for r in healed.objects if r.action.writes] == [("iris-cpu", Action.configured)], \
        [(str(r.ref), r.action.value, r.message) for r in healed.objects] + list(healed.notes)
    assert c.kube.get(ref)["spec"]["template"]["spec"]["containers"][0]["image"] == "r/iris:1"


def test_unhealthy_model_is_reported_not_hidden(cluster, sim_nodes):
    c = cluster
    sim_nodes.stuck("digits-cpu-", "pending")
    want = desired(c, THREE)
    want["digits"][1]["spec"]["progressDeadlineSeconds"] = 3
    hashed(want["digits"][1])
    with sim_nodes.running(c.namespace):
        result = sync(c, want, wait=True, timeout=120)
    assert result.health["iris"].status.value == "healthy"
    assert result.health["digits"].status.value == "degraded"
    assert not result.ok
    assert "progress deadline" in str(result.as_dict()["models"]["digits"]["health"]["objects"])


def _container(objs: list[dict]) -> dict:
    container = objs[1]["spec"]["template"]["spec"]["containers"][0]
    container.setdefault("resources", {})
    return container


def _hpa(objs: list[dict], low: int, high: int) -> None:
    objs.append({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                 "metadata": {**objs[1]["metadata"], "labels": dict(objs[1]["metadata"]["labels"])},
                 "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": objs[1]["metadata"]["name"]},
                          "minReplicas": low, "maxReplicas": high}})


# each a refusal the stand-in did not make: the real server's own words are reported per model
@pytest.mark.parametrize("breakage, server_says", [
    (lambda o: _container(o)["resources"].update(requests={"cpu": "lots"}), "quantities must match"),  # HTTP 500
    (lambda o: _container(o).update(bogus={"x": 1}), "field not declared in schema"),  # HTTP 500 under SSA
    (lambda o: _container(o).update(ports=[{"name": "a-port-name-over-15", "containerPort": 3000}]),
     "must be no more than 15"),
    (lambda o: _container(o)["resources"].update(requests={"memory": "2Gi"}, limits={"memory": "1Gi"}),
     "less than or equal"),
    (lambda o: o[0]["spec"]["ports"].append({"name": "http", "port": 81, "targetPort": 3001}), "Duplicate value"),
    (lambda o: _hpa(o, 5, 2), "must be greater than or equal to `minReplicas`"),
], ids=["quantity", "unknown-field", "port-name", "limit-below-request", "duplicate-port-name", "hpa-min-max"])
def test_a_model_the_server_refuses_is_skipped_with_its_message_and_the_others_proceed(cluster, breakage, server_says):
    c = cluster
    want = desired(c, THREE)
    breakage(want["digits"])
    for obj in want["digits"]:
        hashed(obj)
    kube = c.new_client(retry=None)
    result = sync(c, want, kube=kube)
    assert result.error is None, result.error  # the environment was not aborted
    assert kube.stats.retries == 0  # a refusal is not retried
    assert any(server_says in e for e in result.model_errors["digits"]), result.model_errors
    assert {r.action for r in result.objects if r.model == "digits"} == {Action.skipped}
    assert c.names("Deployment", "apps/v1") == {"iris-cpu", "wine-cpu"}
    assert result.by_model()["iris"].as_dict() == {"created": 2}


def test_non_canonical_spellings_make_no_drift_and_no_writes(cluster):
    c = cluster
    want = desired(c, THREE)
    container = want["iris"][1]["spec"]["template"]["spec"]["containers"][0]
    container["resources"] = {"requests": {"cpu": 0.5, "memory": "1024Mi", "ephemeral-storage": "2048Ki"},
                              "limits": {"cpu": "1000m", "memory": "2097152Ki"}}
    hashed(want["iris"][1])
    assert sync(c, want).ok
    live = c.kube.get(ObjectRef("apps/v1", "Deployment", c.namespace, "iris-cpu"))
    assert live["spec"]["template"]["spec"]["containers"][0]["resources"] == {
        "requests": {"cpu": "500m", "memory": "1Gi", "ephemeral-storage": "2Mi"}, "limits": {"cpu": "1", "memory": "2Gi"}}
    for self_heal in (False, True):
        c.reset_counts()
        again = sync(c, want, self_heal=self_heal)
        assert counts(again) == {"unchanged": 6}
        assert not [r.message for r in again.objects if r.message], "no drift reported"
        assert c.writes() == 0


def test_self_heal_of_a_port_another_manager_rekeyed_makes_no_duplicate(cluster):
    c = cluster
    assert sync(c, desired(c, THREE)).ok
    ref = ObjectRef("v1", "Service", c.namespace, "iris")
    # what `kubectl edit` sends when port 80 becomes 8080: the item is re-keyed (Service ports merge by port)
    c.kube.patch(ref, {"spec": {"$setElementOrder/ports": [{"port": 8080}],
                                "ports": [{"name": "http", "port": 8080, "targetPort": 3000}, {"$patch": "delete", "port": 80}]}},
                 type="strategic", field_manager="kubectl-edit")
    assert [p["port"] for p in c.kube.get(ref)["spec"]["ports"]] == [8080]
    reported = sync(c, desired(c, THREE))
    assert any("spec.ports[http].port" in r.message for r in reported.objects if r.ref == ref)
    healed = sync(c, desired(c, THREE), self_heal=True)
    assert healed.ok, healed.as_dict()
    assert [(r.ref.name, r.action) for r in healed.objects if r.action.writes] == [("iris", Action.configured)]
    assert [(p["name"], p["port"]) for p in c.kube.get(ref)["spec"]["ports"]] == [("http", 80)]
    assert counts(sync(c, desired(c, THREE), self_heal=True)) == {"unchanged": 6}


def test_pods_that_cannot_be_created_make_the_model_degraded_with_the_reason(cluster, sim_nodes):
    c = cluster
    want = desired(c, THREE)
    want["digits"][1]["spec"]["template"]["spec"]["priorityClassName"] = f"missing-{c.env}"
    hashed(want["digits"][1])
    with sim_nodes.running(c.namespace):
        result = sync(c, want, wait=True, timeout=120)
    assert result.health["iris"].status.value == "healthy"
    digits = result.as_dict()["models"]["digits"]["health"]
    assert digits["status"] == "degraded", digits
    assert "FailedCreate" in str(digits["objects"]) and f"missing-{c.env}" in str(digits["objects"])


def test_an_inventory_over_one_configmap_is_split_by_model_and_a_change_rewrites_only_its_shard(cluster, monkeypatch):
    """At 10,000 models one ConfigMap cannot hold the inventory (1 MiB: the API server answered 422 "Too long").
    It is split by model over several (here at 2 entries each: 6 entries, 4 ConfigMaps); a no-op pass writes
    nothing, a one-model change rewrites that model's ConfigMap and the first (which counts them), and
    shrinking deletes the ConfigMaps no longer needed."""
    from reconciler.sync import inventory as inventory_module

    monkeypatch.setattr(inventory_module, "SHARD_ENTRIES", 2)
    c = cluster
    assert sync(c, desired(c, THREE)).ok
    prefix = f"reconciler-inventory-{c.env}"
    maps = {o["metadata"]["name"]: o for o in c.kube.list("v1", "ConfigMap", c.namespace)
            if o["metadata"]["name"].startswith(prefix)}
    assert sorted(maps) == [prefix, f"{prefix}-1", f"{prefix}-2", f"{prefix}-3"]
    assert maps[prefix]["data"]["shards"] == "4" and maps[prefix]["data"]["count"] == "6"
    inv = load_inventory(c.kube, c.env, c.namespace)
    assert {(r.kind, r.name) for r in inv.entries} == {(k, n) for m in THREE for k, n in
                                                         (("Service", m), ("Deployment", f"{m}-cpu"))}
    c.reset_counts()
    assert counts(sync(c, desired(c, THREE))) == {"unchanged": 6}
    assert c.writes() == 0
    c.reset_counts()
    assert sync(c, desired(c, {**THREE, "digits": "r/digits:2"})).ok
    shard = inventory_module.shard_of("digits", 4)
    written = sorted(e.name for e in c.events() if e.write)
    assert written == sorted({"digits-cpu", prefix, inventory_module.inventory_name(c.env, shard)}), written
    assert sync(c, desired(c, {"iris": "r/iris:1"})).ok  # 2 entries: one ConfigMap again
    left = sorted(o["metadata"]["name"] for o in c.kube.list("v1", "ConfigMap", c.namespace)
                  if o["metadata"]["name"].startswith(prefix))
    assert left == [prefix]
    assert len(load_inventory(c.kube, c.env, c.namespace).entries) == 2


def test_a_crd_and_its_custom_resources_in_one_pass(cluster, monkeypatch):
    """A model shipping a CustomResourceDefinition and objects of it syncs in one pass: the CRD is applied
    first (a foundation kind) and the pass waits until discovery serves its kind before validating the rest.
    The API server marks a CRD Established before its discovery lists the kind, so without the wait the
    dry run of a Widget meets NoKindMatch on a fresh client (1 run in 4 here with the wait taken out)."""
    from tests.test_kube_client import widget_crd

    c = cluster
    group = f"t{uuid.uuid4().hex[:8]}.example.com"
    crd = widget_crd(group)
    common = {labels.MANAGED_BY: labels.MANAGER, labels.MODEL: "iris", labels.ENVIRONMENT: c.env}
    crd["metadata"]["labels"] = dict(common)
    widget = {"apiVersion": f"{group}/v1", "kind": "Widget",
              "metadata": {"name": "w", "namespace": c.namespace, "labels": dict(common)}, "spec": {"size": 3}}
    want = {"iris": [hashed(crd), hashed(widget), *model_objects("iris", c.namespace, c.env)]}
    asked: list[tuple[str, str]] = []
    real_wait = KubeClient.wait_for_kind

    def wait_for_kind(self, api_version, kind, timeout):
        asked.append((api_version, kind))
        return real_wait(self, api_version, kind, timeout)

    monkeypatch.setattr(KubeClient, "wait_for_kind", wait_for_kind)
    try:
        first = sync(c, want, kube=c.new_client())  # a fresh client: nothing of the group in its discovery cache
        assert first.ok, first.as_dict()
        assert asked == [(f"{group}/v1", "Widget")]
        assert c.kube.get(ObjectRef.of(widget))["spec"]["size"] == 3
        assert counts(first) == {"created": 4}
        # the next pass writes nothing and waits for nothing: the CRD was not applied again
        asked.clear()
        again = sync(c, want, kube=c.new_client())
        assert again.ok and counts(again) == {"unchanged": 4}, again.as_dict()
        assert asked == []
    finally:
        c.kube.delete(ObjectRef("apiextensions.k8s.io/v1", "CustomResourceDefinition", None, crd["metadata"]["name"]))
