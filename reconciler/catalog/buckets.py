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
