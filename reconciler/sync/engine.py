"""Sync: make one environment in the cluster match what git renders for it.

Modelled on fluxcd/pkg ``ssa`` + kustomize-controller and argoproj/gitops-engine ``pkg/sync``:

* :func:`plan_sync` is the decision, a pure function: desired objects per model, the inventory
  (what we own and the content hash of each object at its last apply), the live objects and the
  options in; a :class:`SyncPlan` with one typed action per object out
  (created / configured / unchanged / pruned / skipped). No server needed to test it.
* :func:`sync_environment` is the executor: it reads (inventory, one list per kind), plans,
  validates every object it is about to write with a server-side dry run (a model with any invalid
  object is skipped with all its errors, the others proceed; nothing is applied until every object
  validated), applies with server-side apply in kind order, prunes what left git in reverse order,
  and records the inventory. A pass where nothing changed costs reads only.

Crash safety: before the first apply the inventory is written ahead with every object about to be
created (hash unknown), so a process killed mid-sync never leaves objects nobody owns; the next pass
re-applies whatever was not recorded as applied and converges. (Namespaces and CRDs declared in git
are applied before that record, since nothing else validates without them; they are never pruned
without confirmation anyway.)
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from reconciler import labels
from reconciler.errors import KubeError
from reconciler.sync.health import Health, HealthStatus, aggregate, wait_for_health
from reconciler.sync.inventory import PENDING, Inventory, InventoryEntry, load_inventory, save_inventory
from reconciler.results import Action, ObjectRef, ObjectResult, Summary

# Never pruned unless named in --confirm-prune-kinds: deleting them loses data or everything in them.
PROTECTED_KINDS = frozenset({"Namespace", "PersistentVolumeClaim"})

# Apply order (after Helm's install order); kinds not listed go last. Prune runs in reverse.
KIND_ORDER = ["Namespace", "CustomResourceDefinition", "NetworkPolicy", "ResourceQuota", "LimitRange",
              "PriorityClass", "ServiceAccount", "Secret", "ConfigMap", "StorageClass", "PersistentVolume",
              "PersistentVolumeClaim", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "Service",
              "DaemonSet", "Pod", "ReplicaSet", "Deployment", "StatefulSet", "HorizontalPodAutoscaler",
              "PodDisruptionBudget", "Job", "CronJob", "Ingress"]
_RANK = {kind: i for i, kind in enumerate(KIND_ORDER)}
# Applied (after their own dry run) before the rest is validated: a dry run of an object in a
# namespace, or of a custom resource whose CRD, does not exist yet fails on a real API server.
FOUNDATION_KINDS = frozenset({"Namespace", "CustomResourceDefinition"})


def kind_rank(kind: str) -> int:
    return _RANK.get(kind, len(KIND_ORDER))


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


@dataclass(frozen=True)
class PlannedAction:
    ref: ObjectRef
    model: str | None
    action: Action
    reason: str = ""
    obj: dict | None = None  # the desired object, for created/configured
    hash: str | None = None  # its content hash

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
        s = Summary()
        for a in self.actions:
            s.add(a.action)
        return s


# -- pure helpers ------------------------------------------------------------------------------

def object_hash(obj: dict) -> str:
    """The rendered content hash (the annotation the renderer sets), computed when it is missing."""
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    if annotations.get(labels.CONTENT_HASH):
        return annotations[labels.CONTENT_HASH]
    from reconciler.render.environment import content_hash

    return content_hash(obj)


def _live_hash(live: dict) -> str | None:
    return ((live.get("metadata") or {}).get("annotations") or {}).get(labels.CONTENT_HASH)


_IGNORED_META = {"annotations", "labels"}


def drift(desired: Any, live: Any, path: str = "", ignore: frozenset[str] = frozenset()) -> list[str]:
    """Fields we apply whose live value differs: every field of ``desired`` must be in ``live`` with
    the same value (live may have more: server defaults, other managers' fields). Lists of objects
    with a ``name`` are matched by name (containers, ports, env), other lists by position.
    Returns one readable line per difference; ``status`` and server-owned metadata are not compared."""
    if path in ignore:
        return []
    if isinstance(desired, dict):
        if not isinstance(live, dict):
            return [f"{path or '.'}: live is {_short(live)}, git has an object"]
        out: list[str] = []
        for key, value in desired.items():
            sub = f"{path}.{key}" if path else key
            if not path and key == "status":
                continue
            if path == "metadata" and key not in _IGNORED_META:
                continue
            if key not in live:
                out.append(f"{sub}: missing in the cluster (git: {_short(value)})")
                continue
            out.extend(drift(value, live[key], sub, ignore))
        return out
    if isinstance(desired, list):
        if not isinstance(live, list):
            return [f"{path}: live is {_short(live)}, git has a list"]
        if desired and all(isinstance(d, dict) and "name" in d for d in desired) \
                and all(isinstance(x, dict) for x in live):
            by_name = {x.get("name"): x for x in live}
            out = []
            if len(live) != len(desired):
                out.append(f"{path}: {len(live)} items in the cluster, {len(desired)} in git")
            for d in desired:
                if d["name"] not in by_name:
                    out.append(f"{path}[{d['name']}]: missing in the cluster")
                else:
                    out.extend(drift(d, by_name[d["name"]], f"{path}[{d['name']}]", ignore))
            return out
        if len(live) != len(desired):
            return [f"{path}: {len(live)} items in the cluster, {len(desired)} in git"]
        out = []
        for i, (d, x) in enumerate(zip(desired, live, strict=True)):
            out.extend(drift(d, x, f"{path}[{i}]", ignore))
        return out
    if desired != live and not _same_scalar(desired, live):
        return [f"{path}: cluster has {_short(live)}, git has {_short(desired)}"]
    return []


def _same_scalar(a: Any, b: Any) -> bool:
    # The API server returns int-or-string fields and quantities in its own spelling (1 vs "1").
    return str(a) == str(b)


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _autoscaled(objects: Iterable[dict]) -> set[tuple[str | None, str]]:
    """(namespace, deployment name) of Deployments an HPA scales: their spec.replicas is the HPA's."""
    out = set()
    for obj in objects:
        if obj.get("kind") == "HorizontalPodAutoscaler":
            target = (obj.get("spec") or {}).get("scaleTargetRef") or {}
            if target.get("kind") == "Deployment":
                out.add(((obj.get("metadata") or {}).get("namespace"), target.get("name")))
    return out


def plan_sync(environment: str, namespace: str, desired: Mapping[str, list[dict]], inventory: Inventory,
              live: Mapping[ObjectRef, dict] | None = None, options: SyncOptions = SyncOptions(),
              errors: Mapping[str, Iterable[str] | str] | None = None,
              protect: Mapping[ObjectRef, str] | None = None) -> SyncPlan:
    """Decide what to do with every object of one environment. Pure.

    ``desired``: rendered objects per model. ``inventory``: what we own with hashes at last apply.
    ``live``: the live objects we could read, by ref (None: not read, decide from the inventory
    alone). ``errors``: models that failed to render or validate: their objects are skipped and
    kept as they are in the cluster (never pruned). ``protect``: owned objects that must not be
    pruned although git no longer declares them now (a running canary holds them), with the reason.
    """
    plan = SyncPlan(environment, namespace)
    for model, errs in (errors or {}).items():
        plan.model_errors[model] = [errs] if isinstance(errs, str) else list(errs)
    failed_models = set(plan.model_errors)
    all_desired = [o for m in sorted(desired) if m not in failed_models for o in desired[m]]
    autoscaled = _autoscaled(all_desired)

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
            elif live_obj is not None and _live_hash(live_obj) != digest:
                applies.append(PlannedAction(ref, model, Action.configured,
                                             "changed in the cluster (content-hash annotation differs)", obj, digest))
            else:
                ignore = frozenset({"spec.replicas"}) if (obj.get("kind") == "Deployment" and (
                    ref.namespace, ref.name) in autoscaled) else frozenset()
                drifted = drift(obj, live_obj, ignore=ignore) if live_obj is not None else []
                if drifted and options.self_heal:
                    applies.append(PlannedAction(ref, model, Action.configured,
                                                 "self-heal: " + "; ".join(drifted), obj, digest))
                elif drifted:
                    others.append(PlannedAction(ref, model, Action.unchanged,
                                                "drifted (not healed, --self-heal is off): " + "; ".join(drifted)))
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
                "(pass --allow-empty-prune if that is really meant)"))
        elif entry.ref.kind in PROTECTED_KINDS and entry.ref.kind not in options.confirm_prune_kinds:
            others.append(PlannedAction(
                entry.ref, entry.model, Action.skipped,
                f"no longer in git, but {entry.ref.kind} is never pruned without confirmation "
                f"(pass --confirm-prune-kinds {entry.ref.kind})"))
        else:
            prunes.append(PlannedAction(entry.ref, entry.model, Action.pruned, "no longer in git"))

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


