"""The entry point the sync engine calls for a model whose environment has canary on.

Over 400 lines (422): the executor of every action of the state machine lives here beside the
reads it needs; helper i12 owns this module and is changing it in this session, so the split
(reads / action executor) is left to that work.

``reconcile_rollout(client, model, env, desired_objects, now, ...) -> RolloutResult``

One call = one tick, and it WRITES NOTHING. It reads (the persisted state in ConfigMap
``rollout-<model>``, the live Deployments for readiness and replica counts, Prometheus when an
analysis is due), runs the pure state machine, and returns every object the model must have in
the cluster now (``result.objects``): the rendered objects as the rollout needs them, the canary
Deployment and Service, the HTTPRoute or VirtualService, and the state ConfigMap. The sync engine
then treats them like any other object of the environment: a server-side dry run validates all of
them before anything is applied, the inventory owns them, and whatever the rollout no longer needs
(a canary after promotion or rollback, the old pool after a cross-pool move, everything of a model
removed from git) is pruned by the ordinary inventory diff. ``result.protect`` lists owned objects
git no longer renders that the rollout still holds (the stable Deployment on the old revision
during a canary, the old pool during a cross-pool move).

The state ConfigMap goes first (ConfigMaps apply before Services, Deployments and routes) and
carries the resourceVersion it was read with, so a concurrent writer makes that apply fail with a
conflict and the sync applies nothing else of that model in the pass.

Replica counts (``canary_replicas``): with the Gateway API or Istio routers the canary runs
``ceil(full x weight)`` replicas (Argo Rollouts' setCanaryScale), which saves accelerator hours and
makes both pools' cost per 1,000 inferences comparable. The replica router never writes the
stable Deployment (an HPA or a KEDA ScaledObject may own its replicas): the canary alone is scaled, to
``round(stable x w / (100 - w))`` replicas capped at the stable's count, and the weight reported
is what the ready pods achieve, ``canary / (stable + canary)``.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from reconciler.cluster.protocol import Cluster
from reconciler import labels as L
from reconciler.errors import MetricsError, ReconcilerError
from reconciler.results import ObjectRef, ObjectResult
from reconciler.catalog.effective import effective_canary, effective_slo
from reconciler.catalog.pools import Pool
from reconciler.catalog.specs import EnvironmentSpec, ModelSpec
from reconciler.rollout import store
from reconciler.rollout.machine import Observations, RolloutAction, history_layout, step
from reconciler.rollout.metrics import VersionMetrics
from reconciler.rollout.state import Phase, Policy, RolloutState
from reconciler.rollout.warmup import model_warmup
from reconciler.traffic import Backends, Router, Traffic, router_for, router_kind, with_capability
from reconciler import net
from reconciler.render.content_hash import with_content_hash
import httpx

CANARY_SUFFIX = "-canary"
# what sizes a pool: its Deployment and the autoscaler owning its replicas (an HPA, or a KEDA ScaledObject,
# which drives an HPA of its own); during a canary they stay on the stable revision
AUTOSCALERS = {"HorizontalPodAutoscaler": ("autoscaling/v2", "minReplicas"),
               "ScaledObject": ("keda.sh/v1alpha1", "minReplicaCount")}
SCALED_KINDS = ("Deployment", *AUTOSCALERS)


class MetricsSource(Protocol):
    def collect(self, *, model: str, track: str, now: float, interval_seconds: int, pool: str | None = None,
                namespace: str | None = None, replicas: int | None = None, hourly_price: float | None = None,
                match_track: bool = True, full_replicas: int | None = None) -> VersionMetrics: ...


@dataclass
class RolloutResult:
    model: str
    environment: str
    state: RolloutState
    actions: list[RolloutAction] = field(default_factory=list)
    objects: list[dict] = field(default_factory=list)          # the model's objects for this pass
    protect: dict[ObjectRef, str] = field(default_factory=dict)  # owned, not rendered, still held
    results: list[ObjectResult] = field(default_factory=list)  # kept for callers; the sync reports writes
    message: str = ""
    achieved_weight: float | None = None
    metrics_error: str | None = None  # this pass's measurement error (Prometheus could not be asked), if any


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


def _find(objects: list[dict], kind: str, name: str) -> dict | None:
    return next((o for o in objects if o.get("kind") == kind and o["metadata"]["name"] == name), None)


def _rehash(obj: dict) -> dict:
    """A derived object gets the content hash of what it now says (the plan compares hashes)."""

    return with_content_hash(obj)


def full_replicas(desired: list[dict], model: str, pool: str | None) -> int | None:
    """Replicas the pool runs for the model when it serves all traffic: the rendered count, else its autoscaler's
    minimum (an HPA's minReplicas, a ScaledObject's minReplicaCount; 1 for a model that may scale to zero)."""
    if pool is None:
        return None
    dep = _find(desired, "Deployment", f"{model}-{pool}")
    if dep is not None and dep["spec"].get("replicas") is not None:
        return int(dep["spec"]["replicas"])
    for kind, (_, minimum) in AUTOSCALERS.items():
        scaler = _find(desired, kind, f"{model}-{pool}")
        if scaler is not None:  # at least 1: a model that may scale to zero still serves with one
            return max(1, int(scaler["spec"].get(minimum) or 1))
    return None


def canary_replicas(router: str, weight: int, full: int, stable: int, phase: Phase) -> int:
    """How many replicas the canary runs at ``weight`` % with the router named ``router``. Pure; see the
    module docstring."""
    full, stable = max(full, 1), max(stable, 1)
    if phase is Phase.promoting:
        return full
    if router_kind(router).weight_by == "replicas":
        if weight >= 100:
            return stable
        return min(stable, max(1, round(stable * weight / (100 - weight))))
    return max(1, math.ceil(full * weight / 100))


def achieved_weight(router: str, weight: int, stable_ready: int, canary_ready: int) -> float:
    """The share of traffic the canary really gets (%): what the router verifies (by ready pods for the
    replica router), else the weight it wrote once the canary has a ready pod."""
    verify = router_kind(router).verify
    if verify is not None:
        return verify(weight, stable_ready, canary_ready)
    return float(weight) if canary_ready > 0 or weight == 0 else 0.0


def check_router(model: str, policy: Policy, router: Router) -> None:
    """Refuse a policy that asks the router for what its registry entry says it cannot do. Pure."""
    can = router_kind(router.name).capabilities
    for asked, spec_field, capability in ((policy.ab_header, "canary.abHeader", "header_routing"),
                                          (policy.mirror_percent, "canary.mirrorPercent", "mirroring")):
        if asked and not getattr(can, capability):
            raise ReconcilerError(f"{model}: {spec_field} needs a router with {capability.replace('_', ' ')}; the "
                                  f"{router.name} router has none",
                                  fix=f"set canary.router to one of {', '.join(with_capability(capability))} in the "
                                      "model or environment spec")


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
    return [_rehash(dep), _rehash(svc)]


def stable_service(desired: list[dict], model: str, pool: str, namespace: str) -> dict | None:
    """The per-pool Service narrowed to the stable track, so a router's stable backend excludes canary pods."""
    service = _find(desired, "Service", f"{model}-{pool}")
    if service is None:
        return None
    svc = copy.deepcopy(service)
    svc["metadata"]["namespace"] = namespace
    svc["spec"]["selector"] = {**svc["spec"]["selector"], L.TRACK: "stable"}
    return _rehash(svc)


