"""The objects of a model's rollout, from its rendered ones. Pure: what one tick of the controller
(reconciler.rollout.controller) asks the sync to apply and to hold, and what a live Deployment says.

``rollout_objects(state, desired, env, router, ...) -> (objects, protect)``: the rendered objects as the rollout
needs them (the stable track held on its revision while a canary runs, or the new pool sized during a
cross-pool move), the canary Deployment and Service (``canary_objects``), the route router's HTTPRoute or
VirtualService, and the state ConfigMap.

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

from reconciler import labels as L
from reconciler.catalog.specs import EnvironmentSpec
from reconciler.errors import ReconcilerError
from reconciler.render.content_hash import with_content_hash
from reconciler.results import ObjectRef
from reconciler.rollout import store
from reconciler.rollout.state import Phase, RolloutState
from reconciler.traffic import Backends, Router, Traffic, router_kind

CANARY_SUFFIX = "-canary"
# what sizes a pool: its Deployment and the autoscaler owning its replicas (an HPA, or a KEDA ScaledObject,
# which drives an HPA of its own); during a canary they stay on the stable revision
AUTOSCALERS = {"HorizontalPodAutoscaler": ("autoscaling/v2", "minReplicas"),
               "ScaledObject": ("keda.sh/v1alpha1", "minReplicaCount")}
SCALED_KINDS = ("Deployment", *AUTOSCALERS)


def revision_of(deployment: dict) -> str | None:
    """A Deployment's revision: its model-hash annotation, else the image of its container."""
    annotations = (deployment.get("metadata") or {}).get("annotations") or {}
    template_ann = ((deployment.get("spec") or {}).get("template") or {}).get("metadata", {}).get("annotations") or {}
    value = annotations.get(L.MODEL_HASH) or template_ann.get(L.MODEL_HASH)
    if value:
        return value
    containers = deployment.get("spec", {}).get("template", {}).get("spec", {}).get("containers") or []
    return containers[0].get("image") if containers else None


def pool_of(obj: dict) -> str | None:
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


def namespaced(obj: dict, namespace: str) -> dict:
    body = copy.deepcopy(obj)
    body["metadata"]["namespace"] = body["metadata"].get("namespace") or namespace
    return body


def _scaled(obj: dict, namespace: str, replicas: int) -> dict:
    body = namespaced(obj, namespace)
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
        objects.extend(namespaced(o, ns) for o in desired)
    elif state.cross_pool:
        old = f"{model}-{state.stable_pool}"
        for api, kind in (("apps/v1", "Deployment"), ("v1", "Service"), *((a, k) for k, (a, _) in AUTOSCALERS.items())):
            protect[ObjectRef(api, kind, ns, old)] = why
        full = full_replicas(desired, model, state.canary_pool) or 1
        for obj in desired:
            in_canary_pool = pool_of(obj) == state.canary_pool
            if in_canary_pool and obj["kind"] in AUTOSCALERS and state.phase is not Phase.promoting:
                protect[_ref(obj, ns)] = why  # the rollout sizes the new pool until it is promoted
                continue
            if in_canary_pool and obj["kind"] == "Deployment":
                if state.phase is Phase.promoting:
                    objects.append(namespaced(obj, ns) if obj["spec"].get("replicas") is not None
                                   else _scaled(obj, ns, full))
                elif state.phase is Phase.rolled_back:
                    objects.append(_scaled(obj, ns, 0))
                else:
                    objects.append(_scaled(obj, ns, canary_replicas(router.name, state.canary_weight, full,
                                                                    stable_replicas, state.phase)))
                continue
            objects.append(namespaced(obj, ns))
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
            objects.append(namespaced(obj, ns))
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


def status_of(obj: dict | None) -> dict:
    return (obj or {}).get("status") or {}


def ready_at(obj: dict | None, replicas: int, revision: str | None = None) -> bool:
    """The Deployment has rolled out ``revision`` and has at least ``replicas`` ready, available pods."""
    if obj is None:
        return False
    status = status_of(obj)
    if int(status.get("observedGeneration") or 0) < int((obj.get("metadata") or {}).get("generation") or 0):
        return False
    if revision is not None and revision_of(obj) != revision:
        return False
    want = max(replicas, 1)
    return all(int(status.get(key) or 0) >= want for key in ("readyReplicas", "availableReplicas", "updatedReplicas"))
