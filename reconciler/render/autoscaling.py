"""A model's autoscaler on one pool. Pure.

An HPA on CPU utilisation (cpu pools' default), or a KEDA ScaledObject (keda.sh/v1alpha1) whose Prometheus
trigger follows the service's own request metrics: in-flight requests (`bentoml_service_request_in_progress`)
or requests per second per replica of the pool's stable pods (the canary is sized by the rollout), the default on
gpu and inferentia pools. A model that may scale to zero always gets a ScaledObject, with a `wake` trigger on the
environment's wakeQuery (its own /metrics are gone while it has no pod). See docs/model-spec.md, "Serving:
autoscaling, startup, scale to zero"; the CRD is vendored in tests/upstream-schemas/.
"""

from __future__ import annotations

import json
import re
from string import Template

from reconciler import labels as L, probes
from reconciler.catalog.effective import EffectiveServing, autoscaling_metric, in_flight_target
from reconciler.catalog.fields import duration_seconds
from reconciler.catalog.load import ModelEntry
from reconciler.catalog.pools import Pool
from reconciler.catalog.specs import EnvironmentSpec
from reconciler.errors import SpecError, SpecProblem

KEDA_API = "keda.sh/v1alpha1"
# what the service's /metrics say (BentoML 1.4's http instruments), per replica of the stable track, without the
# kubelet's probes (reconciler.probes): left in, they would be traffic to KEDA, which keeps a ScaledObject active
# while any trigger reads above 0, so an idle model on rps would never scale to zero, and a low rps target would
# hold extra replicas
IN_FLIGHT = "sum(bentoml_service_request_in_progress{$selector," + probes.NOT_PROBES + "})"
RATE = "sum(rate(bentoml_service_request_total{$selector," + probes.NOT_PROBES + "}[1m]))"
WAKE_THRESHOLD = "1000000000"  # the wake trigger only activates a model at zero; the model's own metric sizes it


def autoscaler(entry: ModelEntry, env: EnvironmentSpec, pool: Pool, serving: EffectiveServing,
               labels: dict[str, str]) -> dict:
    """The model's autoscaler on one pool: an HPA on CPU utilisation, or a KEDA ScaledObject (request
    metrics, or any model that may scale to zero)."""
    assert serving.autoscaling is not None
    metric = autoscaling_metric(serving, pool.kind)
    if metric == "cpu" and not serving.scale_to_zero:
        return cpu_autoscaler(entry, pool, serving, labels)
    return scaled_object(entry, env, pool, serving, labels)


def cpu_autoscaler(entry: ModelEntry, pool: Pool, serving: EffectiveServing, labels: dict[str, str]) -> dict:
    assert serving.autoscaling is not None
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": f"{entry.name}-{pool.name}", "labels": labels},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": f"{entry.name}-{pool.name}"},
            "minReplicas": max(1, serving.autoscaling.min_replicas),
            "maxReplicas": serving.autoscaling.max_replicas,
            "metrics": [{"type": "Resource", "resource": {
                "name": "cpu", "target": {"type": "Utilization",
                                          "averageUtilization": serving.autoscaling.target_cpu_utilization}}}],
        },
    }


def prometheus_label(key: str) -> str:
    """A pod label as a PodMonitor's podTargetLabels names it in Prometheus (gitops.ml/model -> gitops_ml_model)."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", key)


def _promql_string(value: str) -> str:
    return json.dumps(value)  # a PromQL string literal: double quotes, backslash escapes


def stable_selector(model: str, pool: str, namespace: str) -> str:
    """PromQL label matchers of one model's stable pods on one pool (the canary is sized by the rollout)."""
    pairs = [(prometheus_label(L.MODEL), model), (prometheus_label(L.POOL), pool),
             (prometheus_label(L.TRACK), "stable"), ("namespace", namespace)]
    return ",".join(f"{k}={_promql_string(v)}" for k, v in pairs)


