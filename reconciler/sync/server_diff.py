"""Field-level diff of what git renders against the live cluster (`reconciler diff ENV`, `status`).

As fluxcd/pkg ssa `hasDrifted` and `flux diff kustomization` do: each desired object is applied
with a server-side dry run, and the object the server *would* store is compared with the one it
stores. Defaulting, quantity canonicalisation (`1000m` -> `1`) and other managers' fields are the
same on both sides, so only what applying git would change shows. The comparison (`field_changes`)
is pure; `diff_environment` does the reads and dry runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from reconciler import labels
from reconciler.errors import KubeError
from reconciler.plan.fields import FieldChange, field_changes
from reconciler.results import ObjectRef

__all__ = ["FieldChange", "field_changes", "normalize", "diff_objects", "diff_environment"]

# Server-owned bookkeeping: differs on every write, never something git sets.
_VOLATILE_META = ("managedFields", "resourceVersion", "generation", "uid", "creationTimestamp", "selfLink")
# ... and the reconciler's own content hash: it changes with every change it summarises, so showing it adds nothing.
_VOLATILE_ANNOTATIONS = ("kubectl.kubernetes.io/last-applied-configuration", "deployment.kubernetes.io/revision",
                         labels.CONTENT_HASH)


def normalize(obj: dict | None) -> dict | None:
    """The object without status and server bookkeeping (a copy). Pure."""
    if obj is None:
        return None
    out = {k: v for k, v in obj.items() if k != "status"}
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in _VOLATILE_META}
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k not in _VOLATILE_ANNOTATIONS}
    if annotations:
        meta["annotations"] = annotations
    else:
        meta.pop("annotations", None)
    out["metadata"] = meta
    return out


@dataclass
class ObjectDiff:
    ref: ObjectRef
    model: str | None
    action: str  # "create" | "update" | "prune" | "error"
    changes: list[FieldChange] = field(default_factory=list)
    error: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"object": str(self.ref), "model": self.model, "action": self.action, "error": self.error or None,
                "changes": [{"path": c.path, "live": c.live, "desired": c.desired} for c in self.changes]}


@dataclass
class EnvironmentDiff:
    environment: str
    namespace: str
    revision: str
    objects: list[ObjectDiff] = field(default_factory=list)
    model_errors: dict[str, str] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return any(o.action != "update" or o.changes for o in self.objects)

    def by_model(self) -> dict[str, list[ObjectDiff]]:
        out: dict[str, list[ObjectDiff]] = {}
        for o in self.objects:
            out.setdefault(o.model or "-", []).append(o)
        return out

    def as_dict(self) -> dict[str, Any]:
        return {"environment": self.environment, "namespace": self.namespace, "revision": self.revision,
                "changed": self.changed, "modelErrors": self.model_errors,
                "objects": [o.as_dict() for o in self.objects if o.action != "update" or o.changes]}


def diff_objects(kube: Any, desired: Mapping[str, list[dict]], owned: Mapping[ObjectRef, str | None],
                 *, field_manager: str, environment: str = "", namespace: str = "") -> list[ObjectDiff]:
    """Dry-run apply every desired object and compare with the live one; owned objects left out of
    `desired` would be pruned. Reads and dry runs only: nothing is written. Each object is dry-run as
    the sync would apply it (a cluster-scoped one as the environment's own manager, so another
    environment's different declaration shows as the error the sync would report)."""
    from reconciler.sync.engine import Writer

    writer = Writer(kube, field_manager, environment, namespace)
    out: list[ObjectDiff] = []
    seen: set[ObjectRef] = set()
    for model in sorted(desired):
        for obj in desired[model]:
            ref = ObjectRef.of(obj)
            seen.add(ref)
            try:
                live = kube.get(ref)
                predicted = writer.validate(obj, ref) if environment else kube.apply(
                    obj, field_manager=field_manager, dry_run=True)
            except KubeError as exc:
                if exc.retryable:
                    raise
                out.append(ObjectDiff(ref, model, "error", error=exc.message))
                continue
            if live is None:
                out.append(ObjectDiff(ref, model, "create"))
            else:
                out.append(ObjectDiff(ref, model, "update", field_changes(normalize(live), normalize(predicted))))
    for ref, owner in sorted(owned.items(), key=lambda kv: str(kv[0])):
        if ref not in seen:
            out.append(ObjectDiff(ref, owner, "prune"))
    return out


def diff_environment(kube: Any, state: Any, environment: str, *, field_manager: str) -> EnvironmentDiff:
    """The diff of one environment of a rendered DesiredState against its cluster."""
    from reconciler.sync.inventory import load_inventory

    env_spec = state.catalog.environments[environment]
    result = EnvironmentDiff(environment, env_spec.namespace, state.revision,
                             model_errors=state.errors_by_model(environment))
    desired = {m: objs for m, objs in state.objects_by_model(environment).items() if m not in result.model_errors}
    if kube.get(ObjectRef("v1", "Namespace", None, env_spec.namespace)) is None:
        result.objects = [ObjectDiff(ObjectRef.of(o), m, "create") for m, objs in sorted(desired.items()) for o in objs]
        return result
    inventory = load_inventory(kube, environment, env_spec.namespace)
    owned = {ref: e.model for ref, e in inventory.entries.items() if e.model not in result.model_errors}
    result.objects = diff_objects(kube, desired, owned, field_manager=field_manager, environment=environment,
                                  namespace=env_spec.namespace)
    return result
