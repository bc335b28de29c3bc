"""The entry point the sync engine calls for a model whose environment has canary on.

``reconcile_rollout(client, model, env, desired_objects, now, ...) -> RolloutResult``

One call = one tick: read the persisted state (ConfigMap ``rollout-<model>``), observe (canary
readiness, Prometheus metrics when an analysis is due), run the pure state machine, persist the new
state FIRST (optimistic concurrency: a concurrent writer makes this call fail before anything is
changed), then execute the machine's idempotent actions and converge the cluster on the state
(canary objects present while a canary runs, router weights equal to the state's weight). A crash
between the write and the actions is repaired by the next call's convergence.

The sync engine must then apply the model's desired objects EXCEPT ``result.skip`` (the stable
Deployments stay on the stable revision while a canary runs or after a rollback) and must not prune
``result.keep`` (the old pool's objects during a cross-pool canary).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Protocol

from reconciler import labels as L
from reconciler.errors import MetricsError, ReconcilerError
from reconciler.results import Action, ObjectRef, ObjectResult
from reconciler.catalog.effective import effective_canary, effective_slo
from reconciler.catalog.pools import Pool
from reconciler.catalog.specs import EnvironmentSpec, ModelSpec
from reconciler.rollout import store
from reconciler.rollout.machine import DeployCanary, Observations, Promote, Rollback, RolloutAction, SetWeight, step
from reconciler.rollout.metrics import VersionMetrics
from reconciler.rollout.routers import Backends, Router, Traffic, apply_changes, router_for
from reconciler.rollout.state import Phase, Policy, RolloutState

CANARY_SUFFIX = "-canary"


class MetricsSource(Protocol):
    def collect(self, *, model: str, track: str, now: float, interval_seconds: int, pool: str | None = None,
                namespace: str | None = None, replicas: int | None = None, hourly_price: float | None = None,
                match_track: bool = True) -> VersionMetrics: ...


@dataclass
class RolloutResult:
    model: str
    environment: str
    state: RolloutState
    actions: list[RolloutAction] = field(default_factory=list)
    results: list[ObjectResult] = field(default_factory=list)  # what this call changed in the cluster
    skip: set[ObjectRef] = field(default_factory=set)          # desired objects the sync must not apply now
    keep: set[ObjectRef] = field(default_factory=set)          # live objects the sync must not prune
    message: str = ""


# --------------------------------------------------------------------------- pure helpers


def revision_of(deployment: dict) -> str | None:
    """A Deployment's revision: its model-hash annotation, else the image of its container."""
    annotations = (deployment.get("metadata") or {}).get("annotations") or {}
    template_ann = ((deployment.get("spec") or {}).get("template") or {}).get("metadata", {}).get("annotations") or {}
    value = annotations.get(L.MODEL_HASH) or template_ann.get(L.MODEL_HASH)
    if value:
        return value
    containers = deployment.get("spec", {}).get("template", {}).get("spec", {}).get("containers") or []
    return containers[0].get("image") if containers else None


def _pool_of(obj: dict) -> str | None:
    return ((obj.get("metadata") or {}).get("labels") or {}).get(L.POOL)


def _ref(obj: dict, namespace: str) -> ObjectRef:
    meta = obj["metadata"]
    return ObjectRef(obj["apiVersion"], obj["kind"], meta.get("namespace") or namespace, meta["name"])


def _by_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o.get("kind") == kind]


def _find(objects: list[dict], kind: str, name: str) -> dict | None:
    return next((o for o in objects if o.get("kind") == kind and o["metadata"]["name"] == name), None)