def backends_for(state: RolloutState, model: str, env: EnvironmentSpec, total_replicas: int = 2,
                 port: int = 80) -> Backends:
    """Stable and canary backends of the state; once no canary runs, both are the stable Service."""
    stable_pool = state.stable_pool or state.canary_pool or "default"
    stable = f"{model}-{stable_pool}"
    if state.phase in (Phase.initializing, Phase.progressing, Phase.promoting):
        canary = f"{model}-{state.canary_pool}" if state.cross_pool else f"{stable}{CANARY_SUFFIX}"
    else:
        canary = stable
    return Backends(model=model, namespace=env.namespace, environment=env.name, stable_service=stable,
                    canary_service=canary, stable_deployment=stable, canary_deployment=canary, port=port,
                    total_replicas=total_replicas)


def traffic_for(state: RolloutState) -> Traffic:
    running = state.phase in (Phase.initializing, Phase.progressing, Phase.promoting)
    policy = state.policy
    return Traffic(state.canary_weight if running else 0, header=policy.ab_header if running else None,
                   mirror_percent=policy.mirror_percent if running else None)


def _namespaced(obj: dict, namespace: str) -> dict:
    body = copy.deepcopy(obj)
    body["metadata"]["namespace"] = body["metadata"].get("namespace") or namespace
    return body


def _scaled(obj: dict, namespace: str, replicas: int) -> dict:
    body = _namespaced(obj, namespace)
    body["spec"]["replicas"] = replicas
    return _rehash(body)


