"""A Deployment whose pods cannot start is degraded at once, with the container's reason (reconciler.sync.health:
pods_health, with_pods). The real thing, a crash-looping image and an unpullable one on a real node, is in
tests/test_e2e_node_ops.py; these are the decisions on the Pod JSON the kubelet reports."""

from __future__ import annotations

from reconciler.results import ObjectRef
from reconciler.sync.health import Health, HealthStatus, pods_health, selects, with_pods


def pod(name: str, waiting: str | None = None, message: str = "", last: dict | None = None, labels=None,
        deleting: bool = False) -> dict:
    status: dict = {"name": "bento", "state": {"waiting": {"reason": waiting, "message": message}} if waiting
                    else {"running": {}}}
    if last:
        status["lastState"] = {"terminated": last}
    meta = {"name": name, "labels": labels or {"app": "m"}}
    if deleting:
        meta["deletionTimestamp"] = "2026-12-07T00:00:00Z"
    return {"metadata": meta, "status": {"containerStatuses": [status]}}


def test_a_crash_loop_is_degraded_with_the_last_exit():
    health = pods_health([pod("ok-1"), pod("m-2", "CrashLoopBackOff", "back-off 10s restarting failed container",
                                             {"exitCode": 3, "reason": "Error"})])
    assert health == Health(HealthStatus.degraded, "pod m-2: container bento: CrashLoopBackOff (last exit 3, Error): "
                                                   "back-off 10s restarting failed container")


def test_an_image_that_cannot_be_pulled_is_degraded_and_a_starting_pod_is_not():
    assert pods_health([pod("m-1", "ImagePullBackOff", 'Back-off pulling image "r/m@sha256:00"')]).status \
        is HealthStatus.degraded
    assert pods_health([pod("m-1", "ContainerCreating"), pod("m-2")]) is None
    assert pods_health([pod("m-1", "CrashLoopBackOff", deleting=True)]) is None  # an old pod on its way out


def test_selectors_match_labels_and_expressions():
    sel = {"matchLabels": {"app": "m"}, "matchExpressions": [{"key": "track", "operator": "In", "values": ["stable"]}]}
    assert selects(sel, {"app": "m", "track": "stable"})
    assert not selects(sel, {"app": "m", "track": "canary"})
    assert not selects(sel, {"app": "other", "track": "stable"})


class Pods:
    def __init__(self, pods):
        self.pods, self.calls = pods, 0

    def list(self, api_version, kind, namespace=None, label_selector=None):
        assert (api_version, kind) == ("v1", "Pod")
        self.calls += 1
        return self.pods


def test_only_progressing_deployments_are_looked_at_through_their_own_pods():
    mine, theirs = ObjectRef("apps/v1", "Deployment", "ns", "m"), ObjectRef("apps/v1", "Deployment", "ns", "other")
    live = {mine: {"spec": {"selector": {"matchLabels": {"app": "m"}}}},
            theirs: {"spec": {"selector": {"matchLabels": {"app": "other"}}}}}
    kube = Pods([pod("m-1", "ErrImagePull", "not found", labels={"app": "m"})])
    progressing = Health(HealthStatus.progressing, "0 of 1 updated replicas available")
    result = with_pods(kube, {mine: progressing, theirs: progressing}, live)
    assert result[mine].status is HealthStatus.degraded and "ErrImagePull" in result[mine].message
    assert result[theirs] == progressing  # the stuck pod is not its pod
    assert kube.calls == 1  # one list per namespace
    healthy = Pods([])
    assert with_pods(healthy, {mine: Health(HealthStatus.healthy)}, live)[mine].status is HealthStatus.healthy
    assert healthy.calls == 0  # a healthy Deployment costs no request