def write_ahead_inventory(plan: SyncPlan, previous: Inventory) -> Inventory:
    """The inventory to record before applying: the previous one plus every object about to be created."""
    return next_inventory(plan, previous)


# -- results -----------------------------------------------------------------------------------

@dataclass
class ModelHealth:
    status: HealthStatus
    objects: dict[str, Health] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status.value,
                "objects": {ref: h.as_dict() for ref, h in self.objects.items() if h.status is not HealthStatus.healthy}}


@dataclass
class SyncResult:
    environment: str
    namespace: str
    objects: list[ObjectResult] = field(default_factory=list)
    model_errors: dict[str, list[str]] = field(default_factory=dict)
    health: dict[str, ModelHealth] = field(default_factory=dict)
    dry_run: bool = False
    inventory_written: int = 0
    error: str | None = None  # the environment as a whole could not be synced
    notes: list[str] = field(default_factory=list)
    duration: float = 0.0
    commit: str | None = None

    def summary(self) -> Summary:
        s = Summary()
        for r in self.objects:
            s.add(r.action)
        return s

    def by_model(self) -> dict[str, Summary]:
        out: dict[str, Summary] = defaultdict(Summary)
        for r in self.objects:
            out[r.model or "-"].add(r.action)
        for model in self.model_errors:
            out.setdefault(model, Summary())
        return dict(sorted(out.items()))

    @property
    def failed(self) -> bool:
        return self.error is not None or any(r.action is Action.failed for r in self.objects)

    @property
    def ok(self) -> bool:
        unhealthy = any(h.status in (HealthStatus.degraded, HealthStatus.missing, HealthStatus.progressing)
                        for h in self.health.values())
        return not self.failed and not self.model_errors and not unhealthy

    def as_dict(self) -> dict[str, Any]:
        return {
            "environment": self.environment,
            "namespace": self.namespace,
            "commit": self.commit,
            "dryRun": self.dry_run,
            "ok": self.ok,
            "error": self.error,
            "notes": self.notes,
            "summary": self.summary().as_dict(),
            "models": {m: {"summary": s.as_dict(), "errors": self.model_errors.get(m, []),
                           **({"health": self.health[m].as_dict()} if m in self.health else {})}
                       for m, s in self.by_model().items()},
            "objects": [r.as_dict() for r in self.objects if r.action is not Action.unchanged or r.message],
            "durationSeconds": round(self.duration, 3),
        }