def canary_objects(desired: list[dict], model: str, pool: str, namespace: str, replicas: int) -> list[dict]:
    """The canary Deployment and Service of a within-pool canary, derived from the desired ones."""
    name = f"{model}-{pool}"
    deployment = _find(desired, "Deployment", name)
    service = _find(desired, "Service", name)
    if deployment is None or service is None:
        raise ReconcilerError(f"the desired objects of {model} have no Deployment/Service {name}",
                              fix="render the model for this environment first (reconciler render)")
    dep = copy.deepcopy(deployment)
    dep["metadata"]["name"] = name + CANARY_SUFFIX
    dep["metadata"]["namespace"] = namespace
    dep["metadata"].setdefault("labels", {})[L.TRACK] = "canary"
    spec = dep["spec"]
    spec["replicas"] = replicas
    spec["selector"]["matchLabels"] = {**spec["selector"]["matchLabels"], L.TRACK: "canary"}
    spec["template"]["metadata"].setdefault("labels", {})[L.TRACK] = "canary"
    svc = copy.deepcopy(service)
    svc["metadata"]["name"] = name + CANARY_SUFFIX
    svc["metadata"]["namespace"] = namespace
    svc["metadata"].setdefault("labels", {})[L.TRACK] = "canary"
    svc["spec"]["selector"] = {**svc["spec"]["selector"], L.TRACK: "canary"}
    return [dep, svc]


def stable_service(desired: list[dict], model: str, pool: str, namespace: str) -> dict | None:
    """The per-pool Service narrowed to the stable track, so a router's stable backend excludes canary pods."""
    service = _find(desired, "Service", f"{model}-{pool}")
    if service is None:
        return None
    svc = copy.deepcopy(service)
    svc["metadata"]["namespace"] = namespace
    svc["spec"]["selector"] = {**svc["spec"]["selector"], L.TRACK: "stable"}
    return svc


def backends_for(state: RolloutState, model: str, env: EnvironmentSpec, total_replicas: int,
                 port: int = 80) -> Backends:
    stable_pool = state.stable_pool or state.canary_pool or "default"
    if state.cross_pool and state.phase is not Phase.promoted:
        canary = f"{model}-{state.canary_pool}"
    else:
        canary = f"{model}-{stable_pool}{CANARY_SUFFIX}"
    stable = f"{model}-{stable_pool}"
    return Backends(model=model, namespace=env.namespace, environment=env.name, stable_service=stable,
                    canary_service=canary, stable_deployment=stable, canary_deployment=canary, port=port,
                    total_replicas=total_replicas)


def sync_exclusions(state: RolloutState, desired: list[dict], namespace: str, revision: str | None,
                    router: str) -> tuple[set[ObjectRef], set[ObjectRef]]:
    """(skip, keep) for the sync engine, from the state: see the module docstring."""
    skip: set[ObjectRef] = set()
    keep: set[ObjectRef] = set()
    holding = state.phase.active or (state.phase is Phase.rolled_back and revision == state.canary_revision)
    if not holding:
        return skip, keep
    if state.cross_pool:
        old = f"-{state.stable_pool}"
        for kind, api in (("Deployment", "apps/v1"), ("Service", "v1"), ("HorizontalPodAutoscaler", "autoscaling/v2")):
            keep.add(ObjectRef(api, kind, namespace, state.model + old))
        for obj in desired:
            in_canary_pool = _pool_of(obj) == state.canary_pool
            scaled_by_us = router == "replicas" or state.phase is Phase.rolled_back
            if in_canary_pool and obj["kind"] in ("Deployment", "HorizontalPodAutoscaler") and scaled_by_us:
                skip.add(_ref(obj, namespace))
        return skip, keep
    for obj in desired:
        if obj["kind"] in ("Deployment", "HorizontalPodAutoscaler"):
            skip.add(_ref(obj, namespace))
        if obj["kind"] == "Service" and _pool_of(obj) == state.stable_pool:
            skip.add(_ref(obj, namespace))  # narrowed to track=stable by the controller
    return skip, keep


# --------------------------------------------------------------------------- the tick


def _spec_of(model: Any) -> ModelSpec:
    return getattr(model, "spec", model)


def _ready(obj: dict | None) -> bool:
    if obj is None:
        return False
    status = obj.get("status") or {}
    return int(status.get("readyReplicas") or 0) >= 1


