"""The effective (merged) settings of one model in one environment: model.yaml over the
environment's defaults over the built-in ones."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from reconciler.catalog.fields import Strict, duration_seconds
from reconciler.catalog.specs import (SLO, ABHeader, Autoscaling, CanaryPolicy, EnvironmentSpec, ModelSpec, Resources,
                                      Serving)


class EffectiveServing(Strict):
    port: int
    cpu: str
    memory: str
    replicas: int
    autoscaling: Autoscaling | None


class EffectiveCanary(Strict):
    enabled: bool
    steps: list[int]
    interval_seconds: int
    failure_threshold: int
    progress_deadline_seconds: int
    max_error_rate: float
    max_p95_latency_ms: float | None
    judge: Literal["threshold", "mann-whitney"]
    router: Literal["gateway-api", "istio", "replicas"]
    queries: dict[str, str]
    pauses: list["EffectivePause"] = Field(default_factory=list)
    min_requests: int | None = None
    inconclusive_limit: int | None = None
    on_inconclusive: Literal["pause", "rollback"] | None = None
    cost_policy: Literal["promote", "rollback", "confirm"] | None = None
    error_rate_tolerance: float | None = None
    latency_tolerance: float | None = None
    detect_error_increase: float | None = None
    detect_latency_increase: float | None = None
    power: float | None = None
    ab_header: ABHeader | None = None
    mirror_percent: int | None = None
    confirm_url: str | None = None
    route_domain: str | None = None


class EffectivePause(Strict):
    after: int              # index into the weights
    seconds: int | None     # None: until resumed by a person


EffectiveCanary.model_rebuild()


BUILTIN_SERVING = Serving(port=3000, resources=Resources(cpu="500m", memory="512Mi"), replicas=1)


BUILTIN_CANARY = CanaryPolicy.model_validate({
    "enabled": True, "steps": [10, 25, 50, 100], "interval": "1m", "failureThreshold": 2, "progressDeadline": "30m",
    "maxErrorRate": 0.01, "judge": "threshold", "router": "replicas", "queries": {}})


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def effective_serving(model: ModelSpec, env: EnvironmentSpec) -> EffectiveServing:
    layers = [model.serving, env.defaults.serving, BUILTIN_SERVING]
    res = [layer.resources for layer in layers if layer.resources is not None]
    autoscaling = _first(model.serving.autoscaling, env.defaults.serving.autoscaling if model.serving.replicas is None else None)
    factor, floor = env.scale.replicas_factor, env.scale.min_replicas
    if autoscaling is not None:
        lo = max(floor, round(autoscaling.min_replicas * factor))
        autoscaling = Autoscaling(minReplicas=lo, maxReplicas=max(lo, round(autoscaling.max_replicas * factor)),
                                  targetCPUUtilization=autoscaling.target_cpu_utilization)
    replicas = _first(*(layer.replicas for layer in layers))
    return EffectiveServing(
        port=_first(*(layer.port for layer in layers)),
        cpu=_first(*(r.cpu for r in res)),
        memory=_first(*(r.memory for r in res)),
        replicas=max(floor, round(replicas * factor)) if replicas else replicas,
        autoscaling=autoscaling,
    )


def effective_canary(model: ModelSpec, env: EnvironmentSpec) -> EffectiveCanary:
    layers = [model.canary, env.defaults.canary, BUILTIN_CANARY]

    def pick(attr: str) -> Any:
        return _first(*(getattr(layer, attr) for layer in layers))

    enabled = env.canary and pick("enabled")
    steps: list[int] = []
    pauses: list[EffectivePause] = []
    for item in pick("steps"):
        if isinstance(item, int):
            steps.append(item)
        else:
            duration = item.pause.duration
            pauses.append(EffectivePause(after=len(steps) - 1,
                                         seconds=None if duration is None else duration_seconds(duration)))
    return EffectiveCanary(
        enabled=bool(enabled), steps=steps, pauses=pauses, interval_seconds=duration_seconds(pick("interval")),
        failure_threshold=pick("failure_threshold"),
        progress_deadline_seconds=duration_seconds(pick("progress_deadline")),
        max_error_rate=pick("max_error_rate"),
        max_p95_latency_ms=_first(model.canary.max_p95_latency_ms, model.slo.p95_latency_ms,
                                  env.defaults.canary.max_p95_latency_ms, env.defaults.slo.p95_latency_ms),
        judge=pick("judge"), router=pick("router"),
        queries={**(env.defaults.canary.queries or {}), **(model.canary.queries or {})},
        min_requests=pick("min_requests"), inconclusive_limit=pick("inconclusive_limit"),
        on_inconclusive=pick("on_inconclusive"), cost_policy=pick("cost_policy"),
        error_rate_tolerance=pick("error_rate_tolerance"), latency_tolerance=pick("latency_tolerance"),
        detect_error_increase=pick("detect_error_increase"), detect_latency_increase=pick("detect_latency_increase"),
        power=pick("power"), ab_header=pick("ab_header"), mirror_percent=pick("mirror_percent"), confirm_url=pick("confirm_webhook"),
        route_domain=pick("route_domain"),
    )


def effective_slo(model: ModelSpec, env: EnvironmentSpec) -> SLO:
    return SLO(p95LatencyMs=_first(model.slo.p95_latency_ms, env.defaults.slo.p95_latency_ms),
               errorRate=_first(model.slo.error_rate, env.defaults.slo.error_rate))
