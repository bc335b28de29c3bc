"""The pure sync decision (plan_sync, next_inventory, drift), the inventory encoding and health: no server."""

from __future__ import annotations

import copy

import pytest

from reconciler import labels
from reconciler.sync.health import HealthStatus, aggregate, health_of, wait_for_health
from reconciler.sync.inventory import PENDING, Inventory, InventoryEntry
from reconciler.results import Action, ObjectRef
from reconciler.field_diff import FieldChange
from reconciler.sync.diff import drift
from reconciler.sync.planner import SyncOptions, next_inventory, plan_sync

NS = "models-dev"


def obj(kind: str, name: str, model: str, *, version: int = 1, api_version: str | None = None,
        namespace: str | None = NS, **spec) -> dict:
    api_version = api_version or {"Deployment": "apps/v1", "HorizontalPodAutoscaler": "autoscaling/v2"}.get(kind, "v1")
    o = {"apiVersion": api_version, "kind": kind,
         "metadata": {"name": name, "labels": {labels.MODEL: model, labels.MANAGED_BY: labels.MANAGER},
                      "annotations": {labels.CONTENT_HASH: f"sha256:{name}-v{version}"}},
         "spec": spec or {"v": version}}
    if namespace:
        o["metadata"]["namespace"] = namespace
    return o


def owned(objs: list[dict]) -> Inventory:
    inv = Inventory("dev", NS, resource_version="1")
    for o in objs:
        ref = ObjectRef.of(o)
        inv.entries[ref] = InventoryEntry(ref, o["metadata"]["labels"][labels.MODEL],
                                          o["metadata"]["annotations"][labels.CONTENT_HASH])
    return inv


def live_of(objs: list[dict]) -> dict[ObjectRef, dict]:
    out = {}
    for o in objs:
        live = copy.deepcopy(o)
        live["metadata"]["resourceVersion"] = "7"
        live["metadata"]["uid"] = "u-" + o["metadata"]["name"]
        live["status"] = {"observedGeneration": 1}
        out[ObjectRef.of(o)] = live
    return out


def actions(plan) -> dict[str, Action]:
    return {f"{a.ref.kind}/{a.ref.name}": a.action for a in plan.actions}


@pytest.fixture
def two_models():
    return {"iris": [obj("Service", "iris", "iris"), obj("Deployment", "iris-cpu", "iris")],
            "digits": [obj("Service", "digits", "digits"), obj("Deployment", "digits-cpu", "digits")]}


def test_first_apply_creates_everything_in_kind_order(two_models):
    plan = plan_sync("dev", NS, two_models, Inventory("dev", NS), live={})
    assert all(a.action is Action.created for a in plan.actions)
    kinds = [a.ref.kind for a in plan.applies]
    assert kinds == ["Service", "Service", "Deployment", "Deployment"]  # Services before Deployments
    assert plan.writes == 4


def test_nothing_changed_plans_no_writes(two_models):
    flat = [o for objs in two_models.values() for o in objs]
    plan = plan_sync("dev", NS, two_models, owned(flat), live_of(flat))
    assert plan.writes == 0
    assert set(actions(plan).values()) == {Action.unchanged}


def test_one_model_changed_only_its_changed_object_is_configured(two_models):
    flat = [o for objs in two_models.values() for o in objs]
    inv, live = owned(flat), live_of(flat)
    two_models["iris"][1] = obj("Deployment", "iris-cpu", "iris", version=2)
    plan = plan_sync("dev", NS, two_models, inv, live)
    assert [(a.ref.name, a.action, a.reason) for a in plan.applies] == [("iris-cpu", Action.configured, "changed in git")]
    assert plan.writes == 1


def test_deleted_model_is_pruned_in_reverse_kind_order(two_models):
    flat = [o for objs in two_models.values() for o in objs]
    inv, live = owned(flat), live_of(flat)
    del two_models["digits"]
    plan = plan_sync("dev", NS, two_models, inv, live)
    assert [(a.ref.kind, a.ref.name) for a in plan.prunes] == [("Deployment", "digits-cpu"), ("Service", "digits")]
    assert plan.writes == 2


