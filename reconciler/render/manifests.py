"""Pure generation of the Kubernetes objects for one model in one environment.

Per pool the model serves from: a Deployment `<model>-<pool>`, a Service `<model>-<pool>` (the
backend a traffic router weights), and an autoscaler when autoscaling is set: a HorizontalPodAutoscaler on
CPU utilisation, or a KEDA ScaledObject whose Prometheus trigger follows the service's own request metrics
(in-flight requests or requests per second per replica; the default on accelerator pools) and which may
scale an idle model to zero. One Service `<model>` selects every pool, for clients that do not care where a
model runs.
Pool placement (nodeSelector, tolerations, device resource, hugepages, capabilities, rollout
strategy) comes from environments/pools.yaml; nothing here talks to any server.
"""

from __future__ import annotations

import json
import math

from reconciler import labels as L, probes
from reconciler.catalog.load import ModelEntry
from reconciler.catalog.effective import (EffectiveServing, canary_max_p95_ms, canary_queries, canary_setting, effective_slo,
                                          startup_seconds)
from reconciler.catalog.buckets import duration_buckets
from reconciler.catalog.pools import Pool
from reconciler.catalog.specs import EnvironmentSpec
from reconciler.catalog.images import image_key
from reconciler.render.autoscaling import autoscaler
from reconciler.errors import ValidationError

CONTAINER = "bento"
PROBE_PERIOD = 5  # seconds between startupProbe attempts: the budget is PROBE_PERIOD x failureThreshold
# Kubernetes' default progressDeadlineSeconds: what a rollout may take to schedule, pull and start a pod. A model's
# Deployment gets this beside its startup budget, so a load within `serving.startup` is not a stalled rollout
# (ProgressDeadlineExceeded, which sync health reports as degraded) before the startupProbe gives up
PROGRESS_ALLOWANCE = 600
CONFIG_ENV = "BENTOML_CONFIG_OVERRIDES"  # BentoML 1.4: JSON merged over the service's own config at start
MAX_BATCH_SIZE_ENV = "MODEL_MAX_BATCH_SIZE"  # read by pipelines.serving.batching() in the service's @bentoml.api
MAX_LATENCY_ENV = "MODEL_MAX_LATENCY_MS"
# `bentoml containerize` images run as the user `bentoml` with this fixed uid/gid (BentoML's Dockerfile
# template, BENTOML_USER_UID/GID); a numeric runAsUser lets the kubelet enforce runAsNonRoot on a named USER
BENTO_UID = 1034
# where BentoML writes at run time, under the read-only root filesystem: an emptyDir at /tmp, and BENTOML_HOME
# (the image says /home/bentoml/, where `bentoml serve` creates bentos/, models/, envs/, tmp/ and its Prometheus
# multiprocess directory at start) moved into it; the bento itself stays at $BENTO_PATH (/home/bentoml/bento)
WRITABLE_DIRS = {"tmp": "/tmp"}
BENTOML_HOME = "/tmp/bentoml"


def selector_labels(model: str, pool: str | None = None) -> dict[str, str]:
    result = {L.MODEL: model}
    if pool is not None:
        result[L.POOL] = pool
    return result


def ownership_labels(model: str, env: str, pool: str | None = None) -> dict[str, str]:
    result = {L.MANAGED_BY: L.MANAGER, L.NAME: model, L.MODEL: model, L.ENVIRONMENT: env}
    if pool is not None:
        result[L.POOL] = pool
    return result


def _resources(serving: EffectiveServing, pool: Pool) -> dict[str, dict[str, str]]:
    requests = {"cpu": serving.cpu, "memory": serving.memory}
    limits = {"memory": serving.memory}
    if pool.device is not None:
        # extended resources: requests must equal limits
        requests[pool.device.resource] = limits[pool.device.resource] = str(pool.device.count)
    if pool.hugepages_2mi is not None:
        requests["hugepages-2Mi"] = limits["hugepages-2Mi"] = pool.hugepages_2mi
    return {"requests": requests, "limits": limits}


def _match(selector: dict[str, str]) -> list[dict]:
    return [{"key": k, "operator": "In", "values": [v]} for k, v in sorted(selector.items())]


