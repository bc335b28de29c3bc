"""The request-duration buckets a model's service exports, and the check that the canary's latency
thresholds are bucket boundaries (issue 21). Pure.

Prometheus keeps a latency histogram as cumulative counts per bucket upper bound (``le``). The number
of requests slower than a bound is exact only at a boundary; anywhere else ``histogram_quantile`` and
friends interpolate (with BentoML's default buckets, 0.1 s to 0.25 s is one bucket: a true p95 of
120 ms reads as about 193 ms). So every latency threshold the canary judges against (the policy's
``maxP95LatencyMs``, the SLO's ``p95LatencyMs``) must be a boundary of the buckets the service
exports: the template's services export BentoML's defaults plus a few finer bounds plus every such
threshold (``duration_buckets``), rendered into the container's ``BENTOML_CONFIG_OVERRIDES`` as the
service's ``metrics.duration.buckets`` (render.manifests.serving_env), which BentoML 1.4 reads at start.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from reconciler.catalog.effective import canary_queries, canary_setting
from reconciler.catalog.specs import EnvironmentSpec, ModelSpec
from reconciler.errors import SpecProblem

# BentoML 1.4's default request-duration buckets (bentoml/_internal/utils/metrics.py DEFAULT_BUCKET,
# +Inf implied), as a served Bento exports them unless configured
BENTOML_DEFAULT = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 180.0)
# finer bounds where model latencies usually sit, so a relative comparison with stable has a boundary
# near its p95 / p99 (prometheus_client's 0.075 and 0.75, and 0.15 / 0.2 / 0.3 / 0.4)
TEMPLATE_EXTRA = (0.075, 0.15, 0.2, 0.3, 0.4, 0.75)


def _seconds(ms: float) -> float:
    return round(ms / 1000.0, 9)


def thresholds_ms(policy_like: object) -> list[float]:
    """The latency thresholds (ms) a canary policy judges against: maxP95LatencyMs and the SLO's p95."""
    found = []
    for attr in ("max_p95_latency_ms", "slo_p95_latency_ms", "p95_latency_ms"):
        value = getattr(policy_like, attr, None)
        if value is not None and math.isfinite(float(value)) and float(value) > 0:
            found.append(float(value))
    return sorted(set(found))


def duration_buckets(thresholds: Iterable[float] = (), base: Sequence[float] = BENTOML_DEFAULT,
                     extra: Sequence[float] = TEMPLATE_EXTRA) -> tuple[float, ...]:
    """The template's bucket layout (seconds, finite bounds, increasing): ``base`` + ``extra`` + every
    threshold (given in milliseconds)."""
    bounds = {round(float(b), 9) for b in (*base, *extra)}
    bounds.update(_seconds(t) for t in thresholds)
    return tuple(sorted(b for b in bounds if b > 0 and math.isfinite(b)))


def is_boundary(bounds: Sequence[float], threshold_ms: float) -> bool:
    return any(math.isclose(b, threshold_ms / 1000.0, rel_tol=1e-9, abs_tol=1e-12) for b in bounds)


def missing_thresholds(bounds: Sequence[float], thresholds: Iterable[float]) -> list[float]:
    """The thresholds (ms) that are not a boundary of ``bounds`` (s)."""
    return [t for t in thresholds if not is_boundary(bounds, t)]


def _origin(spec: ModelSpec, env: EnvironmentSpec, model_file: str, env_file: str) -> list[tuple[float, str, str]]:
    """The latency thresholds the canary judges against, each with the file and field that set it (the layer
    effective_canary / effective_slo take it from)."""
    found: list[tuple[float, str, str]] = []
    for value, file, field in (
            (spec.canary.max_p95_latency_ms, model_file, "canary.maxP95LatencyMs"),
            (spec.slo.p95_latency_ms, model_file, "slo.p95LatencyMs"),
            (env.defaults.canary.max_p95_latency_ms, env_file, "defaults.canary.maxP95LatencyMs"),
            (env.defaults.slo.p95_latency_ms, env_file, "defaults.slo.p95LatencyMs")):
        if value is not None and not any(math.isclose(value, v) for v, _, _ in found):
            found.append((float(value), file, field))
    return found


def threshold_problems(spec: ModelSpec, env: EnvironmentSpec, model_file: str, env_file: str) -> list[SpecProblem]:
    """Plan-time check (issue 21): every latency threshold the canary judges against is a boundary of the buckets
    the histogram it reads really has, else counting slow requests there would interpolate. With the template's
    layout every threshold is rendered into the service's buckets; a declared ``canary.latencyBuckets`` (what the
    service exports, or what a custom ``queries.latency_buckets`` reads) must hold each one."""
    if not env.canary or not canary_setting(spec, env, "enabled"):  # (effective_canary's `enabled`)
        return []
    custom = "latency_buckets" in canary_queries(spec, env)
    declared = canary_setting(spec, env, "latency_buckets")
    where = model_file if spec.canary.latency_buckets is not None else env_file
    field = "canary.latencyBuckets" if spec.canary.latency_buckets is not None else "defaults.canary.latencyBuckets"
    thresholds = _origin(spec, env, model_file, env_file)
    if custom and declared is None and thresholds:
        return [SpecProblem(model_file, "canary.queries.latency_buckets reads a histogram whose bucket bounds the "
                            "plan cannot see, so it cannot tell whether the canary's latency thresholds are boundaries "
                            "of it", field="canary.latencyBuckets",
                            fix="declare that histogram's bounds (seconds) as canary.latencyBuckets, each latency "
                                "threshold (maxP95LatencyMs, slo.p95LatencyMs) among them, e.g. latencyBuckets: "
                                "[0.05, 0.1, 0.15, 0.2, 0.25, 0.5, 1]")]
    if declared is None:
        return []
    problems = []
    for threshold, file, threshold_field in thresholds:
        if is_boundary(declared, threshold):
            continue
        below = [b for b in declared if b * 1000 < threshold]
        above = [b for b in declared if b * 1000 > threshold]
        near = " or ".join(f"{b * 1000:g} ms" for b in (below[-1:] + above[:1]))
        problems.append(SpecProblem(
            file, f"latency threshold {threshold:g} ms ({threshold_field}) is not a bucket boundary of the histogram "
                  f"the canary reads ({field} in {where}: {', '.join(f'{b:g}' for b in declared)} s): the share of "
                  "requests slower than it would be interpolated, not counted",
            field=threshold_field,
            fix=f"add {threshold / 1000:g} to {field} in {where}"
                + (" and to the histogram your query reads" if custom else "")
                + (f", or set {threshold_field} to a boundary ({near})" if near else "")))
    return problems
