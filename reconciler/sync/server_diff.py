"""Drift: THE one comparison of what git renders with the live cluster. `reconciler diff ENV`, `status` and
`sync` (its drift report and self-heal) all call :func:`drift_of`; nothing else decides what drifted.

As fluxcd/pkg ssa `Diff` (and `flux diff kustomization`) do: each desired object is applied with a
server-side dry run, exactly as the sync would apply it (reconciler.sync.writer), and the object the server
*would* store is compared with the one it stores. Defaulting, quantity canonicalisation (`1000m` -> `1`)
and other managers' fields are the same on both sides, so only what applying git would change shows. A
dry run alone cannot see what a person *added* with kubectl (an env var, a label: server-side apply leaves
other managers' fields alone), so the fields hand edits own that git does not declare are drift too
(`hand_edits`, from the object's managedFields), and a self-healing sync hands them to the reconciler
before its apply removes them (`take_over_hand_edits`, as kustomize-controller's apply cleanup of
kubectl's managers does). Fields an autoscaler owns (an autoscaled Deployment's `spec.replicas`) are never
drift (`ignored_fields`).

Only objects that can have drifted are dry-run (`may_have_drifted`, pure, reads only): one whose live
content hash differs from git's, one where a field git declares has another live value, or one with a
hand edit. So a pass where nothing changed costs reads only. The comparisons are pure; `drift_of`,
`diff_objects` and `diff_environment` do the dry runs.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from reconciler import labels
from reconciler.cluster.protocol import Cluster
from reconciler.errors import KubeError
from reconciler.field_diff import FieldChange, field_changes
from reconciler.results import ObjectRef
from reconciler.sync.diff import drift as declared_differences, live_hash, object_hash, rekeyed_items
from reconciler.sync.inventory import load_inventory
from reconciler.sync.writer import Writer

__all__ = ["FieldChange", "field_changes", "normalize", "drift", "drift_of", "may_have_drifted", "hand_edits",
           "take_over_hand_edits", "ignored_fields", "diff_objects", "diff_environment", "sync_drift"]

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


# -- fields an autoscaler owns ------------------------------------------------------------------------

AUTOSCALER_KINDS = ("HorizontalPodAutoscaler", "ScaledObject")  # KEDA's ScaledObject drives an HPA of its own


def ignored_fields(objects: Iterable[dict]) -> dict[ObjectRef, frozenset[str]]:
    """Per object, the fields that are never drift: `spec.replicas` of a Deployment an autoscaler in
    `objects` (the environment's desired objects) scales, whoever set it last. Pure."""
    out: dict[ObjectRef, frozenset[str]] = {}
    for obj in objects:
        if obj.get("kind") not in AUTOSCALER_KINDS:
            continue
        target = (obj.get("spec") or {}).get("scaleTargetRef") or {}
        if target.get("kind") == "Deployment":
            ref = ObjectRef("apps/v1", "Deployment", (obj.get("metadata") or {}).get("namespace"),
                            str(target.get("name", "")))
            out[ref] = out.get(ref, frozenset()) | {"spec.replicas"}
    return out


def _ignored(path: str, ignore: frozenset[str]) -> bool:
    return any(path == i or path.startswith((i + ".", i + "[")) for i in ignore)


# -- hand edits ---------------------------------------------------------------------------------------
# Field managers of hand edits: kubectl's own (kubectl-edit, kubectl-set, kubectl-label, kubectl-annotate,
# kubectl-patch, kubectl-scale, kubectl-client-side-apply, plain `kubectl` for server-side apply and for
# requests it names by its user agent) and `before-first-apply`. What they added that git does not declare is
# drift; fields other controllers set (defaulting, an autoscaler's replicas) are not. The same list as
# kustomize-controller's apply cleanup (fluxcd/pkg ssa ApplyCleanupOptions.FieldManagers).
HAND_EDIT_MANAGERS = ("kubectl", "before-first-apply")
# List items are keyed in managedFields by their merge key; these key fields have a server default, so git may
# leave them out (a container port without `protocol` is TCP).
_KEY_DEFAULTS = {"protocol": "TCP"}


def hand_edited(manager: str) -> bool:
    return any(manager == m or manager.startswith(m + "-") for m in HAND_EDIT_MANAGERS)


Step = str | dict  # a field name, or a list item's key fields (a set member as {"value": ...})


def _leaves(fields: Any) -> list[list[Step]]:
    """The leaf paths of a managedFields fieldsV1 tree: `f:name` a field, `k:{...}` a list item by its key,
    `v:...` a set member."""
    if not isinstance(fields, dict):
        return []
    children = {k: v for k, v in fields.items() if k != "."}
    if not children:
        return [[]]
    out: list[list[Step]] = []
    for key, sub in children.items():
        step: Step
        if key.startswith("f:"):
            step = key[2:]
        elif key.startswith("k:"):
            try:
                step = dict(json.loads(key[2:]))
            except (ValueError, TypeError):
                continue
        elif key.startswith("v:"):
            step = {"value": key[2:]}
        else:
            continue
        out.extend([step, *rest] for rest in _leaves(sub))
    return out


def _follow(obj: Any, steps: list[Step]) -> tuple[bool, Any]:
    """The value at `steps` in `obj` (list items matched by their key fields), and whether it is there."""
    for step in steps:
        if isinstance(step, str):
            if not isinstance(obj, dict) or step not in obj:
                return False, None
            obj = obj[step]
            continue
        if not isinstance(obj, list):
            return False, None
        if set(step) == {"value"}:
            return any(json.dumps(v) == step["value"] or str(v) == step["value"] for v in obj), step["value"]
        found = [i for i in obj if isinstance(i, dict)
                 and all(i.get(k, _KEY_DEFAULTS.get(k)) == v for k, v in step.items())]
        if not found:
            return False, None
        obj = found[0]
    return True, obj


def _shown(steps: list[Step]) -> str:
    """A path as `field_changes` spells it: list items by name (`env[DEBUG]`), else by their key."""
    path = ""
    for step in steps:
        if isinstance(step, str):
            path = f"{path}.{step}" if path else step
        else:
            key = step.get("name", step.get("value"))
            path += f"[{key if isinstance(key, str) else json.dumps(step, sort_keys=True)}]"
    return path


def hand_edits(live: dict, desired: dict, ignore: frozenset[str] = frozenset()) -> list[FieldChange]:
    """What hand edits (HAND_EDIT_MANAGERS) added to the live object that git does not declare: the
    shortest such path per addition (an added env item, not its name and value), live value -> none. Pure."""
    out: dict[str, FieldChange] = {}
    for entry in (live.get("metadata") or {}).get("managedFields") or []:
        if not hand_edited(str(entry.get("manager", ""))):
            continue
        for steps in _leaves(entry.get("fieldsV1") or {}):
            if not steps or steps[0] == "status":
                continue
            if len(steps) >= 2 and steps[-2] == "annotations" and str(steps[-1]).startswith("kubectl.kubernetes.io/"):
                continue  # kubectl's own bookkeeping (last-applied-configuration, a rollout restart), not a setting
            for n in range(1, len(steps) + 1):  # the first step git does not have is what was added
                if _follow(desired, steps[:n])[0]:
                    continue
                present, value = _follow(live, steps[:n])
                shown = _shown(steps[:n])
                if present and not _ignored(shown, ignore):
                    out.setdefault(shown, FieldChange(shown, value, None))
                break
    return [out[k] for k in sorted(out)]


def _merge_fields(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge_fields(out[k], v) if isinstance(out.get(k), dict) and isinstance(v, dict) else v
    return out


def take_over_hand_edits(live: dict, field_manager: str) -> list[dict]:
    """A JSON patch handing the hand edits' managedFields to `field_manager`'s apply entry, so that the
    next apply of git's object (which does not declare what they added) removes it, as fluxcd/pkg ssa's
    apply cleanup does; [] when there are none. Guarded by a `test` of the resourceVersion. Pure."""
    entries = (live.get("metadata") or {}).get("managedFields") or []
    edits = [e for e in entries if hand_edited(str(e.get("manager", "")))]
    if not edits:
        return []
    kept = [e for e in entries if not hand_edited(str(e.get("manager", "")))]
    ours = next((e for e in kept if e.get("manager") == field_manager and e.get("operation") == "Apply"
                 and not e.get("subresource")), None)
    merged = dict(ours) if ours is not None else {"manager": field_manager, "operation": "Apply",
                                                  "apiVersion": edits[0].get("apiVersion"),
                                                  "fieldsType": "FieldsV1", "fieldsV1": {}}
    for e in edits:
        merged["fieldsV1"] = _merge_fields(merged.get("fieldsV1") or {}, e.get("fieldsV1") or {})
    kept = [merged if e is ours else e for e in kept] + ([] if ours is not None else [merged])
    return [{"op": "test", "path": "/metadata/resourceVersion", "value": live["metadata"]["resourceVersion"]},
            {"op": "replace", "path": "/metadata/managedFields", "value": kept}]


# -- THE comparison -----------------------------------------------------------------------------------

def drift(live: dict, predicted: dict, desired: dict, ignore: frozenset[str] = frozenset()) -> list[FieldChange]:
    """THE drift of one object: what applying git would change (`predicted`, the server's dry run of
    `desired`, against `live`), and what hand edits added that git does not declare; never the `ignore`d
    fields (an autoscaler's). Pure."""
    changes = [c for c in field_changes(normalize(live), normalize(predicted)) if not _ignored(c.path, ignore)]
    seen = {c.path for c in changes}
    return changes + [c for c in hand_edits(live, desired, ignore) if c.path not in seen]


def may_have_drifted(desired: dict, live: dict, ignore: frozenset[str] = frozenset()) -> bool:
    """Whether `drift_of` needs a dry run: the live content hash is not git's, a field git declares has
    another live value (a comparison that over-reports: the server then says whether the values are the
    same), or a hand edit added something. False means no drift, with no request. Pure."""
    return (live_hash(live) != object_hash(desired) or bool(declared_differences(desired, live, ignore=ignore))
            or bool(hand_edits(live, desired, ignore)))


def drift_of(writer: Writer, desired: dict, live: dict, ignore: frozenset[str] = frozenset()) -> list[FieldChange]:
    """The drift of one live object against git's `desired`, dry-run as the sync applies it: the one
    function behind `diff`, `status` and `sync`. Raises the dry run's KubeError."""
    if not may_have_drifted(desired, live, ignore):
        return []
    ref = ObjectRef.of(desired)
    rekeyed = rekeyed_items(desired, live)
    if rekeyed:  # git's apply cannot be dry-run before these items are replaced, as the sync does first: the
        # drift is what that replacement changes (the server's dry run of it), plus the hand additions
        predicted = writer.kube.patch(ref, rekeyed, type="json", field_manager=writer.manager(ref), dry_run=True)
    else:
        predicted = writer.validate(desired, ref)
    return drift(live, predicted, desired, ignore)


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


def diff_objects(kube: Cluster, desired: Mapping[str, list[dict]], owned: Mapping[ObjectRef, str | None],
                 *, field_manager: str, environment: str = "", namespace: str = "") -> list[ObjectDiff]:
    """Every desired object's drift (`drift_of`), or its dry run's error; an object not live yet would be
    created (it is dry-run too, for its errors); owned objects left out of `desired` would be pruned. Reads
    and dry runs only: nothing is written. Each object is dry-run as the sync would apply it (a cluster-scoped
    one as the environment's own manager, so another environment's different declaration shows as the error
    the sync would report)."""
    writer = Writer(kube, field_manager, environment, namespace)
    ignore = ignored_fields(o for objs in desired.values() for o in objs)
    out: list[ObjectDiff] = []
    seen: set[ObjectRef] = set()
    for model in sorted(desired):
        for obj in desired[model]:
            ref = ObjectRef.of(obj)
            seen.add(ref)
            try:
                live = kube.get(ref)
                if live is None:
                    writer.validate(obj, ref)
                    out.append(ObjectDiff(ref, model, "create"))
                else:
                    out.append(ObjectDiff(ref, model, "update", drift_of(writer, obj, live, ignore.get(ref, frozenset()))))
            except KubeError as exc:
                if exc.retryable:
                    raise
                out.append(ObjectDiff(ref, model, "error", error=exc.message))
    for ref, owner in sorted(owned.items(), key=lambda kv: str(kv[0])):
        if ref not in seen:
            out.append(ObjectDiff(ref, owner, "prune"))
    return out


def sync_drift(writer: Writer, desired: Mapping[str, list[dict]], candidates: Iterable[ObjectRef],
               live: Mapping[ObjectRef, dict], concurrency: int = 1
               ) -> tuple[dict[ObjectRef, list[FieldChange]], dict[ObjectRef, list[dict]]]:
    """For the sync engine: the drift (`drift_of`) of the `candidates` (objects git and the cluster agree on
    by content hash: the others are applied anyway), and for each drifted object with hand edits the JSON
    patch a self-heal runs before its apply (`take_over_hand_edits`). An object whose dry run is refused has
    no drift here: the sync reports its error where it validates it; a retryable error is raised."""
    wanted = set(candidates)
    all_desired = [o for objs in desired.values() for o in objs]
    ignore = ignored_fields(all_desired)
    # the local pre-check first, in this thread: in a pass where little changed nearly every object is settled by
    # it, and only the rest need the server's dry run (the pool); a future per object cost more than the check
    todo = [o for o in all_desired if (ref := ObjectRef.of(o)) in wanted and ref in live
            and may_have_drifted(o, live[ref], ignore.get(ref, frozenset()))]

    def one(obj: dict) -> tuple[ObjectRef, list[FieldChange]]:
        ref = ObjectRef.of(obj)
        try:
            return ref, drift_of(writer, obj, live[ref], ignore.get(ref, frozenset()))
        except KubeError as exc:
            if exc.retryable:
                raise
            return ref, []

    if concurrency <= 1 or len(todo) <= 1:
        found = [one(o) for o in todo]
    else:
        with ThreadPoolExecutor(max_workers=min(concurrency, len(todo))) as pool:
            found = list(pool.map(one, todo))
    drifted = {ref: changes for ref, changes in found if changes}
    takeover = {ref: ops for ref in drifted if (ops := take_over_hand_edits(live[ref], writer.manager(ref)))}
    return drifted, takeover


def diff_environment(kube: Cluster, state: Any, environment: str, *, field_manager: str) -> EnvironmentDiff:
    """The diff of one environment of a rendered DesiredState against its cluster."""
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
