"""Sync: make one environment in the cluster match what git renders for it.

Modelled on fluxcd/pkg ``ssa`` + kustomize-controller and argoproj/gitops-engine ``pkg/sync``:

* :func:`plan_sync` (reconciler.sync.planner) is the decision, a pure function: desired objects per model, the inventory
  (what we own and the content hash of each object at its last apply), the live objects and the
  options in; a :class:`SyncPlan` with one typed action per object out
  (created / configured / unchanged / pruned / skipped). No server needed to test it.
* :func:`sync_environment` is the executor: it reads (inventory, one list per kind), plans, prunes
  an autoscaler first when another of the same model replaces it on the same workload (planner.handovers),
  validates every object it is about to write with a server-side dry run (a model with any invalid
  object is skipped with all its errors, the others proceed; nothing is applied until every object
  validated), applies with server-side apply in kind order, prunes what left git in reverse order,
  and records the inventory. A pass where nothing changed costs reads only.

Crash safety: before the first apply the inventory is written ahead with every object about to be
created (hash unknown), so a process killed mid-sync never leaves objects nobody owns; the next pass
re-applies whatever was not recorded as applied and converges. (Namespaces and CRDs declared in git
are applied before that record, since nothing else validates without them; they are never pruned
without confirmation anyway. After a CRD is applied the pass waits, up to CRD_SERVED_TIMEOUT, until discovery
serves its kind, as Flux's kustomize-controller does.)
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from reconciler.cluster.protocol import Cluster
from reconciler import labels
from reconciler.errors import KubeError, ReconcilerError
from reconciler.sync.health import Health, HealthStatus, aggregate, wait_for_health
from reconciler.sync.inventory import Inventory, load_inventory, save_inventory
from reconciler.results import Action, ObjectRef, ObjectResult, Summary
from reconciler.sync.planner import (FOUNDATION_KINDS, PlannedAction, SyncOptions, SyncPlan, REPLICA_SCALERS,
                                     handovers, kind_rank, next_inventory, plan_sync)
from reconciler.sync.diff import live_hash, object_hash
from reconciler.sync.server_diff import sync_drift
from reconciler.sync.writer import Writer


# -- pure helpers ------------------------------------------------------------------------------


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
    error: ReconcilerError | None = None  # the environment as a whole could not be synced (rendered by str())
    notes: list[str] = field(default_factory=list)
    duration: float = 0.0
    commit: str | None = None
    rollouts: list[Any] = field(default_factory=list)  # this pass's canary ticks (rollout.controller.RolloutResult)
    stage: str | None = None  # the stage of the pass that failed it (reconciler.run.reconcile.Stage), when it failed

    def summary(self) -> Summary:
        return Summary.of(self.objects)

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
    def refused(self) -> list[ObjectResult]:
        """Objects a safety check refused to touch (a mass prune of an empty render, a protected kind)."""
        return [r for r in self.objects if r.refused]

    @property
    def ok(self) -> bool:
        unhealthy = any(h.status in (HealthStatus.degraded, HealthStatus.missing, HealthStatus.progressing)
                        for h in self.health.values())
        return not self.failed and not self.model_errors and not unhealthy and not self.refused

    def as_dict(self) -> dict[str, Any]:
        return {
            "environment": self.environment,
            "namespace": self.namespace,
            "commit": self.commit,
            "dryRun": self.dry_run,
            "ok": self.ok,
            "error": str(self.error) if self.error is not None else None,
            "stage": self.stage,
            "notes": self.notes,
            "summary": self.summary().as_dict(),
            "models": {m: {"summary": s.as_dict(), "errors": self.model_errors.get(m, []),
                           **({"health": self.health[m].as_dict()} if m in self.health else {})}
                       for m, s in self.by_model().items()},
            "objects": [r.as_dict() for r in self.objects if r.action is not Action.unchanged or r.message],
            "durationSeconds": round(self.duration, 3),
        }


# -- executor ----------------------------------------------------------------------------------

def read_live(kube: Cluster, environment: str, namespace: str, refs: Iterable[ObjectRef]) -> dict[ObjectRef, dict]:
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
    if exc.reason == "SharedResourceConflict":  # the way out is not in the model's manifests: say it
        return [exc.message, f"fix: {exc.fix}"]
    return [exc.message, *exc.causes] if exc.causes else [exc.message]


def _parallel(fn: Callable[[PlannedAction], Any], items: list[PlannedAction], concurrency: int) -> list[Any]:
    if concurrency <= 1 or len(items) <= 1:
        return [fn(i) for i in items]
    with ThreadPoolExecutor(max_workers=min(concurrency, len(items))) as pool:
        return list(pool.map(fn, items))


# how long a pass waits for the API server to serve the kinds of a CustomResourceDefinition it just applied
CRD_SERVED_TIMEOUT = 30.0


def _served_kinds(objs: Iterable[dict[str, Any] | None]) -> list[tuple[str, str]]:
    """(apiVersion, kind) of every served version of the CustomResourceDefinitions among `objs`. Pure."""
    found = []
    for obj in objs:
        if not obj or obj.get("kind") != "CustomResourceDefinition":
            continue
        spec = obj.get("spec") or {}
        kind = (spec.get("names") or {}).get("kind")
        group = spec.get("group")
        for version in spec.get("versions") or []:
            if kind and group and version.get("served", True) and version.get("name"):
                found.append((f"{group}/{version['name']}", kind))
    return found


def _try(fn: Callable[[], Any]) -> KubeError | None:
    try:
        fn()
    except KubeError as exc:
        return exc
    return None


def sync_environment(kube: Cluster, environment: str, namespace: str, desired: Mapping[str, list[dict]], *,
                     errors: Mapping[str, Iterable[str] | str] | None = None,
                     options: SyncOptions = SyncOptions(),
                     protect: Mapping[ObjectRef, str] | None = None) -> SyncResult:
    """Sync one environment; never raises KubeError (an environment-wide failure is in ``result.error``)."""
    started = time.monotonic()
    result = SyncResult(environment, namespace, dry_run=options.dry_run)
    try:
        _sync(kube, result, desired, errors or {}, options, protect or {})
    except KubeError as exc:
        result.error = exc
    result.duration = time.monotonic() - started
    return result


def _sync(kube: Cluster, result: SyncResult, desired: Mapping[str, list[dict]],
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
    writer = Writer(kube, options.field_manager, env, ns)
    # drift, by the one comparison `diff` and `status` use, of the objects git and the cluster agree on by hash
    drifted, takeover = sync_drift(writer, desired, [
        ref for model, objs in desired.items() if model not in errors for o in objs
        if (ref := ObjectRef.of(o)) in live and inventory.hash_of(ref) == object_hash(o) == live_hash(live[ref])],
        live, options.concurrency) if validate else ({}, {})

    def replan(failed: Mapping[str, Iterable[str] | str]) -> SyncPlan:
        return plan_sync(env, ns, desired, inventory, live, options, failed, protect, drifted, takeover)

    plan = replan(errors)

    # 0. Hand a workload's replicas over: an autoscaler replaced by another of the same model (an HPA by a KEDA
    #    ScaledObject, or back) is pruned first, as KEDA's admission webhook refuses the new one while the old
    #    one scales the workload, on the dry run of step 1 too (planner.handovers). A dry run only says so.
    invalid: dict[str, list[str]] = defaultdict(list)
    applied: set[ObjectRef] = set()
    pruned: set[ObjectRef] = set()
    results: dict[ObjectRef, ObjectResult] = {}
    handed = handovers(plan, live) if validate else []
    # on a dry run the old autoscaler stays, so its successor cannot be validated (KEDA's webhook would refuse it)
    unvalidated = {a.model for a in handed} if options.dry_run else set()
    for a in handed:
        if options.dry_run:
            result.notes.append(f"{a.ref} would be pruned first, and the autoscaler replacing it validated after "
                                "(KEDA refuses a ScaledObject for a workload an HPA scales)")
            continue
        try:
            said = writer.prune(a, live.get(a.ref))
        except KubeError as refused:
            if refused.retryable:
                raise
            results[a.ref] = ObjectResult(a.ref, Action.failed, a.model, f"prune failed: {refused}", error=refused)
            continue
        pruned.add(a.ref)
        results[a.ref] = ObjectResult(a.ref, Action.pruned, a.model, f"{said} (before the autoscaler replacing it)")

    # 1. Validate every object about to be written (server-side dry run); foundation kinds
    #    (Namespace, CRD) are applied first, since the rest cannot be dry-run without them.

    def dry_run(a: PlannedAction) -> tuple[PlannedAction, KubeError | None]:
        obj = a.obj
        assert obj is not None, "a write always carries its desired object"
        if a.prepare:  # the apply can only be validated after the re-keyed items are replaced
            return a, _try(lambda: kube.patch(a.ref, list(a.prepare), type="json",
                                              field_manager=writer.manager(a.ref), dry_run=True))
        return a, _try(lambda: writer.validate(obj, a.ref))

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
            plan = replan({**errors, **invalid}) if invalid else plan
            for a in [a for a in plan.applies if a.ref.kind in FOUNDATION_KINDS]:
                exc = _try(lambda a=a: writer.apply(a))
                results[a.ref] = _object_result(a, exc)
                if exc is None:
                    applied.add(a.ref)
            for api_version, kind in _served_kinds(a.obj for a in plan.applies if a.ref in applied):
                if not kube.wait_for_kind(api_version, kind, CRD_SERVED_TIMEOUT):
                    result.notes.append(f"{kind} in {api_version} was not served {CRD_SERVED_TIMEOUT:.0f} s after its "
                                        "CustomResourceDefinition was applied: its objects fail validation this pass")
    check([a for a in plan.applies if a.ref.kind not in FOUNDATION_KINDS and a.model not in invalid
           and not (a.model in unvalidated and a.ref.kind in REPLICA_SCALERS)])
    if invalid:
        plan = replan({**errors, **invalid})
    result.model_errors = dict(plan.model_errors)

    if options.dry_run:
        result.objects = [ObjectResult(a.ref, a.action, a.model, a.reason, refused=a.refused) for a in plan.actions]
        return

    # 2. Record ownership ahead of the writes, so a crash cannot leave objects nobody owns.
    todo = [a for a in plan.applies if a.ref not in results]
    ahead = next_inventory(plan, inventory)  # written ahead: every object about to be created, hash unknown
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
            return a, _try(lambda: writer.apply(a))

        # a model applies as a unit in kind order: after one of its writes failed (e.g. its rollout
        # state lost a race with another writer), nothing more of it is written in this pass
        stopped = [a for a in batch if (a.model or "-") in failed_models]
        for a in stopped:
            results[a.ref] = ObjectResult(a.ref, Action.failed, a.model,
                                          "not attempted: an earlier write of this model failed in this pass")
        batch = [a for a in batch if (a.model or "-") not in failed_models]
        for a, exc in _parallel(apply, batch, options.concurrency):
            results[a.ref] = _object_result(a, exc)
            if exc is None:
                applied.add(a.ref)
            else:
                failed_models.add(a.model or "-")
                if exc.retryable and aborted is None:
                    aborted = exc

    # 4. Prune what left git, in reverse kind order; not for models whose apply failed this pass.
    for a in plan.prunes:
        if a.ref in results:  # handed over in step 0
            continue
        if aborted is not None or (a.model or "-") in failed_models:
            results[a.ref] = ObjectResult(a.ref, Action.skipped, a.model,
                                          "not pruned: applies failed in this pass")
            continue
        outcome: list[str] = []
        exc = _try(lambda a=a, outcome=outcome: outcome.append(writer.prune(a, live.get(a.ref))))
        if exc is None:
            pruned.add(a.ref)
            results[a.ref] = ObjectResult(a.ref, Action.pruned, a.model, outcome[0] if outcome else a.reason)
        else:
            results[a.ref] = ObjectResult(a.ref, Action.failed, a.model, f"prune failed: {exc}", error=exc)
            if exc.retryable:
                aborted = aborted or exc

    # 5. Record the inventory (no write when it did not change).
    final = next_inventory(plan, inventory_now, applied=applied, pruned=pruned)
    if save_inventory(kube, final, previous=inventory_now):
        result.inventory_written += 1

    result.objects = [results.get(a.ref) or ObjectResult(a.ref, a.action, a.model, a.reason, refused=a.refused) for a in plan.actions]
    if aborted is not None:
        result.error = replace(aborted, message=f"sync of {env} stopped: {aborted.message}", causes=[], fix=None)

    # 6. Health of what was applied (optional wait).
    if options.wait:
        result.health = model_health(kube, plan, timeout=options.timeout)


def _object_result(a: PlannedAction, exc: KubeError | None) -> ObjectResult:
    if exc is None:
        return ObjectResult(a.ref, a.action, a.model, a.reason, refused=a.refused)
    return ObjectResult(a.ref, Action.failed, a.model, str(exc), error=exc)


def model_health(kube: Cluster, plan: SyncPlan, *, timeout: float = 300.0, interval: float = 2.0,
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