# -- executor ----------------------------------------------------------------------------------

def read_live(kube: Any, environment: str, namespace: str, refs: Iterable[ObjectRef]) -> dict[ObjectRef, dict]:
    """The live objects among ``refs``: one labelled list per (apiVersion, kind, namespace)."""
    wanted = set(refs)
    groups = {(r.api_version, r.kind, r.namespace) for r in wanted}
    live: dict[ObjectRef, dict] = {}
    selector = f"{labels.MANAGED_BY}={labels.MANAGER}"
    for api_version, kind, ns in sorted(groups, key=lambda g: (g[0], g[1], g[2] or "")):
        try:
            items = kube.list(api_version, kind, ns, label_selector=selector)
        except KubeError as exc:
            if exc.reason == "NoKindMatch":  # a CRD not installed yet: nothing of that kind is live
                continue
            raise
        for item in items:
            meta = item.get("metadata") or {}
            ref = ObjectRef(api_version, kind, meta.get("namespace") if ns else None, meta.get("name", ""))
            if ref in wanted:
                live[ref] = item
    return live


def _validation_problem(exc: KubeError) -> list[str]:
    return [exc.message, *exc.causes] if exc.causes else [exc.message]


def _parallel(fn: Callable[[PlannedAction], Any], items: list[PlannedAction], concurrency: int) -> list[Any]:
    if concurrency <= 1 or len(items) <= 1:
        return [fn(i) for i in items]
    with ThreadPoolExecutor(max_workers=min(concurrency, len(items))) as pool:
        return list(pool.map(fn, items))