def request_target(entry: ModelEntry, env: EnvironmentSpec, serving: EffectiveServing, metric: str) -> float:
    """The per-replica target of a request metric: autoscaling.target, else (in-flight) 70 % of what a replica
    serves at once (serving.concurrency, else serving.batching.maxBatchSize: catalog.effective.in_flight_target,
    which the plan's cost estimate reads too). Raises SpecError naming the model file and the field to set when
    neither is there."""
    assert serving.autoscaling is not None
    if serving.autoscaling.target is not None:
        return serving.autoscaling.target
    target = in_flight_target(serving, metric) if metric == "concurrency" else None
    if target is not None:
        return target
    what = ("serving.concurrency (requests one replica serves at once; the target is 70 % of it), "
            "serving.batching (a replica serves a batch of maxBatchSize at once) or serving.autoscaling.target"
            if metric == "concurrency" else
            "serving.autoscaling.target (requests per second one replica sustains at the SLO; "
            "benchmarks/serve_load.py measures it)")
    raise SpecError([SpecProblem(
        f"models/{entry.name}/model.yaml", f"autoscaling on {metric} in environment {env.name!r} has no target",
        field="serving.autoscaling.target", fix=f"set {what}")])


def _prometheus(entry: ModelEntry, env: EnvironmentSpec, why: str) -> str:
    if env.autoscaler.prometheus is None:
        raise SpecError([SpecProblem(
            f"environments/{env.name}/environment.yaml", f"model {entry.name!r} {why}, which reads Prometheus, "
            "and the environment names none", field="autoscaler.prometheus",
            fix="set autoscaler.prometheus to the Prometheus that scrapes the models (e.g. "
                "http://prometheus-operated.monitoring.svc:9090)")])
    return env.autoscaler.prometheus


def scaled_object(entry: ModelEntry, env: EnvironmentSpec, pool: Pool, serving: EffectiveServing,
                  labels: dict[str, str]) -> dict:
    """A KEDA ScaledObject (keda.sh/v1alpha1) owning the Deployment's replicas.

    Triggers: the model's signal (`prometheus` over its stable pods' in-flight requests or request rate,
    `metricType: AverageValue`, so KEDA divides the sum by the replica count; or `cpu`), and with
    scaleToZero a `wake` trigger on the environment's wakeQuery (requests arriving while no pod exists)
    that only activates the model. KEDA creates and owns the HPA `keda-hpa-<name>`."""
    assert serving.autoscaling is not None
    name = f"{entry.name}-{pool.name}"
    metric = autoscaling_metric(serving, pool.kind)
    triggers: list[dict] = []
    if metric == "cpu":
        triggers.append({"type": "cpu", "metricType": "Utilization",
                         "metadata": {"value": str(serving.autoscaling.target_cpu_utilization)}})
    else:
        address = _prometheus(entry, env, f"autoscales on {metric}")
        target = request_target(entry, env, serving, str(metric))
        query = Template(IN_FLIGHT if metric == "concurrency" else RATE).substitute(
            selector=stable_selector(entry.name, pool.name, env.namespace))
        triggers.append({"type": "prometheus", "name": "in-flight" if metric == "concurrency" else "rps",
                         "metricType": "AverageValue",
                         "metadata": {"serverAddress": address, "query": query, "threshold": f"{target:.10g}"}})
    spec: dict = {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
        "pollingInterval": duration_seconds(env.autoscaler.polling_interval),
        "minReplicaCount": serving.autoscaling.min_replicas if serving.scale_to_zero else
        max(1, serving.autoscaling.min_replicas),
        "maxReplicaCount": serving.autoscaling.max_replicas,
    }
    if serving.scale_to_zero:
        if env.autoscaler.wake_query is None:
            raise SpecError([SpecProblem(
                f"environments/{env.name}/environment.yaml",
                f"model {entry.name!r} scales to zero and nothing would wake it: with no replica its own "
                "/metrics are gone", field="autoscaler.wakeQuery",
                fix="set autoscaler.wakeQuery to PromQL counting the requests that reach $service in $namespace at "
                    "your ingress or mesh, or set serving.scaleToZero: false")])
        address = _prometheus(entry, env, "scales to zero")
        wake = Template(env.autoscaler.wake_query).safe_substitute(
            namespace=env.namespace, service=entry.name, model=entry.name)
        triggers.append({"type": "prometheus", "name": "wake", "metricType": "AverageValue",
                         "metadata": {"serverAddress": address, "query": wake, "threshold": WAKE_THRESHOLD,
                                      "activationThreshold": "0"}})
        spec["cooldownPeriod"] = serving.idle_seconds
    spec["triggers"] = triggers
    return {
        "apiVersion": KEDA_API,
        "kind": "ScaledObject",
        "metadata": {"name": name, "labels": labels},
        "spec": spec,
    }
