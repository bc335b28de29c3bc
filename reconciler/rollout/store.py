"""Rollout state persisted in the cluster: one ConfigMap ``rollout-<model>`` per model in the
environment's namespace, labelled with the reconciler's labels.

Writes are optimistic: the ConfigMap's resourceVersion read with the state goes back with the
write (the sync's server-side apply, or ``save`` for the rollout commands), so two reconcilers (or
a reconciler and ``reconciler rollout promote``) cannot both act on the same state: the second
write fails with 409 Conflict, and the sync applies nothing else of that model in that pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from reconciler.cluster.protocol import Cluster
from reconciler import labels as L
from reconciler.errors import KubeError
from reconciler.results import ObjectRef
from reconciler.rollout.state import RolloutState
from reconciler.render.content_hash import content_hash

STATE_KEY = "state.json"
ROLLOUT_LABEL = f"{L.DOMAIN}/rollout"


def configmap_name(model: str) -> str:
    return f"rollout-{model}"


def configmap_ref(model: str, namespace: str) -> ObjectRef:
    return ObjectRef("v1", "ConfigMap", namespace, configmap_name(model))


@dataclass(frozen=True)
class Stored:
    state: RolloutState
    resource_version: str | None  # None: not in the cluster yet


def to_configmap(state: RolloutState, namespace: str, resource_version: str | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "name": configmap_name(state.model), "namespace": namespace,
        "labels": {L.MANAGED_BY: L.MANAGER, L.MODEL: state.model, L.ENVIRONMENT: state.environment,
                   ROLLOUT_LABEL: "true"},
        "annotations": {f"{L.DOMAIN}/rollout-phase": state.phase.value,
                        f"{L.DOMAIN}/rollout-weight": str(state.canary_weight)},
    }
    if resource_version:
        metadata["resourceVersion"] = resource_version
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": {STATE_KEY: state.to_json()}}


def with_state_hash(cm: dict[str, Any]) -> dict[str, Any]:
    """The content-hash annotation of the state ConfigMap, leaving out its resourceVersion (which
    changes on every write): an unchanged state then plans as unchanged and costs no write."""

    bare = {**cm, "metadata": {k: v for k, v in cm["metadata"].items() if k != "resourceVersion"}}
    cm["metadata"].setdefault("annotations", {})[L.CONTENT_HASH] = content_hash(bare)
    return cm


def load(client: Cluster, model: str, namespace: str) -> Stored | None:
    cm = client.get(configmap_ref(model, namespace))
    if cm is None:
        return None
    text = (cm.get("data") or {}).get(STATE_KEY)
    if not text:
        raise KubeError(f"ConfigMap {namespace}/{configmap_name(model)} has no {STATE_KEY}",
                        fix=f"delete it (kubectl -n {namespace} delete configmap {configmap_name(model)}) to restart "
                            "the rollout bookkeeping from the live Deployments")
    return Stored(RolloutState.from_json(text), cm["metadata"].get("resourceVersion"))


def save(client: Cluster, state: RolloutState, namespace: str, resource_version: str | None) -> Stored:
    """Create or replace the state; a concurrent writer makes this raise KubeError(status=409)."""
    if resource_version is None:
        stored = client.create(to_configmap(state, namespace))
    else:
        stored = client.replace(to_configmap(state, namespace, resource_version))
    return Stored(state, stored["metadata"].get("resourceVersion"))
