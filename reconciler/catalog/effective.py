"""The effective (merged) settings of one model in one environment: model.yaml over the
environment's defaults over the built-in ones."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from reconciler.catalog.fields import Strict, duration_seconds
from reconciler.catalog.pools import AcceleratorKind
from reconciler.catalog.canary import ABHeader, CanaryPolicy
from reconciler.catalog.specs import SLO, Autoscaling, Batching, EnvironmentSpec, ModelSpec, Serving
from reconciler.errors import SpecProblem


class EffectiveServing(Strict):
    port: int
    cpu: str
    memory: str
    replicas: int
    autoscaling: Autoscaling | None
    concurrency: int | None = None
    batching: Batching | None = None
    startup_seconds: int | None = None  # None: the pool kind's default (KindServing.startup_seconds)
    scale_to_zero: bool = False
    idle_seconds: int = 900


class KindServing(Strict):
    """What a pool kind means for serving when the spec does not say: how long a model may take to load
    (startupProbe budget) and which signal autoscales it."""

    startup_seconds: int
    metric: Literal["cpu", "concurrency", "rps"]


TARGET_UTILISATION = 0.7  # in-flight target = 70 % of the declared concurrency (Knative's default utilisation)
DEFAULT_IDLE = "15m"


def kind_serving(kind: AcceleratorKind) -> KindServing:
    """The kind's serving defaults, from its profile (reconciler.catalog.kinds)."""
    profile = AcceleratorKind(kind).profile
    return KindServing(startup_seconds=profile.startup_seconds, metric=profile.autoscaling_metric)


def startup_seconds(serving: EffectiveServing, kind: AcceleratorKind) -> int:
    """The startup budget of a model on a pool of ``kind``: serving.startup, else the kind's default."""
    return serving.startup_seconds if serving.startup_seconds is not None else kind_serving(kind).startup_seconds


def autoscaling_metric(serving: EffectiveServing, kind: AcceleratorKind) -> str | None:
    """The signal a model's autoscaler follows on a pool of ``kind`` (None: a fixed replica count)."""
    if serving.autoscaling is None:
        return None
    return serving.autoscaling.metric or kind_serving(kind).metric


def replica_concurrency(serving: EffectiveServing) -> int | None:
    """Requests one replica serves at once: ``serving.concurrency``, else, with adaptive batching declared, its
    ``maxBatchSize`` (a full batch in flight); None when the spec says neither."""
    if serving.concurrency is not None:
        return serving.concurrency
    return serving.batching.max_batch_size if serving.batching is not None else None


def in_flight_target(serving: EffectiveServing, metric: str | None) -> float | None:
    """Requests in flight per replica at the model's working point, THE figure the request autoscaler's
    threshold (metric ``concurrency``) and the plan's cost estimate share: ``autoscaling.target`` when the
    model autoscales on in-flight requests, else 70 % of ``replica_concurrency`` (at least 1)."""
    if metric == "concurrency" and serving.autoscaling is not None and serving.autoscaling.target is not None:
        return serving.autoscaling.target
    declared = replica_concurrency(serving)
    return None if declared is None else max(1.0, round(declared * TARGET_UTILISATION, 2))


def batching_problem(model: ModelSpec, env: EnvironmentSpec, model_file: str, env_file: str) -> SpecProblem | None:
    """A warning, not an error (BentoML serves it): a model whose ``serving.concurrency`` in ``env`` is below its
    ``serving.batching.maxBatchSize`` never fills a batch. The request autoscaler adds a replica at 70 % of the
    concurrency in flight, the plan's cost assumes that many, so a replica holds fewer requests than one batch.
    Names the file that declares them (the model's, else the environment's defaults), both fields and the fix."""
    serving = effective_serving(model, env)
    if serving.batching is None or serving.concurrency is None:
        return None
    concurrency, size = serving.concurrency, serving.batching.max_batch_size
    if concurrency >= size:
        return None
    declared_here = model.serving.concurrency is not None or model.serving.batching is not None
    lower = (f"lower serving.batching.maxBatchSize to {concurrency}" if concurrency >= 2 else
             "remove serving.batching")
    return SpecProblem(
        model_file if declared_here else env_file,
        f"serving.concurrency {concurrency} is below serving.batching.maxBatchSize {size} in environment "
        f"{env.name!r}: a replica is sized for {concurrency} requests at once (the request autoscaler adds replicas "
        f"at 70 % of it), so a batch of {size} never fills",
        field="serving.concurrency",
        fix=f"raise serving.concurrency to {size} or more if a replica serves a full batch within the SLO, or "
            f"{lower} (benchmarks/serve_load.py measures both)")