def placement(pool: Pool, fallback: Pool | None = None) -> dict:
    """nodeSelector / affinity / tolerations of a pod on `pool` (pod spec fields). Pure.

    A spot pool pins the capacity-type node label to spot. With an on-demand `fallback` pool the pod
    may land on either pool (required node affinity, one term per pool) and prefers spot (preferred
    node affinity, weight 100): when spot capacity is reclaimed, replacements schedule on demand.
    """
    result: dict = {}
    selector = dict(pool.node_selector)
    if pool.spot:
        selector[pool.capacity_label] = pool.capacity_value(spot=True)
    tolerations = list(pool.tolerations)
    if fallback is None:
        if selector:
            result["nodeSelector"] = selector
    else:
        spot_term = {"matchExpressions": _match(selector)}
        result["affinity"] = {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                spot_term, {"matchExpressions": _match(dict(fallback.node_selector))}]},
            "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 100, "preference": spot_term}],
        }}
        tolerations += [t for t in fallback.tolerations if t not in tolerations]
    if tolerations:
        result["tolerations"] = tolerations
    return result


def disruption_budget(model: str, env: str, pool: Pool) -> dict:
    """A PodDisruptionBudget for a model's pods on a spot pool: node drains (consolidation, spot
    rebalancing) take them one at a time. maxUnavailable 1, not minAvailable: a single-replica model
    never blocks a drain forever."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": f"{model}-{pool.name}", "labels": ownership_labels(model, env, pool.name)},
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector_labels(model, pool.name)}},
    }


def service_class(entry: ModelEntry) -> str:
    """The BentoML service's name: its class in `service: service.py:ClassName` (BentoML's default name)."""
    return entry.spec.service.rpartition(":")[2]


def serving_env(entry: ModelEntry, serving: EffectiveServing, latency_buckets: tuple[float, ...] | None = None) -> list[dict]:
    """The container's environment that configures the service from the spec, outside its code: the port,
    `serving.concurrency` as BentoML's traffic.concurrency and the request-duration histogram's buckets
    (``latency_buckets``: catalog.buckets, every canary latency threshold a boundary) as its
    metrics.duration.buckets (both in BENTOML_CONFIG_OVERRIDES), and `serving.batching` for the APIs that
    take their batching from pipelines.serving.batching()."""
    env = [{"name": "BENTOML_PORT", "value": str(serving.port)}]
    service: dict = {}
    if serving.concurrency is not None:
        service["traffic"] = {"concurrency": serving.concurrency}
    if latency_buckets:
        service["metrics"] = {"duration": {"buckets": list(latency_buckets)}}
    if service:
        overrides = {"services": {service_class(entry): service}}
        env.append({"name": CONFIG_ENV, "value": json.dumps(overrides, sort_keys=True, separators=(",", ":"))})
    if serving.batching is not None:
        env.append({"name": MAX_BATCH_SIZE_ENV, "value": str(serving.batching.max_batch_size)})
        env.append({"name": MAX_LATENCY_ENV, "value": str(serving.batching.max_latency_ms)})
    return env


def model_latency_buckets(entry: ModelEntry, env: EnvironmentSpec) -> tuple[float, ...]:
    """The model's request-duration buckets in this environment: BentoML's defaults, finer bounds, and every
    latency threshold its canary judges against (maxP95LatencyMs, the SLO's p95), so each is a boundary."""
    # three settings of the effective canary (catalog.effective), not the whole policy built for every model
    declared = canary_setting(entry.spec, env, "latency_buckets")
    if declared and "latency_buckets" not in canary_queries(entry.spec, env):  # declared: the service exports those
        return tuple(float(b) for b in declared)  # (plan checks each threshold is one of them)
    slo = effective_slo(entry.spec, env)
    return duration_buckets(t for t in (canary_max_p95_ms(entry.spec, env), slo.p95_latency_ms) if t)


def startup_probe(serving: EffectiveServing, pool: Pool) -> dict:
    """Liveness waits until this passes: a model gets `serving.startup` (else its pool kind's default) to load
    before it can be killed. /livez answers once the server is up, i.e. once the service has loaded."""
    budget = startup_seconds(serving, pool.kind)
    return {"httpGet": {"path": probes.LIVENESS, "port": "http"}, "periodSeconds": PROBE_PERIOD,
            "failureThreshold": max(1, math.ceil(budget / PROBE_PERIOD))}


def deployment(entry: ModelEntry, env: EnvironmentSpec, pool: Pool, serving: EffectiveServing, image: str,
               fallback: Pool | None = None, version: dict[str, str] | None = None) -> dict:
    name = f"{entry.name}-{pool.name}"
    container: dict = {
        "name": CONTAINER,
        "image": image,
        "ports": [{"name": "http", "containerPort": serving.port}],
        "env": [*serving_env(entry, serving, model_latency_buckets(entry, env)),
                {"name": "BENTOML_HOME", "value": BENTOML_HOME}],
        "resources": _resources(serving, pool),
        "startupProbe": startup_probe(serving, pool),
        "readinessProbe": {"httpGet": {"path": probes.READINESS, "port": "http"}, "periodSeconds": 5},
        "livenessProbe": {"httpGet": {"path": probes.LIVENESS, "port": "http"}, "periodSeconds": 10},
    }
    # hardened as Kubernetes' "restricted" Pod Security Standard asks: non-root, no privilege escalation, every
    # capability dropped (a pool adds back only what its device needs), a read-only root filesystem with
    # emptyDirs where BentoML writes; tests/test_e2e_node.py runs the real image under it
    capabilities: dict = {"drop": ["ALL"]}
    if pool.capabilities:
        capabilities["add"] = sorted(pool.capabilities)
    container["securityContext"] = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                    "capabilities": capabilities}
    mounts = [{"name": name, "mountPath": path} for name, path in WRITABLE_DIRS.items()]
    volumes: list[dict] = [{"name": name, "emptyDir": {}} for name in WRITABLE_DIRS]
    if pool.hugepages_2mi is not None:
        mounts.append({"name": "hugepages", "mountPath": "/dev/hugepages"})
        volumes.append({"name": "hugepages", "emptyDir": {"medium": "HugePages"}})
    container["volumeMounts"] = mounts
    pod_spec: dict = {"securityContext": {"runAsNonRoot": True, "runAsUser": BENTO_UID, "runAsGroup": BENTO_UID,
                                          "fsGroup": BENTO_UID, "seccompProfile": {"type": "RuntimeDefault"}},
                      "containers": [container], **placement(pool, fallback), "volumes": volumes}
    strategy = pool.strategy
    spec: dict = {
        "progressDeadlineSeconds": startup_seconds(serving, pool.kind) + PROGRESS_ALLOWANCE,
        # track in the selector: the stable and canary Deployments of a pool must not select each other's pods
        "selector": {"matchLabels": {**selector_labels(entry.name, pool.name), L.TRACK: "stable"}},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {
            "maxSurge": strategy.max_surge, "maxUnavailable": strategy.max_unavailable}},
        "template": {
            "metadata": {"labels": {**ownership_labels(entry.name, env.name, pool.name), L.TRACK: "stable"}},
            "spec": pod_spec,
        },
    }
    if version:  # the values the service's X-Model-Version header returns (model hash, build commit, weights md5)
        spec["template"]["metadata"]["annotations"] = dict(sorted(version.items()))
    if serving.autoscaling is None:
        spec = {"replicas": serving.replicas, **spec}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {**ownership_labels(entry.name, env.name, pool.name),
                                              L.ACCELERATOR: pool.kind.value}},
        "spec": spec,
    }