def reconcile_rollout(client: Any, model: Any, env: EnvironmentSpec, desired_objects: list[dict], now: float, *,
                      pools: dict[str, Pool] | None = None, analysis: MetricsSource | None = None,
                      router: Router | None = None) -> RolloutResult:
    """Start or advance the canary of ``model`` (ModelSpec or catalog ModelEntry) in ``env``.

    ``desired_objects`` are the model's rendered objects for this environment; ``client`` is a
    reconciler.cluster.kube.KubeClient; ``pools`` (name -> Pool) gives hourly prices for cross-pool cost;
    ``analysis`` is a PrometheusAnalysis (or any MetricsSource; None means no metrics, which never
    promotes); ``router`` overrides the policy's router (e.g. GatewayAPIRouter(gateway="edge")).
    """
    spec = _spec_of(model)
    name = spec.name
    ns = env.namespace
    canary_cfg = effective_canary(spec, env)
    policy = Policy.from_spec(canary_cfg, effective_slo(spec, env))
    deployments = [d for d in _by_kind(desired_objects, "Deployment")
                   if not d["metadata"]["name"].endswith(CANARY_SUFFIX)]
    if not canary_cfg.enabled or not deployments:
        stored = store.load(client, name, ns)
        return RolloutResult(name, env.name, stored.state if stored else RolloutState(name, env.name, policy),
                             message="canary off: apply directly")
    revision = revision_of(deployments[0])
    if revision is None:
        raise ReconcilerError(f"cannot tell the revision of {deployments[0]['metadata']['name']}",
                              fix=f"annotate it with {L.MODEL_HASH} or give its container an image")
    desired_pools = [p for p in (_pool_of(d) for d in deployments) if p]
    router = router or router_for(policy.router)

    stored = store.load(client, name, ns)
    if stored is None:
        state, version = _initial_state(client, name, env, policy, revision, desired_pools), None
    else:
        state, version = stored.state.evolve(policy=policy), stored.resource_version
    stable_pool = state.stable_pool or (desired_pools[0] if desired_pools else None)
    new_pools = [p for p in desired_pools if p != stable_pool]
    canary_pool = new_pools[0] if (new_pools and stable_pool not in desired_pools) else stable_pool

    total = _total_replicas(client, deployments, ns, state)
    within = canary_pool == stable_pool
    canary_name = f"{name}-{canary_pool}{CANARY_SUFFIX}" if within else f"{name}-{canary_pool}"
    live_canary = client.get(ObjectRef("apps/v1", "Deployment", ns, canary_name)) if state.phase.active else None
    ready = True if router.name == "replicas" else _ready(live_canary)

    stable_m = canary_m = None
    notes: list[str] = []
    due = (state.phase is Phase.progressing and not state.paused and
           (state.last_analysis_at is None or now - state.last_analysis_at >= policy.interval_seconds))
    if due and analysis is not None:
        prices = pools or {}
        cross = state.cross_pool
        try:
            stable_m = analysis.collect(model=name, track="stable", now=now, interval_seconds=policy.interval_seconds,
                                        pool=state.stable_pool, namespace=ns, match_track=not cross,
                                        replicas=_replicas(client, ns, f"{name}-{state.stable_pool}"),
                                        hourly_price=_price(prices, state.stable_pool))
            canary_m = analysis.collect(model=name, track="canary", now=now, interval_seconds=policy.interval_seconds,
                                        pool=state.canary_pool, namespace=ns, match_track=not cross,
                                        replicas=_replicas(client, ns, canary_name),
                                        hourly_price=_price(prices, state.canary_pool))
        except MetricsError as exc:
            stable_m = canary_m = None  # no data: a failed check, never a promotion
            notes.append(f"metrics unavailable: {exc.message}")

    obs = Observations(revision=revision, canary_ready=ready, stable=stable_m, canary=canary_m,
                       stable_pool=stable_pool, canary_pool=canary_pool)
    actions, new_state = step(state, obs, now)
    if new_state != state or version is None:
        store.save(client, new_state, ns, version)  # before acting: a conflict stops us here

    result = RolloutResult(name, env.name, new_state, actions, message="; ".join(notes))
    port = 80
    for action in actions:
        result.results.extend(_execute(client, action, new_state, state, desired_objects, env, router, total, port))
    result.results.extend(_converge(client, new_state, desired_objects, env, router, total, port, revision))
    result.skip, result.keep = sync_exclusions(new_state, desired_objects, ns, revision, router.name)
    if new_state.history and new_state.history[-1] is not (state.history[-1] if state.history else None):
        record = new_state.history[-1]
        result.message = "; ".join([*notes, f"{record.decision}: " + "; ".join(record.reasons)])
    return result


