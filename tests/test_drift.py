"""The one drift comparison (reconciler.sync.server_diff), its pure parts: no server.

tests/test_drift_cluster.py runs it on a real API server through `diff`, `status` and `sync`; here each
piece is pinned on objects shaped as the API server returns them (managedFields in FieldsV1).
"""

from __future__ import annotations

import copy

from reconciler import labels
from reconciler.results import ObjectRef
from reconciler.sync.server_diff import (drift, hand_edits, ignored_fields, may_have_drifted, take_over_hand_edits)

NS = "models-dev"
MANAGER = labels.MANAGER


def deployment(**spec_extra) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "iris-cpu", "namespace": NS, "labels": {"app": "iris"},
                         "annotations": {labels.CONTENT_HASH: "sha256:abc"}},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [
                {"name": "bento", "image": "r/iris:1", "env": [{"name": "A", "value": "1"}],
                 "ports": [{"name": "http", "containerPort": 3000}]}]}}, **spec_extra}}


def managed(manager: str, fields: dict, operation: str = "Update", **extra) -> dict:
    return {"manager": manager, "operation": operation, "apiVersion": "apps/v1", "fieldsType": "FieldsV1",
            "fieldsV1": fields, **extra}


OURS = managed(MANAGER, {"f:spec": {"f:replicas": {}}}, "Apply")


def live_with_hand_edits() -> dict:
    """git's Deployment after `kubectl set env DEBUG=1`, `kubectl label hand=edited`, `kubectl rollout restart`
    and a controller's own field: as the server stores it."""
    live = copy.deepcopy(deployment())
    live["metadata"].update(resourceVersion="41", uid="u1")
    live["metadata"]["labels"]["hand"] = "edited"
    container = live["spec"]["template"]["spec"]["containers"][0]
    container["env"].append({"name": "DEBUG", "value": "1"})
    container["ports"][0]["protocol"] = "TCP"  # defaulted
    live["spec"]["template"]["metadata"] = {"annotations": {"kubectl.kubernetes.io/restartedAt": "2026-12-07"}}
    live["spec"]["progressDeadlineSeconds"] = 600
    live["metadata"]["managedFields"] = [
        OURS,
        managed("kubectl-set", {"f:spec": {"f:template": {"f:spec": {"f:containers": {'k:{"name":"bento"}': {
            "f:env": {'k:{"name":"DEBUG"}': {".": {}, "f:name": {}, "f:value": {}}}}}}}}}),
        managed("kubectl-label", {"f:metadata": {"f:labels": {"f:hand": {}}}}),
        managed("kubectl-rollout", {"f:spec": {"f:template": {"f:metadata": {"f:annotations": {
            "f:kubectl.kubernetes.io/restartedAt": {}}}}}}),
        managed("kube-controller-manager", {"f:spec": {"f:progressDeadlineSeconds": {}}}),
        # a kubectl edit of a field git declares (its value is the dry run's to compare, not a hand addition),
        # in a port item keyed with the protocol git leaves to the server's default
        managed("kubectl-edit", {"f:spec": {"f:template": {"f:spec": {"f:containers": {'k:{"name":"bento"}': {
            "f:image": {}, "f:ports": {'k:{"containerPort":3000,"protocol":"TCP"}': {"f:name": {}}}}}}}}}),
    ]
    return live


def test_hand_edits_are_what_kubectl_added_that_git_does_not_declare():
    changes = hand_edits(live_with_hand_edits(), deployment())
    assert [(c.path, c.live, c.desired) for c in changes] == [
        ("metadata.labels.hand", "edited", None),
        ("spec.template.spec.containers[bento].env[DEBUG]", {"name": "DEBUG", "value": "1"}, None)]


def test_without_hand_edits_there_is_nothing_to_take_over():
    live = live_with_hand_edits()
    live["metadata"]["managedFields"] = [e for e in live["metadata"]["managedFields"]
                                         if not e["manager"].startswith("kubectl")]
    assert hand_edits(live, deployment()) == []
    assert take_over_hand_edits(live, MANAGER) == []