def _try(fn: Callable[[], Any]) -> KubeError | None:
    try:
        fn()
    except KubeError as exc:
        return exc
    return None


def sync_environment(kube: Any, environment: str, namespace: str, desired: Mapping[str, list[dict]], *,
                     errors: Mapping[str, Iterable[str] | str] | None = None,
                     options: SyncOptions = SyncOptions(),
                     protect: Mapping[ObjectRef, str] | None = None) -> SyncResult:
    """Sync one environment; never raises KubeError (an environment-wide failure is in ``result.error``)."""
    started = time.monotonic()
    result = SyncResult(environment, namespace, dry_run=options.dry_run)
    try:
        _sync(kube, result, desired, errors or {}, options, protect or {})
    except KubeError as exc:
        result.error = str(exc)
    result.duration = time.monotonic() - started
    return result


def _sync(kube: Any, result: SyncResult, desired: Mapping[str, list[dict]],
          errors: Mapping[str, Iterable[str] | str], options: SyncOptions,
          protect: Mapping[ObjectRef, str]) -> None:
    env, ns = result.environment, result.namespace
    validate = True
    declared_ns = any(o.get("kind") == "Namespace" and (o.get("metadata") or {}).get("name") == ns
                      for objs in desired.values() for o in objs)
    if not declared_ns and kube.get(ObjectRef("v1", "Namespace", None, ns)) is None:
        if not options.create_namespace:
            raise KubeError(f"namespace {ns} of environment {env} does not exist", status=404, reason="NotFound",
                            fix=f"create it (kubectl create namespace {ns}) or sync without --no-create-namespace")
        if options.dry_run:
            validate = False
            result.notes.append(f"namespace {ns} does not exist yet: it would be created, and objects in it "
                                "cannot be validated server-side before it exists")
        else:
            kube.apply({"apiVersion": "v1", "kind": "Namespace",
                        "metadata": {"name": ns, "labels": {labels.MANAGED_BY: labels.MANAGER,
                                                            labels.ENVIRONMENT: env}}},
                       field_manager=options.field_manager)
            result.notes.append(f"created namespace {ns}")
    inventory = load_inventory(kube, env, ns) if validate or not options.dry_run else Inventory(env, ns)
    refs = {ObjectRef.of(o) for objs in desired.values() for o in objs} | set(inventory.entries)
    live = read_live(kube, env, ns, refs)
    plan = plan_sync(env, ns, desired, inventory, live, options, errors, protect)

    # 1. Validate every object about to be written (server-side dry run); foundation kinds
    #    (Namespace, CRD) are applied first, since the rest cannot be dry-run without them.
    invalid: dict[str, list[str]] = defaultdict(list)
    applied: set[ObjectRef] = set()
    results: dict[ObjectRef, ObjectResult] = {}

    def dry_run(a: PlannedAction) -> tuple[PlannedAction, KubeError | None]:
        return a, _try(lambda: kube.apply(a.obj, field_manager=options.field_manager, dry_run=True))

    def check(batch: list[PlannedAction]) -> None:
        if not validate:
            return
        for a, exc in _parallel(dry_run, batch, options.concurrency):
            if exc is None:
                continue
            if exc.retryable:  # the server is failing, not the object: give up on the environment
                raise exc
            invalid[a.model or "-"].extend(f"{a.ref}: {p}" for p in _validation_problem(exc))

    foundation = [a for a in plan.applies if a.ref.kind in FOUNDATION_KINDS]
    if foundation:
        check(foundation)
        if not options.dry_run:
            plan = plan_sync(env, ns, desired, inventory, live, options, {**errors, **invalid}) if invalid else plan
            for a in [a for a in plan.applies if a.ref.kind in FOUNDATION_KINDS]:
                exc = _try(lambda a=a: kube.apply(a.obj, field_manager=options.field_manager))
                results[a.ref] = _object_result(a, exc)
                if exc is None:
                    applied.add(a.ref)
    check([a for a in plan.applies if a.ref.kind not in FOUNDATION_KINDS and a.model not in invalid])
    if invalid:
        plan = plan_sync(env, ns, desired, inventory, live, options, {**errors, **invalid})
    result.model_errors = dict(plan.model_errors)

    if options.dry_run:
        result.objects = [ObjectResult(a.ref, a.action, a.model, a.reason) for a in plan.actions]
        return

    # 2. Record ownership ahead of the writes, so a crash cannot leave objects nobody owns.
    todo = [a for a in plan.applies if a.ref not in results]
    ahead = write_ahead_inventory(plan, inventory)
    if todo and not ahead.same_entries(inventory):
        save_inventory(kube, ahead, previous=inventory)
        result.inventory_written += 1
        inventory_now = ahead
    else:
        inventory_now = inventory

    # 3. Apply, kind by kind (Services before Deployments before HPAs); parallel within a kind.
    aborted: KubeError | None = None
    failed_models: set[str] = set()
    for rank in sorted({kind_rank(a.ref.kind) for a in todo}):
        batch = [a for a in todo if kind_rank(a.ref.kind) == rank]
        if aborted is not None:
            for a in batch:
                results[a.ref] = ObjectResult(a.ref, Action.failed, a.model, f"not attempted: {aborted.message}")
            continue

        def apply(a: PlannedAction) -> tuple[PlannedAction, KubeError | None]:
            return a, _try(lambda: kube.apply(a.obj, field_manager=options.field_manager))

        for a, exc in _parallel(apply, batch, options.concurrency):
            results[a.ref] = _object_result(a, exc)
            if exc is None:
                applied.add(a.ref)
            else:
                failed_models.add(a.model or "-")
                if exc.retryable and aborted is None:
                    aborted = exc

    # 4. Prune what left git, in reverse kind order; not for models whose apply failed this pass.
    pruned: set[ObjectRef] = set()
    for a in plan.prunes:
        if aborted is not None or (a.model or "-") in failed_models:
            results[a.ref] = ObjectResult(a.ref, Action.skipped, a.model,
                                          "not pruned: applies failed in this pass")
            continue
        exc = _try(lambda a=a: kube.delete(a.ref))
        if exc is None:
            pruned.add(a.ref)
            results[a.ref] = ObjectResult(a.ref, Action.pruned, a.model, a.reason)
        else:
            results[a.ref] = ObjectResult(a.ref, Action.failed, a.model, f"prune failed: {exc}")
            if exc.retryable:
                aborted = aborted or exc

    # 5. Record the inventory (no write when it did not change).
    final = next_inventory(plan, inventory_now, applied=applied, pruned=pruned)
    if save_inventory(kube, final, previous=inventory_now):
        result.inventory_written += 1

    result.objects = [results.get(a.ref) or ObjectResult(a.ref, a.action, a.model, a.reason) for a in plan.actions]
    if aborted is not None:
        result.error = f"sync of {env} stopped: {aborted.message}"

    # 6. Health of what was applied (optional wait).
    if options.wait:
        result.health = model_health(kube, plan, timeout=options.timeout)