def _initial_state(client: Any, model: str, env: EnvironmentSpec, policy: Policy, revision: str,
                   desired_pools: list[str]) -> RolloutState:
    """No ConfigMap yet: the live Deployments (if any) are the stable version."""
    selector = f"{L.MODEL}={model}"
    live = [d for d in client.list("apps/v1", "Deployment", env.namespace, label_selector=selector)
            if not d["metadata"]["name"].endswith(CANARY_SUFFIX)]
    if not live:
        return RolloutState(model, env.name, policy)  # first deployment: the machine adopts the revision
    stable = live[0]
    return RolloutState(model, env.name, policy, stable_revision=revision_of(stable), stable_pool=_pool_of(stable))


def _replicas(client: Any, namespace: str, deployment: str) -> int | None:
    live = client.get(ObjectRef("apps/v1", "Deployment", namespace, deployment))
    if live is None:
        return None
    status = live.get("status") or {}
    return int(status.get("readyReplicas") or live.get("spec", {}).get("replicas") or 0)


def _price(pools: dict[str, Pool], pool: str | None) -> float | None:
    return pools[pool].price_per_hour if pool and pool in pools else None


def _total_replicas(client: Any, deployments: list[dict], namespace: str, state: RolloutState) -> int:
    """How many replicas the replica router splits: the stable pool's desired (or live) count."""
    pool = state.stable_pool
    for dep in deployments:
        if _pool_of(dep) == pool and dep["spec"].get("replicas"):
            return int(dep["spec"]["replicas"])
    live = client.get(ObjectRef("apps/v1", "Deployment", namespace, f"{state.model}-{pool}")) if pool else None
    if live and live.get("spec", {}).get("replicas"):
        return int(live["spec"]["replicas"])
    return 2


def _applied(client: Any, obj: dict, namespace: str, message: str) -> ObjectResult:
    client.apply(obj)
    return ObjectResult(_ref(obj, namespace), Action.configured, obj["metadata"].get("labels", {}).get(L.MODEL), message)


def _route(client: Any, router: Router, backends: Backends, weight: int, model: str) -> list[ObjectResult]:
    changes = router.changes(backends, Traffic(weight))
    apply_changes(client, changes)
    return [ObjectResult(c.ref, Action.configured, model, c.note) for c in changes]


def _delete(client: Any, ref: ObjectRef, model: str, why: str) -> list[ObjectResult]:
    return [ObjectResult(ref, Action.pruned, model, why)] if client.delete(ref) else []