def test_prune_off_keeps_and_reports(two_models):
    flat = [o for objs in two_models.values() for o in objs]
    del two_models["digits"]
    plan = plan_sync("dev", NS, two_models, owned(flat), live_of(flat), SyncOptions(prune=False))
    assert not plan.prunes
    assert actions(plan)["Service/digits"] is Action.skipped


def test_empty_render_never_prunes_everything_unless_allowed(two_models):
    flat = [o for objs in two_models.values() for o in objs]
    plan = plan_sync("dev", NS, {}, owned(flat), live_of(flat))
    assert not plan.prunes
    assert all(a.action is Action.skipped and "--allow-empty-prune" in a.reason for a in plan.actions)
    allowed = plan_sync("dev", NS, {}, owned(flat), live_of(flat), SyncOptions(allow_empty_prune=True))
    assert len(allowed.prunes) == 4


def test_protected_kinds_need_confirmation():
    pvc = obj("PersistentVolumeClaim", "weights", "iris")
    ns = obj("Namespace", "scratch", "iris", namespace=None)
    keep = obj("Service", "iris", "iris")
    inv = owned([pvc, ns, keep])
    plan = plan_sync("dev", NS, {"iris": [keep]}, inv, live_of([pvc, ns, keep]))
    assert not plan.prunes
    assert {a.ref.kind for a in plan.actions if a.action is Action.skipped} == {"PersistentVolumeClaim", "Namespace"}
    confirmed = plan_sync("dev", NS, {"iris": [keep]}, inv, live_of([pvc, ns, keep]),
                          SyncOptions(confirm_prune_kinds=frozenset({"PersistentVolumeClaim"})))
    assert [a.ref.kind for a in confirmed.prunes] == ["PersistentVolumeClaim"]


def test_failed_model_is_skipped_and_its_objects_are_never_pruned(two_models):
    flat = [o for objs in two_models.values() for o in objs]
    inv, live = owned(flat), live_of(flat)
    # digits failed to render: no objects, an error. Its owned objects must stay.
    desired = {"iris": two_models["iris"]}
    plan = plan_sync("dev", NS, desired, inv, live, errors={"digits": "RenderError: bad kustomization"})
    assert not plan.prunes
    assert plan.model_errors == {"digits": ["RenderError: bad kustomization"]}
    assert actions(plan)["Deployment/digits-cpu"] is Action.skipped
    # validation failed: objects present but the model is skipped as a whole
    two_models["digits"][1] = obj("Deployment", "digits-cpu", "digits", version=3)
    plan = plan_sync("dev", NS, two_models, inv, live, errors={"digits": ["spec.x: bad", "spec.y: bad"]})
    assert plan.writes == 0
    assert plan.model_errors["digits"] == ["spec.x: bad", "spec.y: bad"]
    inv2 = next_inventory(plan, inv, applied=[], pruned=[])
    assert inv2.entries == inv.entries


def test_object_deleted_in_cluster_is_recreated_and_annotation_change_is_configured(two_models):
    flat = [o for objs in two_models.values() for o in objs]
    inv, live = owned(flat), live_of(flat)
    del live[ObjectRef.of(two_models["iris"][0])]
    live[ObjectRef.of(two_models["digits"][0])]["metadata"]["annotations"][labels.CONTENT_HASH] = "sha256:other"
    plan = plan_sync("dev", NS, two_models, inv, live)
    acts = {a.ref.name: (a.action, a.reason) for a in plan.applies}
    assert acts["iris"] == (Action.created, "deleted from the cluster, re-creating")
    assert acts["digits"][0] is Action.configured