def rollout_objects(state: RolloutState, desired: list[dict], env: EnvironmentSpec, router: Router, *,
                    revision: str | None, stable_replicas: int, state_version: str | None
                    ) -> tuple[list[dict], dict[ObjectRef, str]]:
    """Every object of the model for this pass, and the owned objects the rollout holds. Pure.

    See the module docstring for what each phase needs; the state ConfigMap is always included."""
    ns, model = env.namespace, state.model
    objects: list[dict] = []
    protect: dict[ObjectRef, str] = {}
    holding = state.phase.active or (state.phase is Phase.rolled_back and revision == state.canary_revision)
    why = f"held by the canary of {model} ({state.phase.value})"
    by_route = router_kind(router.name).weight_by == "route"
    if not holding:
        objects.extend(_namespaced(o, ns) for o in desired)
    elif state.cross_pool:
        old = f"{model}-{state.stable_pool}"
        for api, kind in (("apps/v1", "Deployment"), ("v1", "Service"), *((a, k) for k, (a, _) in AUTOSCALERS.items())):
            protect[ObjectRef(api, kind, ns, old)] = why
        full = full_replicas(desired, model, state.canary_pool) or 1
        for obj in desired:
            in_canary_pool = _pool_of(obj) == state.canary_pool
            if in_canary_pool and obj["kind"] in AUTOSCALERS and state.phase is not Phase.promoting:
                protect[_ref(obj, ns)] = why  # the rollout sizes the new pool until it is promoted
                continue
            if in_canary_pool and obj["kind"] == "Deployment":
                if state.phase is Phase.promoting:
                    objects.append(_namespaced(obj, ns) if obj["spec"].get("replicas") is not None
                                   else _scaled(obj, ns, full))
                elif state.phase is Phase.rolled_back:
                    objects.append(_scaled(obj, ns, 0))
                else:
                    objects.append(_scaled(obj, ns, canary_replicas(router.name, state.canary_weight, full,
                                                                    stable_replicas, state.phase)))
                continue
            objects.append(_namespaced(obj, ns))
    else:
        pool = state.stable_pool or ""
        promoting = state.phase is Phase.promoting
        for obj in desired:
            if obj["kind"] in SCALED_KINDS and not promoting:
                protect[_ref(obj, ns)] = why  # stays on the stable revision while the canary runs
                continue
            if by_route and obj["kind"] == "Service" and obj["metadata"]["name"] == f"{model}-{pool}":
                svc = stable_service(desired, model, pool, ns)
                if svc is not None:
                    objects.append(svc)
                continue
            objects.append(_namespaced(obj, ns))
        if state.phase.active:
            full = full_replicas(desired, model, pool) or 1
            replicas = canary_replicas(router.name, state.canary_weight, full, stable_replicas, state.phase)
            objects.extend(canary_objects(desired, model, pool, ns, replicas))
    if by_route:
        for change in router.changes(backends_for(state, model, env), traffic_for(state)):
            objects.append(_rehash(change.body))
    cm = store.to_configmap(state, ns, state_version)
    objects.append(store.with_state_hash(cm))
    return objects, protect


# --------------------------------------------------------------------------- the tick (reads only)


def _spec_of(model: Any) -> ModelSpec:
    return getattr(model, "spec", model)


def _status(obj: dict | None) -> dict:
    return (obj or {}).get("status") or {}


def ready_at(obj: dict | None, replicas: int, revision: str | None = None) -> bool:
    """The Deployment has rolled out ``revision`` and has at least ``replicas`` ready, available pods."""
    if obj is None:
        return False
    status = _status(obj)
    if int(status.get("observedGeneration") or 0) < int((obj.get("metadata") or {}).get("generation") or 0):
        return False
    if revision is not None and revision_of(obj) != revision:
        return False
    want = max(replicas, 1)
    return all(int(status.get(key) or 0) >= want for key in ("readyReplicas", "availableReplicas", "updatedReplicas"))