def _object_result(a: PlannedAction, exc: KubeError | None) -> ObjectResult:
    if exc is None:
        return ObjectResult(a.ref, a.action, a.model, a.reason)
    return ObjectResult(a.ref, Action.failed, a.model, str(exc))


def model_health(kube: Any, plan: SyncPlan, *, timeout: float = 300.0, interval: float = 2.0,
                 sleep: Callable[[float], None] = time.sleep) -> dict[str, ModelHealth]:
    """Wait for every synced model's objects to settle; the health per model (worst object wins)."""
    refs_by_model: dict[str, list[ObjectRef]] = defaultdict(list)
    for a in plan.actions:
        if a.action in (Action.created, Action.configured, Action.unchanged) and a.model:
            refs_by_model[a.model].append(a.ref)
    all_refs = [r for refs in refs_by_model.values() for r in refs]
    if not all_refs:
        return {}
    healths = wait_for_health(kube, all_refs, timeout=timeout, interval=interval, sleep=sleep)
    return {m: ModelHealth(aggregate(healths[r] for r in refs), {str(r): healths[r] for r in refs})
            for m, refs in sorted(refs_by_model.items())}


# -- from git --------------------------------------------------------------------------------

def sync_commit(kube: Any, repo_root: Any, rev: str | None, environment: str,
                options: SyncOptions = SyncOptions()) -> SyncResult:
    """Render ``environment`` at git revision ``rev`` of the repository and sync it.

    An environment that cannot be rendered at all (its spec or overlay is broken) is an
    environment-wide error; models that fail to render are skipped with their errors."""
    from reconciler.plan.desired import desired_at
    from reconciler.errors import ReconcilerError

    started = time.monotonic()
    try:
        state = desired_at(repo_root, rev, [environment])
    except ReconcilerError as exc:
        return SyncResult(environment, "", dry_run=options.dry_run, error=str(exc),
                          duration=time.monotonic() - started)
    if environment in state.env_errors:
        return SyncResult(environment, "", dry_run=options.dry_run, error=str(state.env_errors[environment]),
                          duration=time.monotonic() - started)
    env_spec = state.catalog.environments[environment]
    desired = state.objects_by_model(environment)
    errors: dict[str, Any] = dict(state.errors_by_model(environment))
    rollouts = []
    protect: dict[ObjectRef, str] = {}
    if options.rollouts and env_spec.canary and not options.dry_run:
        rollouts = _canary_ticks(kube, state.catalog, env_spec, desired, errors, protect, options)
    result = sync_environment(kube, environment, env_spec.namespace, desired, errors=errors, options=options,
                              protect=protect)
    result.commit = state.revision
    if options.rollouts and env_spec.canary and options.dry_run:
        result.notes.append("dry run: canaries were not evaluated; a changed model would start a canary "
                            "rather than replace its stable version as shown")
    for rollout in rollouts:
        result.objects.extend(rollout.results)
        if rollout.message:
            result.notes.append(f"canary {rollout.model}: {rollout.message}")
    return result