def test_drift_is_reported_and_healed_only_with_self_heal():
    """The planner decides what to do with drift; what drifted it is told (server_diff.sync_drift, the one
    comparison `diff` and `status` use), with the patch that hands hand-edited fields over before a heal."""
    dep = obj("Deployment", "iris-cpu", "iris", replicas=2, template={"spec": {"containers": [{"name": "bento", "image": "a:1"}]}})
    live = live_of([dep])
    ref = ObjectRef.of(dep)
    found = {ref: [FieldChange("spec.template.spec.containers[bento].image", "a:hacked", "a:1")]}
    takeover = {ref: [{"op": "test", "path": "/metadata/resourceVersion", "value": "7"}]}
    assert [a.action for a in plan_sync("dev", NS, {"iris": [dep]}, owned([dep]), live).actions] == [Action.unchanged]
    plan = plan_sync("dev", NS, {"iris": [dep]}, owned([dep]), live, drifted=found, takeover=takeover)
    (a,) = plan.actions
    assert a.action is Action.unchanged and a.reason == (
        'drifted (not healed, --self-heal is off): spec.template.spec.containers[bento].image: "a:hacked" -> "a:1"')
    healed = plan_sync("dev", NS, {"iris": [dep]}, owned([dep]), live, SyncOptions(self_heal=True), drifted=found,
                       takeover=takeover)
    assert [x.action for x in healed.applies] == [Action.configured]
    assert healed.applies[0].reason.startswith("self-heal") and list(healed.applies[0].prepare) == takeover[ref]


def test_duplicate_object_across_models_is_an_error_of_the_second():
    a = obj("Service", "shared", "alpha")
    b = obj("Service", "shared", "beta")
    plan = plan_sync("dev", NS, {"alpha": [a], "beta": [b]}, Inventory("dev", NS), live={})
    assert [x.model for x in plan.applies] == ["alpha"]
    assert "declared by models 'alpha' and 'beta'" in plan.model_errors["beta"][0]


def test_inventory_after_partial_apply_keeps_unapplied_objects_owned(two_models):
    plan = plan_sync("dev", NS, two_models, Inventory("dev", NS), live={})
    ahead = next_inventory(plan, Inventory("dev", NS))
    assert len(ahead.entries) == 4 and {e.hash for e in ahead.entries.values()} == {PENDING}
    first = plan.applies[0]
    after = next_inventory(plan, ahead, applied=[first.ref])
    assert after.entries[first.ref].hash == first.hash
    assert sum(e.hash == PENDING for e in after.entries.values()) == 3
    # the next plan re-applies the pending ones
    again = plan_sync("dev", NS, two_models, after, live=None)
    assert {a.reason for a in again.applies} == {"last apply did not complete"}
    assert len(again.applies) == 3


def test_inventory_configmap_round_trip_is_deterministic(two_models):
    flat = [o for objs in two_models.values() for o in objs]
    inv = owned(flat)
    cm = inv.to_configmap()
    assert cm["metadata"]["name"] == "reconciler-inventory-dev"
    assert cm["data"]["count"] == "4"
    back = Inventory.from_configmap("dev", NS, {**cm, "metadata": {**cm["metadata"], "resourceVersion": "9"}})
    assert back.entries == inv.entries and back.resource_version == "9"
    reordered = Inventory("dev", NS, dict(reversed(list(inv.entries.items()))))
    assert reordered.to_configmap() == cm


def test_inventory_corrupt_blob_is_a_kube_error():
    from reconciler.errors import KubeError

    with pytest.raises(KubeError, match="corrupt inventory"):
        Inventory.from_configmap("dev", NS, {"binaryData": {"entries.json.gz": "bm90IGd6aXA="}})


def test_drift_lists_and_scalars():
    assert drift({"a": [1, 2]}, {"a": [1, 2], "b": 3}) == []
    assert drift({"a": [1, 2]}, {"a": [1]}) == ["a: 1 items in the cluster, 2 in git"]
    assert drift({"port": 80}, {"port": "80"}) == []
    assert drift({"x": {"y": 1}}, {"x": {}}) == ["x.y: missing in the cluster (git: 1)"]


# -- health ------------------------------------------------------------------------------------