def service(model: str, env: str, port: int, pool: str | None) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": f"{model}-{pool}" if pool else model, "labels": ownership_labels(model, env, pool)},
        "spec": {
            "selector": selector_labels(model, pool),
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def image_for(images: dict[str, str], model: str, pool: Pool) -> str | None:
    """The model's image for a pool: its kind's image (`<model>/gpu`, `<model>/inferentia`, see
    reconciler.catalog.images.image_key) if the map has one, else the model's (an explicitly given single image)."""
    return images.get(image_key(model, pool.kind)) or images.get(model)


def pod_monitor(model: str, env: str) -> dict:
    """A prometheus-operator PodMonitor scraping the model's BentoML /metrics.

    podTargetLabels copies the model, track and pool pod labels onto every series (as
    gitops_ml_model, gitops_ml_track, gitops_ml_pool): the canary analysis queries select on them.
    """
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": {"name": model, "labels": ownership_labels(model, env)},
        "spec": {
            "selector": {"matchLabels": selector_labels(model)},
            "podMetricsEndpoints": [{"port": "http", "path": "/metrics", "interval": "15s"}],
            "podTargetLabels": [L.MODEL, L.TRACK, L.POOL],
        },
    }


def model_objects(entry: ModelEntry, env: EnvironmentSpec, pools: list[Pool], serving: EffectiveServing,
                  images: dict[str, str], all_pools: dict[str, Pool] | None = None,
                  version: dict[str, dict[str, str]] | None = None) -> list[dict]:
    """Every object one model needs in one environment, before kustomize overlays (images: pool -> image;
    all_pools: the declared pools, where spot pools' fallbacks are looked up; version: pool kind -> pod
    template annotations, see reconciler.catalog.image_lock.model_versions)."""
    objects: list[dict] = []
    for pool in pools:
        fallback = (all_pools or {}).get(pool.fallback) if pool.fallback else None
        if pool.fallback and fallback is None:
            raise ValueError(f"pool {pool.name!r}: fallback {pool.fallback!r} was not passed in all_pools")
        objects.append(deployment(entry, env, pool, serving, images[pool.name], fallback,
                                  (version or {}).get(pool.kind.value)))
        objects.append(service(entry.name, env.name, serving.port, pool.name))
        if serving.autoscaling is not None:
            objects.append(autoscaler(entry, env, pool, serving, ownership_labels(entry.name, env.name, pool.name)))
        if pool.spot:
            objects.append(disruption_budget(entry.name, env.name, pool))
    objects.append(service(entry.name, env.name, serving.port, None))
    if env.monitoring == "pod-monitor":
        objects.append(pod_monitor(entry.name, env.name))
    return objects