def metrics_needs(model: ModelSpec, env: EnvironmentSpec, kinds: list[AcceleratorKind]) -> list[str]:
    """What of a model in ``env`` (served from pools of ``kinds``) reads its scraped request metrics: a request
    autoscaler (KEDA's Prometheus trigger on in-flight requests or the request rate) and canary analysis. Pure."""
    needs = []
    serving = effective_serving(model, env)
    metrics = sorted({m for m in (autoscaling_metric(serving, k) for k in kinds) if m in ("concurrency", "rps")})
    if metrics:
        needs.append(f"a request autoscaler ({', '.join(metrics)})")
    if effective_canary(model, env).enabled:
        needs.append("canary analysis")
    return needs


def monitoring_problem(env: EnvironmentSpec, env_file: str, needs: dict[str, list[str]]) -> SpecProblem | None:
    """A warning (KEDA and the canary read an empty query as zero, silently) when ``env`` has `monitoring: none`
    while models (``needs``: model -> metrics_needs) read their scraped request metrics: with nothing scraping
    them, a request autoscaler reads 0 and never scales out, and canary analysis has no data to judge."""
    needing = {m: n for m, n in sorted(needs.items()) if n}
    if env.monitoring != "none" or not needing:
        return None
    shown = [f"{m} ({' and '.join(n)})" for m, n in list(needing.items())[:3]]
    more = f" and {len(needing) - 3} more" if len(needing) > 3 else ""
    return SpecProblem(
        env_file,
        f"monitoring is none in environment {env.name!r}, but {', '.join(shown)}{more} read the models' scraped "
        "request metrics (the gitops.ml/model, track and pool labels on bentoml_service_* series): with nothing "
        "scraping them a request autoscaler reads 0 and never scales out, and canary analysis has no data",
        field="monitoring",
        fix="set monitoring: pod-monitor (a prometheus-operator PodMonitor per model), or monitoring: external if "
            "the cluster's own Prometheus scrape config copies those pod labels (docs/model-spec.md, "
            "environment.yaml `monitoring`)")


class EffectiveCanary(Strict):
    enabled: bool
    steps: list[int]
    interval_seconds: int
    failure_threshold: int
    progress_deadline_seconds: int
    max_error_rate: float
    max_p95_latency_ms: float | None
    judge: Literal["threshold", "mann-whitney"]
    router: str                     # a name of the router registry (reconciler.traffic)
    router_options: dict[str, Any] = Field(default_factory=dict)   # from the layer that chose the router
    queries: dict[str, str]
    latency_buckets: list[float] | None = None  # declared; None: the template's layout (catalog.buckets)
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
    warmup_seconds: int | None = None  # None: derived from the model's probes (rollout/warmup.py)
    quantiles: list[float] | None = None
    measurement_error_limit: int | None = None
    on_measurement_error: Literal["pause", "rollback"] | None = None


class EffectivePause(Strict):
    after: int              # index into the weights
    seconds: int | None     # None: until resumed by a person


EffectiveCanary.model_rebuild()


