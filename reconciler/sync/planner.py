"""The sync plan: a pure function from desired objects, the inventory and the live objects to one
typed action per object (created / configured / unchanged / pruned / skipped), in apply order.

No server needed: tests/test_sync_plan.py drives it with plain dicts. The executor that carries a
plan out is reconciler.sync.engine.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from reconciler import labels
from reconciler.results import Action, ObjectRef, Summary
from reconciler.sync.diff import live_hash, object_hash, rekeyed_items
from reconciler.sync.inventory import PENDING, Inventory, InventoryEntry


# Never pruned unless named in --confirm-prune-kinds: deleting them loses data or everything in them.
PROTECTED_KINDS = frozenset({"Namespace", "PersistentVolumeClaim"})


# Apply order (after Helm's install order); kinds not listed go last. Prune runs in reverse.
KIND_ORDER = ["Namespace", "CustomResourceDefinition", "NetworkPolicy", "ResourceQuota", "LimitRange",
              "PriorityClass", "ServiceAccount", "Secret", "ConfigMap", "StorageClass", "PersistentVolume",
              "PersistentVolumeClaim", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "Service",
              "DaemonSet", "Pod", "ReplicaSet", "Deployment", "StatefulSet", "HorizontalPodAutoscaler", "ScaledObject",
              "PodDisruptionBudget", "Job", "CronJob", "Ingress"]


_RANK = {kind: i for i, kind in enumerate(KIND_ORDER)}


# Applied (after their own dry run) before the rest is validated: a dry run of an object in a
# namespace, or of a custom resource whose CRD, does not exist yet fails on a real API server.
FOUNDATION_KINDS = frozenset({"Namespace", "CustomResourceDefinition"})


def kind_rank(kind: str) -> int:
    return _RANK.get(kind, len(KIND_ORDER))


# what scales a workload's replicas (KEDA's ScaledObject drives an HPA of its own); one workload, one autoscaler
REPLICA_SCALERS = frozenset({"HorizontalPodAutoscaler", "ScaledObject"})


def _scale_target(obj: Mapping[str, Any] | None) -> tuple[str, str] | None:
    target = ((obj or {}).get("spec") or {}).get("scaleTargetRef") or {}
    return (str(target.get("kind") or "Deployment"), str(target["name"])) if target.get("name") else None


def handovers(plan: "SyncPlan", live: Mapping[ObjectRef, dict]) -> list["PlannedAction"]:
    """Prunes that must run before anything is validated: an autoscaler leaving git whose workload another
    autoscaler of the same model and namespace is about to claim (a cpu model's HPA replaced by a KEDA
    ScaledObject when it turns to request metrics or scale to zero, or back). KEDA's admission webhook refuses a
    ScaledObject whose workload an HPA already scales, on dry runs too: with the old one still there the model
    would fail validation, apply nothing and prune nothing, pass after pass. Pure."""
    claimed = {(a.model, a.ref.namespace, _scale_target(a.obj)) for a in plan.applies
               if a.ref.kind in REPLICA_SCALERS and _scale_target(a.obj) is not None}
    return [a for a in plan.prunes if a.ref.kind in REPLICA_SCALERS and not a.refused
            and (a.model, a.ref.namespace, _scale_target(live.get(a.ref))) in claimed]


@dataclass(frozen=True)
class SyncOptions:
    prune: bool = True
    allow_empty_prune: bool = False
    confirm_prune_kinds: frozenset[str] = frozenset()
    self_heal: bool = False
    dry_run: bool = False
    wait: bool = False
    timeout: float = 300.0
    concurrency: int = 8
    field_manager: str = labels.MANAGER
    create_namespace: bool = True  # create the environment's namespace when missing (never pruned)
    rollouts: bool = True  # run a canary tick for models whose environment has canaries on
    prometheus_url: str | None = None  # canary analysis source; without it a canary never promotes
    prometheus_deadline: float = 10.0  # seconds for each whole Prometheus request; a stalled one costs a pass this once
    target: Any = None  # cluster.identity.Target the client talks to: checked against the environment's cluster
    verify: Any = None  # source.verify.VerifyPolicy: only commits signed by its keys are applied


@dataclass(frozen=True)
class PlannedAction:
    ref: ObjectRef
    model: str | None
    action: Action
    reason: str = ""
    obj: dict | None = None  # the desired object, for created/configured
    hash: str | None = None  # its content hash
    refused: bool = False  # a safety check refused it (not the user's --no-prune): the sync is partial
    # JSON-patch operations to run before the apply: live list items another manager re-keyed
    # (diff.rekeyed_items), which server-side apply alone would duplicate
    prepare: tuple[dict, ...] = ()

    @property
    def writes(self) -> bool:
        return self.action.writes


@dataclass
class SyncPlan:
    environment: str
    namespace: str
    actions: list[PlannedAction] = field(default_factory=list)
    model_errors: dict[str, list[str]] = field(default_factory=dict)

    @property
    def applies(self) -> list[PlannedAction]:
        return [a for a in self.actions if a.action in (Action.created, Action.configured)]

    @property
    def prunes(self) -> list[PlannedAction]:
        return [a for a in self.actions if a.action is Action.pruned]

    @property
    def writes(self) -> int:
        return sum(1 for a in self.actions if a.writes)

    def summary(self) -> Summary:
        return Summary.of(self.actions)


def plan_sync(environment: str, namespace: str, desired: Mapping[str, list[dict]], inventory: Inventory,
              live: Mapping[ObjectRef, dict] | None = None, options: SyncOptions = SyncOptions(),
              errors: Mapping[str, Iterable[str] | str] | None = None,
              protect: Mapping[ObjectRef, str] | None = None,
              drifted: Mapping[ObjectRef, Sequence[object]] | None = None,
              takeover: Mapping[ObjectRef, Sequence[dict]] | None = None) -> SyncPlan:
    """Decide what to do with every object of one environment. Pure.

    ``desired``: rendered objects per model. ``inventory``: what we own with hashes at last apply.
    ``live``: the live objects we could read, by ref (None: not read, decide from the inventory
    alone). ``errors``: models that failed to render or validate: their objects are skipped and
    kept as they are in the cluster (never pruned). ``protect``: owned objects that must not be
    pruned although git no longer declares them now (a running canary holds them), with the reason.
    ``drifted``: the drift of objects git and the cluster agree on by content hash, as the one comparison
    of `diff` and `status` finds it (reconciler.sync.server_diff.sync_drift, from server-side dry runs; the
    engine passes it): reported, or healed with --self-heal. ``takeover``: per drifted object, the JSON patch
    that hands fields hand edits added to the reconciler before a self-heal apply, so that apply removes them.
    """
    plan = SyncPlan(environment, namespace)
    for model, errs in (errors or {}).items():
        plan.model_errors[model] = [errs] if isinstance(errs, str) else list(errs)
    failed_models = set(plan.model_errors)
    all_desired = [o for m in sorted(desired) if m not in failed_models for o in desired[m]]

    applies: list[PlannedAction] = []
    others: list[PlannedAction] = []
    seen: dict[ObjectRef, str] = {}
    for model in sorted(desired):
        for obj in desired[model]:
            ref = ObjectRef.of(obj)
            if model in failed_models:
                others.append(PlannedAction(ref, model, Action.skipped, "model not synced: see its errors"))
                continue
            if ref in seen:
                msg = f"{ref} is declared by models {seen[ref]!r} and {model!r}"
                plan.model_errors.setdefault(model, []).append(msg)
                others.append(PlannedAction(ref, model, Action.skipped, msg))
                continue
            seen[ref] = model
            digest = object_hash(obj)
            owned_hash = inventory.hash_of(ref)
            live_obj = live.get(ref) if live is not None else None
            if live is not None and live_obj is None:
                reason = "deleted from the cluster, re-creating" if owned_hash is not None else "new"
                applies.append(PlannedAction(ref, model, Action.created, reason, obj, digest))
            elif live is None and owned_hash is None:
                applies.append(PlannedAction(ref, model, Action.created, "new", obj, digest))
            elif owned_hash != digest:
                if owned_hash is None:
                    reason = "exists in the cluster but not owned yet: adopting"
                elif owned_hash == PENDING:
                    reason = "last apply did not complete"
                else:
                    reason = "changed in git"
                applies.append(PlannedAction(ref, model, Action.configured, reason, obj, digest))
            elif live_obj is not None and live_hash(live_obj) != digest:
                applies.append(PlannedAction(ref, model, Action.configured,
                                             "changed in the cluster (content-hash annotation differs)", obj, digest))
            else:
                found = [str(c) for c in (drifted or {}).get(ref, ())] if live_obj is not None else []
                if found and options.self_heal:
                    applies.append(PlannedAction(ref, model, Action.configured, "self-heal: " + "; ".join(found), obj,
                                                 digest, prepare=tuple((takeover or {}).get(ref, ()))))
                elif found:
                    others.append(PlannedAction(ref, model, Action.unchanged,
                                                "drifted (not healed, --self-heal is off): " + "; ".join(found)))
                else:
                    others.append(PlannedAction(ref, model, Action.unchanged))

    # Prune: what we own that left git. Never for models that failed (their objects stay as they are).
    prunes: list[PlannedAction] = []
    protect = protect or {}
    for ref in sorted(set(protect) & (set(inventory.entries) - set(seen)), key=str):
        others.append(PlannedAction(ref, inventory.entries[ref].model, Action.skipped, protect[ref]))
    candidates = [e for ref, e in inventory.entries.items()
                  if ref not in seen and ref not in protect and e.model not in failed_models
                  and not (e.model in desired and e.model in plan.model_errors)]
    # Objects of a failed model that we own but it no longer declares are kept too:
    kept_for_failed = [e for ref, e in inventory.entries.items() if ref not in seen and e.model in failed_models
                       and ref not in {a.ref for a in others}]
    for entry in kept_for_failed:
        others.append(PlannedAction(entry.ref, entry.model, Action.skipped, "model not synced: kept as is"))
    empty_render = not all_desired
    for entry in sorted(candidates, key=lambda e: (-kind_rank(e.ref.kind), str(e.ref))):
        if not options.prune:
            others.append(PlannedAction(entry.ref, entry.model, Action.skipped,
                                        "no longer in git; not pruned (pruning is off)"))
        elif empty_render and not options.allow_empty_prune:
            others.append(PlannedAction(
                entry.ref, entry.model, Action.skipped,
                f"the render of {environment} is empty: refusing to prune all {len(candidates)} owned objects "
                "(pass --allow-empty-prune if that is really meant)", refused=True))
        elif entry.ref.kind in PROTECTED_KINDS and entry.ref.kind not in options.confirm_prune_kinds:
            others.append(PlannedAction(
                entry.ref, entry.model, Action.skipped,
                f"no longer in git, but {entry.ref.kind} is never pruned without confirmation "
                f"(pass --confirm-prune-kinds {entry.ref.kind})", refused=True))
        else:
            prunes.append(PlannedAction(entry.ref, entry.model, Action.pruned, "no longer in git"))

    if live is not None:
        applies = [replace(a, prepare=tuple(rekeyed_items(a.obj, live[a.ref])) + a.prepare)
                   if a.action is Action.configured and a.ref in live else a for a in applies]
    applies.sort(key=lambda a: (kind_rank(a.ref.kind), str(a.ref)))
    plan.actions = applies + others + prunes
    return plan


def next_inventory(plan: SyncPlan, previous: Inventory, *, applied: Iterable[ObjectRef] = (),
                   pruned: Iterable[ObjectRef] = ()) -> Inventory:
    """The inventory after executing (part of) a plan. Pure.

    Applied objects get their new hash; objects whose apply did not happen or failed keep their old
    entry (or a pending one, so whatever the server may have created is still owned); pruned ones
    leave; everything else we owned stays."""
    applied, pruned = set(applied), set(pruned)
    inv = previous.copy()
    for a in plan.actions:
        if a.action in (Action.created, Action.configured):
            if a.ref in applied:
                inv.entries[a.ref] = InventoryEntry(a.ref, a.model, a.hash or PENDING)
            elif a.ref not in inv.entries:
                inv.entries[a.ref] = InventoryEntry(a.ref, a.model, PENDING)
        elif a.action is Action.pruned and a.ref in pruned:
            inv.entries.pop(a.ref, None)
        elif a.action is Action.unchanged and a.ref in inv.entries and inv.entries[a.ref].model != a.model:
            inv.entries[a.ref] = replace(inv.entries[a.ref], model=a.model)
    return inv
