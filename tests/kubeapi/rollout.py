"""Deployment status simulation: what the deployment controller would eventually write.

Simplified: there are no ReplicaSets or Pods; after each write that changes a Deployment's
generation the status is computed at once (in the same resourceVersion, attributed to
manager ``kube-controller-manager`` on the ``status`` subresource) according to a mode:

* ``complete``: every replica updated, ready and available; Available=True
  (MinimumReplicasAvailable), Progressing=True (NewReplicaSetAvailable).
* ``stuck``: replicas updated but none ready; Available=False (MinimumReplicasUnavailable),
  Progressing=True (ReplicaSetUpdated) — a rollout still in progress.
* ``failed``: as stuck, but Progressing=False (ProgressDeadlineExceeded).
"""

from __future__ import annotations

import threading
from typing import Literal

RolloutMode = Literal["complete", "stuck", "failed"]
MODES: tuple[str, ...] = ("complete", "stuck", "failed")


def _condition(ctype: str, status: str, reason: str, message: str, now: str) -> dict:
    return {"type": ctype, "status": status, "reason": reason, "message": message,
            "lastUpdateTime": now, "lastTransitionTime": now}


def without_times(status: dict | None) -> dict | None:
    """``status`` minus condition timestamps: what tells whether a re-simulation changed it."""
    if not status:
        return status
    conditions = [{k: v for k, v in c.items() if not k.startswith("last")}
                  for c in status.get("conditions") or []]
    return {**status, "conditions": conditions}


def simulated_status(deployment: dict, mode: RolloutMode, now: str) -> dict:
    """The status the controller would report for ``deployment`` once it settles in ``mode``.

    A condition whose status did not flip keeps its ``lastTransitionTime``, as upstream.
    """
    status = _settled_status(deployment, mode, now)
    previous = {c["type"]: c for c in (deployment.get("status") or {}).get("conditions") or []}
    for condition in status["conditions"]:
        before = previous.get(condition["type"])
        if before and before.get("status") == condition["status"]:
            condition["lastTransitionTime"] = before.get("lastTransitionTime", now)
    return status


def _settled_status(deployment: dict, mode: RolloutMode, now: str) -> dict:
    meta, spec = deployment["metadata"], deployment.get("spec") or {}
    replicas = int(spec.get("replicas", 1))
    name = meta["name"]
    status: dict = {"observedGeneration": meta.get("generation", 1), "replicas": replicas,
                    "updatedReplicas": replicas}
    if mode == "complete":
        status.update(readyReplicas=replicas, availableReplicas=replicas)
        if replicas == 0:
            for key in ("replicas", "updatedReplicas", "readyReplicas", "availableReplicas"):
                status.pop(key)
        status["conditions"] = [
            _condition("Available", "True", "MinimumReplicasAvailable",
                       "Deployment has minimum availability.", now),
            _condition("Progressing", "True", "NewReplicaSetAvailable",
                       f'ReplicaSet "{name}" has successfully progressed.', now)]
        return status
    status["unavailableReplicas"] = replicas
    progressing = (
        _condition("Progressing", "True", "ReplicaSetUpdated",
                   f'ReplicaSet "{name}" is progressing.', now) if mode == "stuck" else
        _condition("Progressing", "False", "ProgressDeadlineExceeded",
                   f'ReplicaSet "{name}" has timed out progressing.', now))
    status["conditions"] = [
        _condition("Available", "False", "MinimumReplicasUnavailable",
                   "Deployment does not have minimum availability.", now), progressing]
    return status


class RolloutPolicy:
    """Which mode applies to which Deployment: per (namespace, name), else the global default."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.enabled = True
        self.default: RolloutMode = "complete"
        self._per_object: dict[tuple[str | None, str], RolloutMode] = {}

    def set(self, mode: RolloutMode, name: str | None = None,
            namespace: str | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        with self._lock:
            if name is None:
                self.default = mode
            else:
                self._per_object[(namespace, name)] = mode

    def mode_for(self, namespace: str, name: str) -> RolloutMode:
        with self._lock:
            return (self._per_object.get((namespace, name))
                    or self._per_object.get((None, name)) or self.default)

    def reset(self) -> None:
        with self._lock:
            self.enabled, self.default = True, "complete"
            self._per_object.clear()