BUILTIN_SERVING = Serving.model_validate({"port": 3000, "resources": {"cpu": "500m", "memory": "512Mi"}, "replicas": 1})


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
    replicas = _first(*(layer.replicas for layer in layers))
    replicas = max(floor, round(replicas * factor)) if replicas else replicas
    to_zero = bool(_first(*(layer.scale_to_zero for layer in layers)))
    if autoscaling is not None:
        lo = max(floor, round(autoscaling.min_replicas * factor))
        autoscaling = autoscaling.model_copy(update={
            "min_replicas": 0 if to_zero else lo, "max_replicas": max(lo, round(autoscaling.max_replicas * factor))})
    elif to_zero and replicas:
        # a fixed count that may also be none while idle: 0..replicas on the model's request metric
        autoscaling = Autoscaling.model_validate({"minReplicas": 0, "maxReplicas": replicas})
    startup = _first(*(layer.startup for layer in layers))
    return EffectiveServing(
        port=_first(*(layer.port for layer in layers)),
        cpu=_first(*(r.cpu for r in res)),
        memory=_first(*(r.memory for r in res)),
        replicas=replicas,
        autoscaling=autoscaling,
        concurrency=_first(*(layer.concurrency for layer in layers)),
        batching=_first(*(layer.batching for layer in layers)),
        startup_seconds=None if startup is None else duration_seconds(startup),
        scale_to_zero=to_zero and autoscaling is not None,
        idle_seconds=duration_seconds(_first(*(layer.idle_after for layer in layers), DEFAULT_IDLE)),
    )


def canary_setting(model: ModelSpec, env: EnvironmentSpec, attr: str) -> Any:
    """One setting of the effective canary policy as `effective_canary` picks it (the model's, else the
    environment's default, else the built-in one), without building the whole policy: the catalog's
    per-environment bucket check reads three settings of every model."""
    return _first(getattr(model.canary, attr), getattr(env.defaults.canary, attr), getattr(BUILTIN_CANARY, attr))


def canary_queries(model: ModelSpec, env: EnvironmentSpec) -> dict[str, str]:
    """The effective canary's queries: the environment's defaults, overridden by the model's."""
    return {**(env.defaults.canary.queries or {}), **(model.canary.queries or {})}


def canary_max_p95_ms(model: ModelSpec, env: EnvironmentSpec) -> float | None:
    """The effective canary's p95 latency limit: the model's canary limit, its SLO, then the environment's."""
    return _first(model.canary.max_p95_latency_ms, model.slo.p95_latency_ms,
                  env.defaults.canary.max_p95_latency_ms, env.defaults.slo.p95_latency_ms)


def effective_canary(model: ModelSpec, env: EnvironmentSpec) -> EffectiveCanary:
    layers = [model.canary, env.defaults.canary, BUILTIN_CANARY]

    def pick(attr: str) -> Any:
        return canary_setting(model, env, attr)

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
        max_p95_latency_ms=canary_max_p95_ms(model, env),
        judge=pick("judge"), router=pick("router"),
        router_options=next((layer.router_options or {} for layer in layers if layer.router is not None), {}),
        queries=canary_queries(model, env),
        latency_buckets=pick("latency_buckets"),
        min_requests=pick("min_requests"), inconclusive_limit=pick("inconclusive_limit"),
        on_inconclusive=pick("on_inconclusive"), cost_policy=pick("cost_policy"),
        error_rate_tolerance=pick("error_rate_tolerance"), latency_tolerance=pick("latency_tolerance"),
        detect_error_increase=pick("detect_error_increase"), detect_latency_increase=pick("detect_latency_increase"),
        power=pick("power"), ab_header=pick("ab_header"), mirror_percent=pick("mirror_percent"), confirm_url=pick("confirm_webhook"),
        route_domain=pick("route_domain"), warmup_seconds=None if pick("warmup") is None else duration_seconds(pick("warmup")),
        quantiles=pick("quantiles"), measurement_error_limit=pick("measurement_error_limit"),
        on_measurement_error=pick("on_measurement_error"),
    )


def effective_slo(model: ModelSpec, env: EnvironmentSpec) -> SLO:
    return SLO(p95LatencyMs=_first(model.slo.p95_latency_ms, env.defaults.slo.p95_latency_ms),
               errorRate=_first(model.slo.error_rate, env.defaults.slo.error_rate))