def namespace(env: EnvironmentSpec) -> dict:
    """The environment's Namespace (hydrated output carries it, so Argo CD or Flux can create it)."""
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": env.namespace, "labels": {L.MANAGED_BY: L.MANAGER, L.ENVIRONMENT: env.name}}}


QUOTA_NAME = "model-budget"


def resource_quota(env: EnvironmentSpec) -> dict | None:
    """The cluster's half of the budget: a ResourceQuota capping the accelerators the namespace may request.

    Extended resources (GPUs, Neuron devices) can only be capped on requests (`requests.<resource>`).
    The monthly USD budget has no quota equivalent: the plan enforces it.
    """
    if env.budget is None or not env.budget.devices:
        return None
    return {
        "apiVersion": "v1", "kind": "ResourceQuota",
        "metadata": {"name": QUOTA_NAME, "namespace": env.namespace,
                     "labels": {L.MANAGED_BY: L.MANAGER, L.ENVIRONMENT: env.name}},
        "spec": {"hard": {f"requests.{resource}": str(count) for resource, count in sorted(env.budget.devices.items())}},
    }


def priority_classes(env: EnvironmentSpec) -> list[dict]:
    """The PriorityClasses the environment declares (cluster-scoped; pods of its models may name them).

    Several environments on one cluster may declare the same one, so nothing in it names the
    environment: the same declaration renders the same object everywhere, and the environments share it
    (reconciler/sync/shared.py; its managedFields name every environment that declares it)."""
    return [{"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
             "metadata": {"name": name, "labels": {L.MANAGED_BY: L.MANAGER}},
             # no `globalDefault: false`: the server stores false as absent (omitempty), so a second
             # environment applying it would conflict with the first over a value neither changes
             "value": value, "preemptionPolicy": "PreemptLowerPriority",
             "description": "model serving pods (priorityClasses: in the environment.yaml of each environment "
                            "that declares it)"}
            for name, value in sorted(env.priority_classes.items())]


def undeclared_priority_classes(objects: list[dict], env: EnvironmentSpec) -> list[str]:
    """'<Kind>/<name>: <class>' for every pod template naming a PriorityClass the environment does not
    declare (Kubernetes' own system-* classes apart): its Pods would be refused at creation."""
    out = []
    for obj in objects:
        spec = obj.get("spec") or {}
        pod = spec.get("template", {}).get("spec") if obj.get("kind") != "Pod" else spec
        name = (pod or {}).get("priorityClassName")
        if name and not name.startswith("system-") and name not in env.priority_classes:
            out.append(f"{obj.get('kind')}/{(obj.get('metadata') or {}).get('name')}: {name}")
    return out


def check_priority_classes(objects: list[dict], env: EnvironmentSpec, model: str) -> None:
    """Raise ValidationError naming every pod template of ``model`` whose PriorityClass ``env`` does not declare."""

    missing = undeclared_priority_classes(objects, env)
    if missing:
        raise ValidationError(
            f"model {model!r} in environment {env.name!r} names PriorityClasses the environment does not "
            "declare: its Pods would be refused at creation", missing,
            fix=f"declare them under priorityClasses (name: value) in environments/{env.name}/environment.yaml, "
                "or remove priorityClassName from the overlay patch")