def reconcile_rollout(client: Cluster, model: Any, env: EnvironmentSpec, desired_objects: list[dict], now: float, *,
                      pools: dict[str, Pool] | None = None, analysis: MetricsSource | None = None,
                      router: Router | None = None, confirm: Any = None) -> RolloutResult:
    """One tick of the canary of ``model`` (ModelSpec or catalog ModelEntry) in ``env``; writes nothing.

    ``desired_objects`` are the model's rendered objects for this environment; ``client`` is a
    reconciler.kube.KubeClient (only read here); ``pools`` (name -> Pool) gives hourly prices;
    ``analysis`` is a PrometheusAnalysis (or any MetricsSource; None means no metrics, which never
    promotes); ``router`` overrides the policy's router; ``confirm`` is a callable(state) -> bool for
    the confirm-promotion webhook (default: POST to ``canary.confirmWebhook`` when set).
    """
    spec = _spec_of(model)
    name = spec.name
    ns = env.namespace
    canary_cfg = effective_canary(spec, env)
    policy = Policy.from_spec(canary_cfg, effective_slo(spec, env))
    deployments = [d for d in desired_objects if d.get("kind") == "Deployment"
                   and not d["metadata"]["name"].endswith(CANARY_SUFFIX)]
    policy = replace(policy, warmup_seconds=model_warmup(canary_cfg.warmup_seconds, deployments)[0])
    stored = store.load(client, name, ns)
    if not canary_cfg.enabled or not deployments:
        state = stored.state if stored else RolloutState(name, env.name, policy)
        return RolloutResult(name, env.name, state, objects=[_namespaced(o, ns) for o in desired_objects],
                             message="canary off: apply directly")
    revision = revision_of(deployments[0])
    if revision is None:
        raise ReconcilerError(f"cannot tell the revision of {deployments[0]['metadata']['name']}",
                              fix=f"annotate it with {L.MODEL_HASH} or give its container an image")
    desired_pools = [p for p in (_pool_of(d) for d in deployments) if p]
    router = router or router_for(canary_cfg.router, canary_cfg.router_options, domain=policy.route_domain)
    check_router(name, policy, router)

    if stored is None:
        state, version = _initial_state(client, name, env, policy, revision, desired_pools), None
    else:
        state, version = stored.state.evolve(policy=policy), stored.resource_version
    stable_pool = state.stable_pool or (desired_pools[0] if desired_pools else None)
    new_pools = [p for p in desired_pools if p != stable_pool]
    canary_pool = new_pools[0] if (new_pools and stable_pool not in desired_pools) else stable_pool
    within = canary_pool == stable_pool
    canary_name = f"{name}-{canary_pool}{CANARY_SUFFIX}" if within else f"{name}-{canary_pool}"
    stable_name = f"{name}-{stable_pool}"

    live_stable = client.get(ObjectRef("apps/v1", "Deployment", ns, stable_name)) if stable_pool else None
    live_canary = client.get(ObjectRef("apps/v1", "Deployment", ns, canary_name)) if state.phase.active else None
    stable_replicas = int((live_stable or {}).get("spec", {}).get("replicas") or 0) or \
        (full_replicas(desired_objects, name, stable_pool) or 1)
    stable_ready = int(_status(live_stable).get("readyReplicas") or 0)
    canary_ready_pods = int(_status(live_canary).get("readyReplicas") or 0)
    full_canary = full_replicas(desired_objects, name, canary_pool) or 1
    want = canary_replicas(router.name, max(state.canary_weight, 0), full_canary, stable_replicas,
                           Phase.progressing) if state.phase.active else 1
    ready = ready_at(live_canary, want if state.phase is Phase.progressing else 1)
    achieved = achieved_weight(router.name, state.canary_weight, stable_ready, canary_ready_pods) \
        if state.phase is Phase.progressing else None
    promoted_name = canary_name if not within else stable_name
    promoted_ready = False
    if state.phase is Phase.promoting:
        promoted_ready = ready_at(client.get(ObjectRef("apps/v1", "Deployment", ns, promoted_name)),
                                  full_canary, state.canary_revision)

    stable_m = canary_m = None
    notes: list[str] = []
    metrics_error = None
    history: tuple[VersionMetrics, ...] = ()
    due = (state.phase in (Phase.progressing, Phase.initializing) and not state.paused and
           (state.last_analysis_at is None or now - state.last_analysis_at >= policy.interval_seconds))
    if due and analysis is not None:
        prices = pools or {}
        cross = state.cross_pool or not within
        try:
            stable_m = analysis.collect(model=name, track="stable", now=now, interval_seconds=policy.interval_seconds,
                                        pool=stable_pool, namespace=ns, match_track=not cross,
                                        replicas=stable_ready or None, hourly_price=_price(prices, stable_pool),
                                        full_replicas=stable_replicas)
            if state.phase is Phase.progressing:
                canary_m = analysis.collect(model=name, track="canary", now=now,
                                            interval_seconds=policy.interval_seconds, pool=canary_pool, namespace=ns,
                                            match_track=not cross, replicas=canary_ready_pods or None,
                                            hourly_price=_price(prices, canary_pool), full_replicas=full_canary)
        except MetricsError as exc:
            stable_m = canary_m = None  # a measurement error: neither a pass nor a failure
            metrics_error = exc.message
            notes.append(f"metrics unavailable: {exc.message}")
        if state.phase is Phase.initializing and not state.evidence.windows and stable_m is not None:
            history = _stable_history(analysis, state, now, name=name, pool=stable_pool, namespace=ns, cross=cross,
                                      replicas=stable_ready or None, price=_price(prices, stable_pool),
                                      full=stable_replicas)
            if history:
                notes.append(f"read stable's last {len(history)} windows as its baseline")
    confirmed = None
    at_last = state.phase is Phase.progressing and state.step_index >= len(policy.steps) - 1 and due
    if at_last and (confirm is not None or policy.confirm_url):
        confirmed = (confirm or _webhook(policy.confirm_url))(state)

    obs = Observations(revision=revision, canary_ready=ready, stable=stable_m, canary=canary_m,
                       stable_pool=stable_pool, canary_pool=canary_pool, achieved_weight=achieved,
                       promoted_ready=promoted_ready, promotion_confirmed=confirmed, metrics_error=metrics_error,
                       stable_history=history)
    actions, new_state = step(state, obs, now)
    objects, protect = rollout_objects(new_state, desired_objects, env, router, revision=revision,
                                       stable_replicas=stable_replicas, state_version=version)
    result = RolloutResult(name, env.name, new_state, actions, objects=objects, protect=protect,
                           message="; ".join(notes), achieved_weight=achieved, metrics_error=metrics_error)
    if new_state.history and new_state.history[-1] is not (state.history[-1] if state.history else None):
        record = new_state.history[-1]
        result.message = "; ".join([*notes, f"{record.decision}: " + "; ".join(record.reasons)])
    return result