def deployment(replicas=2, generation=2, observed=2, updated=2, total=2, available=2, conditions=()):
    return {"kind": "Deployment", "metadata": {"name": "d", "generation": generation},
            "spec": {"replicas": replicas},
            "status": {"observedGeneration": observed, "updatedReplicas": updated, "replicas": total,
                       "availableReplicas": available, "conditions": list(conditions)}}


@pytest.mark.parametrize("kwargs, status", [
    ({}, HealthStatus.healthy),
    ({"observed": 1}, HealthStatus.progressing),
    ({"updated": 1}, HealthStatus.progressing),
    ({"total": 3}, HealthStatus.progressing),
    ({"available": 1}, HealthStatus.progressing),
    ({"updated": 1, "conditions": [{"type": "Progressing", "status": "False",
                                    "reason": "ProgressDeadlineExceeded"}]}, HealthStatus.degraded),
])
def test_deployment_health(kwargs, status):
    assert health_of(deployment(**kwargs)).status is status


def test_a_deployment_scaled_to_zero_is_healthy_and_says_so():
    """KEDA scales an idle dev model to zero: healthy, as gitops-engine's Deployment health has it (only a
    paused rollout is suspended), with a message saying why no pod runs; on its way down it is progressing."""
    idle = deployment(replicas=0, updated=0, total=0, available=0)
    assert health_of(idle).as_dict() == {"status": "healthy", "message": "scaled to zero"}
    assert health_of(deployment(replicas=0, updated=0, total=2, available=2)).status is HealthStatus.progressing
    paused = deployment(replicas=0, updated=0, total=0, available=0)
    paused["spec"]["paused"] = True
    assert health_of(paused).status is HealthStatus.suspended


def test_other_kinds_health():
    assert health_of(None).status is HealthStatus.missing
    assert health_of({"kind": "Service", "spec": {"type": "LoadBalancer"}, "status": {}}).status is HealthStatus.progressing
    assert health_of({"kind": "Service", "spec": {"type": "ClusterIP"}}).status is HealthStatus.healthy
    hpa = {"kind": "HorizontalPodAutoscaler", "status": {"conditions": [
        {"type": "ScalingActive", "status": "False", "reason": "FailedGetResourceMetric", "message": "no metrics"}]}}
    assert health_of(hpa).status is HealthStatus.degraded
    cr = {"kind": "InferenceService", "metadata": {"generation": 3}, "status": {"observedGeneration": 3, "conditions": [
        {"type": "Ready", "status": "False", "reason": "ModelLoadFailed"}]}}
    assert health_of(cr).status is HealthStatus.degraded
    cr["status"]["conditions"][0]["status"] = "True"
    assert health_of(cr).status is HealthStatus.healthy
    cr["metadata"]["generation"] = 4
    assert health_of(cr).status is HealthStatus.progressing
    assert aggregate([health_of(cr), health_of(None)]) is HealthStatus.missing


def test_wait_for_health_polls_until_settled_then_times_out_reporting_progressing():
    states = iter([deployment(updated=0), deployment(updated=1), deployment()])
    ref = ObjectRef("apps/v1", "Deployment", NS, "d")

    class Kube:
        calls = 0

        def list(self, api_version, kind, namespace):
            Kube.calls += 1
            return [next(states)]

    now = [0.0]
    out = wait_for_health(Kube(), [ref], timeout=100, interval=1, clock=lambda: now[0],
                          sleep=lambda s: now.__setitem__(0, now[0] + s))
    assert out[ref].status is HealthStatus.healthy and Kube.calls == 3

    class Stuck:
        def list(self, api_version, kind, namespace):
            return [deployment(updated=0)]

    now = [0.0]
    out = wait_for_health(Stuck(), [ref], timeout=5, interval=1, clock=lambda: now[0],
                          sleep=lambda s: now.__setitem__(0, now[0] + s))
    assert out[ref].status is HealthStatus.progressing and now[0] >= 5