def test_drift_is_the_dry_run_difference_and_the_hand_additions_each_path_once():
    live = live_with_hand_edits()
    live["spec"]["replicas"] = 5  # `kubectl scale`: the dry run of git's object takes it back to 2
    predicted = copy.deepcopy(live)
    predicted["spec"]["replicas"] = 2
    predicted["metadata"]["resourceVersion"] = "42"  # bookkeeping: never drift
    assert [str(c) for c in drift(live, predicted, deployment())] == [
        "spec.replicas: 5 -> 2", 'metadata.labels.hand: "edited" -> (none)',
        'spec.template.spec.containers[bento].env[DEBUG]: {"name": "DEBUG", "value": "1"} -> (none)']
    assert drift(live, live, live) == []


def test_an_autoscalers_replicas_are_drift_for_nobody():
    dep = deployment()
    del dep["spec"]["replicas"]
    hpa = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "x", "namespace": NS},
           "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "iris-cpu"}}}
    scaled = {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "y", "namespace": NS},
              "spec": {"scaleTargetRef": {"name": "other"}}}  # KEDA's kind defaults to Deployment: not named here
    ignore = ignored_fields([dep, hpa, scaled])
    assert ignore == {ObjectRef("apps/v1", "Deployment", NS, "iris-cpu"): frozenset({"spec.replicas"})}
    live = copy.deepcopy(dep)
    live["spec"]["replicas"] = 7
    live["metadata"]["managedFields"] = [managed("kubectl", {"f:spec": {"f:replicas": {}}}, subresource="scale")]
    predicted = copy.deepcopy(live)
    assert [c.path for c in drift(live, predicted, dep)] == ["spec.replicas"]
    assert drift(live, predicted, dep, ignore[ObjectRef.of(dep)]) == []
    assert not may_have_drifted(dep, live, ignore[ObjectRef.of(dep)])


def test_a_dry_run_is_only_needed_where_something_can_have_drifted():
    dep = deployment()
    live = copy.deepcopy(dep)
    live["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = "IfNotPresent"  # a default
    live["metadata"]["managedFields"] = [OURS]
    assert not may_have_drifted(dep, live)
    other_hash = copy.deepcopy(live)
    other_hash["metadata"]["annotations"][labels.CONTENT_HASH] = "sha256:other"
    changed = copy.deepcopy(live)
    changed["spec"]["template"]["spec"]["containers"][0]["image"] = "evil:1"
    assert may_have_drifted(dep, other_hash) and may_have_drifted(dep, changed)
    assert may_have_drifted(dep, live_with_hand_edits())


def test_taking_over_hand_edits_gives_their_fields_to_our_apply_entry_guarded_by_the_resource_version():
    live = live_with_hand_edits()
    test, replace = take_over_hand_edits(live, MANAGER)
    assert test == {"op": "test", "path": "/metadata/resourceVersion", "value": "41"}
    entries = replace["value"]
    assert replace["op"] == "replace" and replace["path"] == "/metadata/managedFields"
    assert [e["manager"] for e in entries] == [MANAGER, "kube-controller-manager"]
    ours = entries[0]["fieldsV1"]
    assert ours["f:spec"]["f:replicas"] == {}  # what we owned stays ours
    assert ours["f:metadata"]["f:labels"] == {"f:hand": {}}
    container = ours["f:spec"]["f:template"]["f:spec"]["f:containers"]['k:{"name":"bento"}']
    assert 'k:{"name":"DEBUG"}' in container["f:env"] and "f:image" in container
    # no apply entry of ours yet (an object adopted from kubectl): one is made
    live["metadata"]["managedFields"] = live["metadata"]["managedFields"][1:]
    entries = take_over_hand_edits(live, MANAGER)[1]["value"]
    assert [(e["manager"], e["operation"]) for e in entries] == [("kube-controller-manager", "Update"),
                                                                (MANAGER, "Apply")]
