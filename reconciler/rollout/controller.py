"""The entry point the sync engine calls for a model whose environment has canary on.

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

The objects themselves (canary Deployment and Service, the stable track held or scaled, the router's objects,
the replica arithmetic) are built purely in reconciler.rollout.objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from reconciler.cluster.protocol import Cluster
from reconciler import labels as L
from reconciler.errors import MetricsError, ReconcilerError
from reconciler.results import ObjectRef, ObjectResult
from reconciler.catalog.effective import effective_canary, effective_slo
from reconciler.catalog.load import ModelEntry
from reconciler.catalog.pools import Pool
from reconciler.catalog.specs import EnvironmentSpec, ModelSpec
from reconciler.rollout import store
from reconciler.rollout.machine import Observations, RolloutAction, history_layout, step
from reconciler.rollout.metrics import VersionMetrics
from reconciler.rollout.objects import (CANARY_SUFFIX, achieved_weight, canary_replicas, full_replicas, namespaced,
                                         pool_of, ready_at, revision_of, rollout_objects, status_of)
from reconciler.rollout.state import Phase, Policy, RolloutState
from reconciler.rollout.warmup import model_warmup
from reconciler.traffic import Router, router_for, router_kind, with_capability
from reconciler import net
import httpx


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


# --------------------------------------------------------------------------- the tick (reads only)


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


def _spec_of(model: ModelEntry | ModelSpec) -> ModelSpec:
    return model.spec if isinstance(model, ModelEntry) else model


def reconcile_rollout(client: Cluster, model: ModelEntry | ModelSpec, env: EnvironmentSpec, desired_objects: list[dict], now: float, *,
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
        return RolloutResult(name, env.name, state, objects=[namespaced(o, ns) for o in desired_objects],
                             message="canary off: apply directly")
    revision = revision_of(deployments[0])
    if revision is None:
        raise ReconcilerError(f"cannot tell the revision of {deployments[0]['metadata']['name']}",
                              fix=f"annotate it with {L.MODEL_HASH} or give its container an image")
    desired_pools = [p for p in (pool_of(d) for d in deployments) if p]
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
    stable_ready = int(status_of(live_stable).get("readyReplicas") or 0)
    canary_ready_pods = int(status_of(live_canary).get("readyReplicas") or 0)
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
    return RolloutState(model, env.name, policy, stable_revision=revision_of(stable), stable_pool=pool_of(stable))


def _price(pools: dict[str, Pool], pool: str | None) -> float | None:
    return pools[pool].price_per_hour if pool and pool in pools else None