def _stable_history(analysis: MetricsSource, state: RolloutState, now: float, *, name: str, pool: str | None,
                    namespace: str, cross: bool, replicas: int | None, price: float | None,
                    full: int | None) -> tuple[VersionMetrics, ...]:
    """Stable's recent windows (machine.history_layout), read once when a canary starts: the baseline its
    comparison and dispersion estimate need. At the first window Prometheus cannot give, it stops (a slow
    Prometheus is not asked 24 times within one pass)."""
    count, seconds = history_layout(state.policy.interval_seconds)
    windows = []
    for j in range(count - 1, -1, -1):
        try:
            windows.append(analysis.collect(model=name, track="stable", now=now - j * seconds, interval_seconds=seconds,
                                            pool=pool, namespace=namespace, match_track=not cross, replicas=replicas,
                                            hourly_price=price, full_replicas=full))
        except MetricsError:
            break
    return tuple(w for w in windows if w.has_data)


def _webhook(url: str | None, deadline: float = 10.0) -> Any:
    """Flagger's confirm-promotion webhook: HTTP 200 to a POST of the rollout means "go ahead"; no whole
    answer within ``deadline`` seconds is no confirmation."""
    def ask(state: RolloutState) -> bool:
        payload = {"name": state.model, "environment": state.environment, "phase": "Promoting",
                   "revision": state.canary_revision, "stable": state.stable_revision, "weight": state.canary_weight}
        try:
            return net.post(url or "", json=payload, deadline=deadline).status_code == 200
        except httpx.HTTPError:
            return False  # unreachable: not confirmed (the step holds; the progress deadline still applies)
    return ask


def _initial_state(client: Cluster, model: str, env: EnvironmentSpec, policy: Policy, revision: str,
                   desired_pools: list[str]) -> RolloutState:
    """No ConfigMap yet: the live Deployments (if any) are the stable version."""
    selector = f"{L.MODEL}={model}"
    live = [d for d in client.list("apps/v1", "Deployment", env.namespace, label_selector=selector)
            if not d["metadata"]["name"].endswith(CANARY_SUFFIX)]
    if not live:
        return RolloutState(model, env.name, policy)  # first deployment: the machine adopts the revision
    stable = live[0]
    return RolloutState(model, env.name, policy, stable_revision=revision_of(stable), stable_pool=_pool_of(stable))


def _price(pools: dict[str, Pool], pool: str | None) -> float | None:
    return pools[pool].price_per_hour if pool and pool in pools else None