def _execute(client: Any, action: RolloutAction, state: RolloutState, before: RolloutState, desired: list[dict],
             env: EnvironmentSpec, router: Router, total: int, port: int) -> list[ObjectResult]:
    ns, model = env.namespace, state.model
    out: list[ObjectResult] = []
    if isinstance(action, DeployCanary):
        if state.cross_pool:
            for obj in desired:
                if _pool_of(obj) == state.canary_pool:
                    body = {**copy.deepcopy(obj), "metadata": {**obj["metadata"], "namespace": ns}}
                    if obj["kind"] == "Deployment" and router.name == "replicas":
                        body["spec"] = {**body["spec"], "replicas": 0}
                    out.append(_applied(client, body, ns, f"canary {action.revision} in pool {state.canary_pool}"))
        else:
            replicas = 0 if router.name == "replicas" else total
            for obj in canary_objects(desired, model, state.stable_pool, ns, replicas):
                out.append(_applied(client, obj, ns, f"canary {action.revision}"))
            svc = stable_service(desired, model, state.stable_pool, ns)
            if svc is not None and router.name != "replicas":
                out.append(_applied(client, svc, ns, "stable Service narrowed to track=stable"))
    elif isinstance(action, SetWeight):
        out.extend(_route(client, router, backends_for(state if state.phase.active else before, model, env, total, port),
                          action.canary_weight, model))
    elif isinstance(action, Promote):
        if before.phase.active or before.stable_revision is None:
            for obj in desired:  # the stable Deployments move to the promoted revision
                if obj["kind"] in ("Deployment", "HorizontalPodAutoscaler", "Service"):
                    body = {**copy.deepcopy(obj), "metadata": {**obj["metadata"], "namespace": ns}}
                    out.append(_applied(client, body, ns, f"promoted {action.revision}"))
            if before.stable_revision is not None and router.name != "replicas":
                # every backend is the (new) stable Service: no weight points at a removed canary
                promoted = backends_for(state, model, env, total, port)
                promoted = Backends(**{**promoted.__dict__, "canary_service": promoted.stable_service})
                out.extend(_route(client, router, promoted, 0, model))
            if not before.cross_pool and before.stable_revision is not None:
                out.extend(_remove_canary(client, state, ns))
    elif isinstance(action, Rollback):
        if before.cross_pool:
            ref = ObjectRef("apps/v1", "Deployment", ns, f"{model}-{before.canary_pool}")
            if client.get(ref) is not None:
                client.patch(ref, {"spec": {"replicas": 0}})
                out.append(ObjectResult(ref, Action.configured, model, "rolled back: scaled to 0"))
        else:
            out.extend(_remove_canary(client, state, ns))
    return out


def _remove_canary(client: Any, state: RolloutState, ns: str) -> list[ObjectResult]:
    name = f"{state.model}-{state.stable_pool}{CANARY_SUFFIX}"
    out = []
    for api, kind in (("apps/v1", "Deployment"), ("v1", "Service")):
        out.extend(_delete(client, ObjectRef(api, kind, ns, name), state.model, "canary removed"))
    return out


def _converge(client: Any, state: RolloutState, desired: list[dict], env: EnvironmentSpec, router: Router,
              total: int, port: int, revision: str | None) -> list[ObjectResult]:
    """Repair what a crash between the state write and the actions could have left undone."""
    if not state.phase.active or state.canary_revision != revision:
        return []
    out: list[ObjectResult] = []
    ns = env.namespace
    if not state.cross_pool and state.stable_pool:
        name = f"{state.model}-{state.stable_pool}{CANARY_SUFFIX}"
        if client.get(ObjectRef("apps/v1", "Deployment", ns, name)) is None:
            replicas = 0 if router.name == "replicas" else total
            for obj in canary_objects(desired, state.model, state.stable_pool, ns, replicas):
                out.append(_applied(client, obj, ns, "canary re-created"))
    if state.phase is Phase.progressing and router.name != "replicas":
        backends = backends_for(state, state.model, env, total, port)
        for change in router.changes(backends, Traffic(state.canary_weight)):
            live = client.get(change.ref)
            if live is None or _weights(live.get("spec")) != _weights(change.body.get("spec")):
                apply_changes(client, [change])
                out.append(ObjectResult(change.ref, Action.configured, state.model, "weights re-applied"))
    return out


def _weights(node: Any) -> list[Any]:
    """Every backend name/host and weight in a route spec, in order (what a router decides)."""
    found: list[Any] = []
    if isinstance(node, dict):
        for key in sorted(node):
            if key in ("weight", "name", "host", "percent", "value"):
                found.append((key, node[key]))
            found.extend(_weights(node[key]))
    elif isinstance(node, list):
        for item in node:
            found.extend(_weights(item))
    return found