def _canary_ticks(kube: Any, catalog: Any, env: Any, desired: dict[str, list[dict]], errors: dict[str, Any],
                  protect: dict[ObjectRef, str], options: SyncOptions) -> list[Any]:
    """One canary controller tick per model with canaries on, before the sync applies anything.

    Desired objects the rollout holds back (the stable Deployment while a canary runs) are removed
    from ``desired`` and protected from pruning, as are the old pool's objects of a cross-pool
    canary. A model whose rollout cannot be driven is not synced at all: syncing it would replace
    the stable version without analysis.
    """
    from reconciler.rollout.prometheus import PrometheusClient

    results: list[Any] = []
    if kube.get(ObjectRef("v1", "Namespace", None, env.namespace)) is None:
        return results  # nothing is live yet: a first deployment has no stable version to protect
    prometheus = PrometheusClient(options.prometheus_url) if options.prometheus_url else None
    try:
        for model in sorted(desired):
            rollout = _canary_tick(kube, catalog, env, model, desired, errors, prometheus)
            if rollout is not None:
                desired[model] = [o for o in desired[model] if ObjectRef.of(o) not in rollout.skip]
                for ref in rollout.skip | rollout.keep:
                    protect[ref] = f"held by the running canary of {model} ({rollout.state.phase.value})"
                results.append(rollout)
    finally:
        if prometheus is not None:
            prometheus.close()
    return results


def _canary_tick(kube: Any, catalog: Any, env: Any, model: str, desired: dict[str, list[dict]],
                 errors: dict[str, Any], prometheus: Any) -> Any:
    """The rollout of one model, or None when it has canaries off, errors, or its rollout failed (recorded in errors)."""
    from reconciler.rollout.controller import reconcile_rollout
    from reconciler.rollout.prometheus import PrometheusAnalysis
    from reconciler.errors import ReconcilerError
    from reconciler.catalog.specs import effective_canary

    entry = catalog.models.get(model)
    if entry is None or model in errors:
        return None
    cfg = effective_canary(entry.spec, env)
    if not cfg.enabled:
        return None
    analysis = PrometheusAnalysis(prometheus, queries=cfg.queries) if prometheus is not None else None
    try:
        return reconcile_rollout(kube, entry, env, desired[model], time.time(), pools=catalog.pools, analysis=analysis)
    except (ReconcilerError, KubeError) as exc:
        errors[model] = [f"canary: {exc}"]
        return None
