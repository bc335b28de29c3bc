"""Events of one environment (`reconciler events ENV`), as `flux events` / `kubectl events` show them.

Two sources, merged newest first:

* what the reconciler did: core/v1 Events it records itself (`record_event`) about the environment's state
  ConfigMap in the state namespace, as kustomize-controller records events about a Kustomization: a sync
  (by `run`, `sync` or `rollback`), a failed pass, a suspend, a resume;
* what the cluster did with the reconciler's objects: core/v1 Events in the environment's namespace whose
  involved object the reconciler owns (its inventory), or one those own by name (a Deployment's
  ReplicaSets `<name>-<hash>` and their Pods `<name>-<hash>-<id>`): the Deployment controller's
  ScalingReplicaSet, the scheduler's FailedScheduling, the kubelet's BackOff.

Recording is best effort (an Event is a report: a refused write is logged, never fails a pass). The API
server keeps Events for an hour by default (--event-ttl).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

from reconciler.cluster.protocol import Cluster
from reconciler.errors import KubeError
from reconciler.run.record import STATE_PREFIX
from reconciler.sync.inventory import load_inventory

log = logging.getLogger("reconciler.run.events")

COMPONENT = "model-gitops-reconciler"  # Event.source.component / reportingComponent of the reconciler's own events


@dataclass(frozen=True)
class Event:
    time: str
    type: str  # Normal | Warning
    reason: str
    object: str  # Kind/name
    message: str
    source: str  # the reconciler, or the cluster component that reported it
    count: int = 1

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def record_event(kube: Cluster, environment: str, state_namespace: str, reason: str, message: str, *,
                 warning: bool = False, now: datetime | None = None) -> None:
    """Record what the reconciler did to `environment` as a core/v1 Event about its state ConfigMap."""
    when = (now or datetime.now(timezone.utc)).strftime("%Y-%m-%dT%H:%M:%SZ")
    name = f"{STATE_PREFIX}{environment}"
    event = {"apiVersion": "v1", "kind": "Event",
             "metadata": {"name": f"{name}.{uuid.uuid4().hex[:16]}", "namespace": state_namespace},
             "involvedObject": {"apiVersion": "v1", "kind": "ConfigMap", "name": name, "namespace": state_namespace},
             "reason": reason, "message": message[:1000], "type": "Warning" if warning else "Normal",
             "source": {"component": COMPONENT}, "reportingComponent": COMPONENT,
             "firstTimestamp": when, "lastTimestamp": when, "count": 1}
    try:
        kube.create(event)
    except KubeError as exc:
        log.warning("%s: could not record the event %s: %s", environment, reason, exc)


def _owned(kind: str, name: str, owned: dict[str, set[str]]) -> bool:
    if name in owned.get(kind, set()):
        return True
    return kind in ("ReplicaSet", "Pod") and any(name.startswith(d + "-") for d in owned.get("Deployment", set()))


def _event(item: dict, source: str | None = None) -> Event:
    involved = item.get("involvedObject") or {}
    meta = item.get("metadata") or {}
    when = item.get("lastTimestamp") or item.get("eventTime") or meta.get("creationTimestamp") or ""
    reporter = (item.get("source") or {}).get("component") or item.get("reportingComponent") or ""
    return Event(str(when), str(item.get("type", "")), str(item.get("reason", "")),
                 f"{involved.get('kind', '')}/{involved.get('name', '')}", str(item.get("message", "")).strip(),
                 source or str(reporter), int(item.get("count") or 1))


def environment_events(kube: Cluster, environment: str, namespace: str, state_namespace: str) -> list[Event]:
    """The reconciler's own events about `environment` and the cluster's about its objects, newest first."""
    own = [_event(i, "reconciler") for i in _list(kube, state_namespace)
           if (i.get("involvedObject") or {}).get("name") == f"{STATE_PREFIX}{environment}"
           and (i.get("involvedObject") or {}).get("kind") == "ConfigMap"]
    owned: dict[str, set[str]] = {}
    for ref in load_inventory(kube, environment, namespace).entries:
        owned.setdefault(ref.kind, set()).add(ref.name)
    cluster = [_event(i) for i in _list(kube, namespace)
               if _owned(str((i.get("involvedObject") or {}).get("kind", "")),
                         str((i.get("involvedObject") or {}).get("name", "")), owned)]
    return sorted(own + cluster, key=lambda e: (e.time, e.object, e.reason), reverse=True)


def _list(kube: Cluster, namespace: str) -> list[dict]:
    try:
        return kube.list("v1", "Event", namespace)
    except KubeError as exc:
        if exc.status == 404:  # no such namespace (yet): no events
            return []
        raise
