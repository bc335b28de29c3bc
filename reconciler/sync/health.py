"""Health of live objects, per kind: pure functions over the JSON the API server returns.

Modelled on argoproj/gitops-engine ``pkg/health``: every object is healthy, progressing, degraded,
suspended or missing, with a message saying why. ``wait_for_health`` polls until every object is
settled (healthy, degraded or suspended) or a timeout passes; an object still progressing then is
reported as such, never hidden.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum

from reconciler.cluster.protocol import Cluster
from reconciler.results import ObjectRef
from reconciler.errors import KubeError


class HealthStatus(str, Enum):
    healthy = "healthy"
    progressing = "progressing"
    degraded = "degraded"
    suspended = "suspended"
    missing = "missing"

    @property
    def settled(self) -> bool:
        """No point waiting longer: the object reached a state only a change can move it from."""
        return self in (HealthStatus.healthy, HealthStatus.degraded, HealthStatus.suspended)


@dataclass(frozen=True)
class Health:
    status: HealthStatus
    message: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"status": self.status.value, "message": self.message}


HEALTHY = Health(HealthStatus.healthy)


def _conditions(obj: dict) -> dict[str, dict]:
    return {c.get("type", ""): c for c in (obj.get("status") or {}).get("conditions") or [] if isinstance(c, dict)}


def _generation_observed(obj: dict) -> bool:
    generation = (obj.get("metadata") or {}).get("generation")
    observed = (obj.get("status") or {}).get("observedGeneration")
    return generation is None or (observed is not None and observed >= generation)


def deployment_health(obj: dict) -> Health:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    if spec.get("paused"):
        return Health(HealthStatus.suspended, "rollout is paused")
    if not _generation_observed(obj):
        return Health(HealthStatus.progressing, "waiting for the rollout to be observed by the controller")
    failure = _conditions(obj).get("ReplicaFailure")
    if failure and failure.get("status") == "True":
        # the ReplicaSet could not create Pods (admission refused them: a missing PriorityClass, a quota,
        # a ServiceAccount): waiting will not help until something changes
        return Health(HealthStatus.degraded, f"pods cannot be created: {failure.get('reason', '')}: "
                                             f"{failure.get('message', '')}".rstrip(": "))
    progressing = _conditions(obj).get("Progressing")
    if progressing and progressing.get("reason") == "ProgressDeadlineExceeded":
        return Health(HealthStatus.degraded, f"rollout exceeded its progress deadline: {progressing.get('message', '')}".rstrip(": "))
    replicas = spec.get("replicas", 1)
    updated = status.get("updatedReplicas", 0) or 0
    total = status.get("replicas", 0) or 0
    available = status.get("availableReplicas", 0) or 0
    if updated < replicas:
        return Health(HealthStatus.progressing, f"{updated} of {replicas} replicas updated")
    if total > updated:
        return Health(HealthStatus.progressing, f"{total - updated} old replicas pending termination")
    if available < updated:
        return Health(HealthStatus.progressing, f"{available} of {updated} updated replicas available")
    available_cond = _conditions(obj).get("Available")
    if available_cond and available_cond.get("status") == "False":
        return Health(HealthStatus.degraded, f"not available: {available_cond.get('message', '')}".rstrip(": "))
    if replicas == 0 and total == 0:
        # scaled to zero (KEDA while idle, or by hand): healthy, as gitops-engine's Deployment health has it
        # (only spec.paused is Suspended there); the message says why no pod runs
        return Health(HealthStatus.healthy, "scaled to zero")
    return HEALTHY


def service_health(obj: dict) -> Health:
    if (obj.get("spec") or {}).get("type") == "LoadBalancer":
        ingress = ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress")
        if not ingress:
            return Health(HealthStatus.progressing, "waiting for a load balancer address")
    return HEALTHY


_HPA_FAILED_REASONS = ("FailedGetResourceMetric", "FailedGetPodsMetric", "FailedGetObjectMetric",
                       "FailedGetExternalMetric", "FailedGetScale", "FailedComputeMetricsReplicas",
                       "InvalidSelector", "FailedUpdateScale")


def hpa_health(obj: dict) -> Health:
    for ctype, cond in _conditions(obj).items():
        reason = cond.get("reason", "")
        if cond.get("status") == "False" and (reason.startswith("Failed") or reason in _HPA_FAILED_REASONS):
            return Health(HealthStatus.degraded, f"{ctype}: {reason}: {cond.get('message', '')}".rstrip(": "))
    return HEALTHY


def pvc_health(obj: dict) -> Health:
    phase = (obj.get("status") or {}).get("phase")
    if phase == "Lost":
        return Health(HealthStatus.degraded, "volume lost")
    if phase == "Pending":
        return Health(HealthStatus.progressing, "waiting for the volume to be bound")
    return HEALTHY


def job_health(obj: dict) -> Health:
    conds = _conditions(obj)
    if (conds.get("Failed") or {}).get("status") == "True":
        return Health(HealthStatus.degraded, conds["Failed"].get("message", "job failed"))
    if (conds.get("Complete") or {}).get("status") == "True":
        return HEALTHY
    if (obj.get("spec") or {}).get("suspend"):
        return Health(HealthStatus.suspended, "job is suspended")
    return Health(HealthStatus.progressing, "job is running")


def route_health(obj: dict) -> Health:
    """A Gateway API route: its status is per parent (Gateway). A parent that did not accept the route, or
    could not resolve its backends, is degraded; one that has not seen the latest generation is
    progressing. No parent status: no Gateway controller has reported (yet), healthy once it exists."""
    generation = (obj.get("metadata") or {}).get("generation")
    for parent in (obj.get("status") or {}).get("parents") or []:
        gateway = (parent.get("parentRef") or {}).get("name", "?")
        for cond in parent.get("conditions") or []:
            if cond.get("type") in ("Accepted", "ResolvedRefs") and cond.get("status") == "False":
                return Health(HealthStatus.degraded, f"Gateway {gateway}: {cond['type']}=False "
                                                     f"({cond.get('reason', '')}): {cond.get('message', '')}".rstrip(": "))
            observed = cond.get("observedGeneration")
            if generation is not None and observed is not None and observed < generation:
                return Health(HealthStatus.progressing, f"Gateway {gateway} has not observed the latest generation")
    return HEALTHY


def conditions_health(obj: dict) -> Health:
    """Custom resources (and anything else with status.conditions): Ready, else Available, decides.

    A resource whose controller reports no status at all (no observedGeneration, no conditions: a
    prometheus-operator PodMonitor) is healthy once it exists, as kstatus and Argo CD treat it; waiting
    for a status nobody writes would hold `sync --wait` until its timeout."""
    status = obj.get("status") or {}
    if "observedGeneration" not in status and not status.get("conditions"):
        return HEALTHY
    if not _generation_observed(obj):
        return Health(HealthStatus.progressing, "waiting for the controller to observe the latest generation")
    conds = _conditions(obj)
    for ctype in ("Ready", "Available"):
        cond = conds.get(ctype)
        if cond is None:
            continue
        text = f"{ctype}={cond.get('status')}" + (f" ({cond.get('reason')})" if cond.get("reason") else "")
        if cond.get("message"):
            text += f": {cond['message']}"
        if cond.get("status") == "True":
            return Health(HealthStatus.healthy, text)
        if cond.get("status") == "False":
            stalled = (conds.get("Stalled") or {}).get("status") == "True"
            reconciling = (conds.get("Reconciling") or {}).get("status") == "True"
            if reconciling and not stalled:
                return Health(HealthStatus.progressing, text)
            return Health(HealthStatus.degraded, text)
        return Health(HealthStatus.progressing, text)
    return HEALTHY


def scaled_object_health(obj: dict) -> Health:
    """A KEDA ScaledObject (as Argo CD's keda.sh health check reads it): Ready=False or Fallback=True (its
    trigger's source fails, KEDA holds the fallback replica count) is degraded; Ready=True is healthy, or
    suspended while Paused=True. No condition at all: healthy, as kstatus (Flux) and this module treat any
    resource nobody reports on, with a message saying that nothing scales it (a cluster without KEDA:
    the Deployment keeps the replicas it has, Kubernetes' default 1), so `sync --wait` does not hang."""
    conds = _conditions(obj)

    def text(cond: dict) -> str:
        out = f"{cond.get('type')}={cond.get('status')}" + (f" ({cond.get('reason')})" if cond.get("reason") else "")
        return out + (f": {cond['message']}" if cond.get("message") else "")

    ready, fallback, paused = conds.get("Ready"), conds.get("Fallback"), conds.get("Paused")
    if ready is not None and ready.get("status") == "False":
        return Health(HealthStatus.degraded, text(ready))
    if fallback is not None and fallback.get("status") == "True":
        return Health(HealthStatus.degraded, text(fallback))
    if ready is not None and ready.get("status") == "True":
        if paused is not None and paused.get("status") == "True":
            return Health(HealthStatus.suspended, text(paused))
        return Health(HealthStatus.healthy, text(ready))
    if not conds:
        return Health(HealthStatus.healthy, "no status from KEDA: nothing scales the Deployment (is the KEDA "
                                            "operator installed?)")
    return Health(HealthStatus.progressing, "waiting for KEDA's Ready condition")


_BY_KIND: dict[str, Callable[[dict], Health]] = {
    "Deployment": deployment_health,
    "StatefulSet": deployment_health,
    "Service": service_health,
    "HorizontalPodAutoscaler": hpa_health,
    "PersistentVolumeClaim": pvc_health,
    "Job": job_health,
    "HTTPRoute": route_health,
    "ScaledObject": scaled_object_health,
}


# Built-in kinds with no status at all (no controller reports on them): healthy once they exist.
_NO_STATUS = frozenset({"ConfigMap", "Secret", "ServiceAccount", "Role", "RoleBinding", "ClusterRole",
                        "ClusterRoleBinding", "PriorityClass", "NetworkPolicy", "LimitRange", "StorageClass"})


def health_of(obj: dict | None) -> Health:
    """The health of one live object (None: it does not exist)."""
    if obj is None:
        return Health(HealthStatus.missing, "object not found")
    if (obj.get("metadata") or {}).get("deletionTimestamp"):
        return Health(HealthStatus.progressing, "being deleted")
    if obj.get("kind") in _NO_STATUS:
        return HEALTHY
    check = _BY_KIND.get(obj.get("kind", ""))
    if check is not None:
        return check(obj)
    return conditions_health(obj)


# A container waiting for one of these does not start without a change (a new image, a fixed config or
# command): the kubelet's image-pull and container-start failures, as Argo CD's pod health reads them. A
# Deployment whose pods wait so stays "progressing" until its progress deadline (10 min by default); its
# pods say at once why.
STUCK_REASONS = frozenset({"CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "ErrImageNeverPull",
                           "InvalidImageName", "CreateContainerConfigError", "CreateContainerError",
                           "RunContainerError"})


def pods_health(pods: Iterable[dict]) -> Health | None:
    """Degraded when a Pod's container waits for a reason in STUCK_REASONS: the pod, the container, the
    reason, for a crash loop the last exit, and the kubelet's message; None when no pod is stuck."""
    for pod in sorted(pods, key=lambda p: (p.get("metadata") or {}).get("name", "")):
        meta, status = pod.get("metadata") or {}, pod.get("status") or {}
        if meta.get("deletionTimestamp"):
            continue
        for container in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
            waiting = (container.get("state") or {}).get("waiting") or {}
            reason = waiting.get("reason", "")
            if reason not in STUCK_REASONS:
                continue
            text = f"pod {meta.get('name', '?')}: container {container.get('name', '?')}: {reason}"
            last = (container.get("lastState") or {}).get("terminated") or {}
            if last:
                text += f" (last exit {last.get('exitCode', '?')}" + (f", {last['reason']}" if last.get("reason") else "") + ")"
            if waiting.get("message"):
                text += f": {waiting['message']}"
            return Health(HealthStatus.degraded, text[:600])
    return None


def selects(selector: dict, labels: dict) -> bool:
    """Whether a Deployment's ``spec.selector`` (matchLabels and matchExpressions) selects these labels."""
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if (op == "In" and labels.get(key) not in values) or (op == "NotIn" and labels.get(key) in values) \
                or (op == "Exists" and key not in labels) or (op == "DoesNotExist" and key in labels):
            return False
    return True


def with_pods(kube: Cluster, healths: dict[ObjectRef, Health], live: dict[ObjectRef, dict]) -> dict[ObjectRef, Health]:
    """``healths`` with every progressing Deployment looked at through its Pods (pods_health): one list of
    Pods per namespace, only when a Deployment is progressing. A client that may not list Pods keeps the
    Deployment's own health."""

    waiting = [ref for ref, h in healths.items() if ref.kind == "Deployment" and h.status is HealthStatus.progressing
               and live.get(ref) is not None]
    pods_by_ns: dict[str | None, list[dict]] = {}
    result = dict(healths)
    for ref in waiting:
        if ref.namespace not in pods_by_ns:
            try:
                pods_by_ns[ref.namespace] = kube.list("v1", "Pod", ref.namespace)
            except KubeError:
                pods_by_ns[ref.namespace] = []
        selector = (live[ref].get("spec") or {}).get("selector") or {}
        if not selector:
            continue
        mine = [p for p in pods_by_ns[ref.namespace] if selects(selector, (p.get("metadata") or {}).get("labels") or {})]
        result[ref] = pods_health(mine) or healths[ref]
    return result


def aggregate(healths: Iterable[Health]) -> HealthStatus:
    """The worst of several: degraded > missing > progressing > suspended > healthy."""
    order = [HealthStatus.degraded, HealthStatus.missing, HealthStatus.progressing, HealthStatus.suspended]
    seen = {h.status for h in healths}
    for status in order:
        if status in seen:
            return status
    return HealthStatus.healthy


def wait_for_health(kube: Cluster, refs: Iterable[ObjectRef], *, timeout: float = 300.0, interval: float = 2.0,
                    clock: Callable[[], float] = time.monotonic,
                    sleep: Callable[[float], None] = time.sleep) -> dict[ObjectRef, Health]:
    """Poll until every object is settled or ``timeout`` passes; returns the last health seen of each.

    One list per (apiVersion, kind, namespace) per poll, not one get per object.
    """
    pending = list(dict.fromkeys(refs))
    result: dict[ObjectRef, Health] = {}
    deadline = clock() + timeout
    while True:
        groups: dict[tuple[str, str, str | None], list[ObjectRef]] = defaultdict(list)
        for ref in pending:
            groups[(ref.api_version, ref.kind, ref.namespace)].append(ref)
        seen: dict[ObjectRef, dict] = {}
        for (api_version, kind, namespace), group in groups.items():
            live = {(o.get("metadata") or {}).get("name"): o for o in kube.list(api_version, kind, namespace)}
            for ref in group:
                result[ref] = health_of(live.get(ref.name))
                if live.get(ref.name) is not None:
                    seen[ref] = live[ref.name]
        result.update(with_pods(kube, {r: result[r] for r in pending}, seen))
        pending = [r for r in pending if not result[r].status.settled]
        if not pending or clock() >= deadline:
            return result
        sleep(min(interval, max(0.0, deadline - clock())))
