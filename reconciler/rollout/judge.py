"""Verdicts: does the canary pass this analysis interval? Pure functions of the policy and metrics.

Three judges:
- ``threshold``: the canary's error rate and p95 are under fixed limits.
- ``mann-whitney``: Kayenta-style. The per-sub-interval samples of the canary are compared with
  the stable's by a one-sided Mann-Whitney U test; the canary fails only when it is significantly
  worse (p < alpha) AND the difference is larger than an effect-size tolerance, so tiny but
  "significant" differences do not flap a rollout. Fixed limits still apply as guard rails.
- cross-pool (stable and canary in different pools, e.g. GPU -> Inferentia): the canary must meet
  the SLO (p95, error rate) and be cheaper per 1,000 inferences than the stable pool.

Missing data or NaN never passes: it is a failed check with the reason "no data".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import fmean, median

from reconciler.extras import missing_extra
from reconciler.rollout.metrics import VersionMetrics
from reconciler.rollout.state import Policy

MIN_SAMPLES = 3


@dataclass(frozen=True)
class Verdict:
    passed: bool
    reasons: tuple[str, ...]
    no_data: bool = False


def judge(policy: Policy, stable: VersionMetrics | None, canary: VersionMetrics | None, *,
          cross_pool: bool = False, canary_weight: int = 0) -> Verdict:
    if canary is None or not canary.has_data:
        missing = ", ".join(canary.missing()) if canary is not None else "all metrics"
        return Verdict(False, (f"no data for the canary ({missing}): never promote on missing data",), no_data=True)
    if cross_pool:
        return _cross_pool(policy, stable, canary)
    reasons: list[str] = []
    failures = _limits(policy, canary, reasons)
    if policy.judge == "mann-whitney":
        if canary_weight >= 100 and (stable is None or not stable.has_data):
            # at 100 % the stable serves nothing, so there is nothing to compare with: the fixed limits
            # (and the SLO) decide this last step alone
            reasons.append("stable serves no traffic at 100 %: judged on the fixed limits only")
            return Verdict(failures == 0, tuple(reasons))
        if stable is None or not stable.has_data:
            missing = ", ".join(stable.missing()) if stable is not None else "all metrics"
            return Verdict(False, (f"no data for the stable version ({missing}): cannot compare",), no_data=True)
        stat_failures, no_data = _mann_whitney(policy, stable, canary, reasons)
        if no_data:
            return Verdict(False, tuple(reasons), no_data=True)
        failures += stat_failures
    return Verdict(failures == 0, tuple(reasons))


def _limits(policy: Policy, canary: VersionMetrics, reasons: list[str]) -> int:
    failures = 0
    err = canary.error_rate or 0.0
    if err > policy.max_error_rate:
        failures += 1
        reasons.append(f"canary error rate {err:.2%} is above the limit {policy.max_error_rate:.2%}")
    else:
        reasons.append(f"canary error rate {err:.2%} is within the limit {policy.max_error_rate:.2%}")
    limit = policy.max_p95_latency_ms
    if limit is not None:
        p95 = canary.p95_ms or 0.0
        if p95 > limit:
            failures += 1
            reasons.append(f"canary p95 {p95:.0f} ms is above the limit {limit:.0f} ms")
        else:
            reasons.append(f"canary p95 {p95:.0f} ms is within the limit {limit:.0f} ms")
    return failures


def mann_whitney_worse(stable: list[float], canary: list[float]) -> float:
    """One-sided p-value of 'canary samples tend to be larger than stable samples'."""
    try:
        from scipy.stats import mannwhitneyu
    except ImportError as exc:  # core install: say which extra brings scipy
        raise missing_extra(exc) or exc from None

    if len(set(stable) | set(canary)) == 1:  # all identical: no evidence of a difference
        return 1.0
    result = mannwhitneyu(canary, stable, alternative="greater", method="asymptotic")
    p = float(result.pvalue)
    return 1.0 if math.isnan(p) else p


def _clean(samples: tuple[float, ...]) -> list[float]:
    return [float(v) for v in samples if v is not None and not math.isnan(v) and not math.isinf(v)]


def _mann_whitney(policy: Policy, stable: VersionMetrics, canary: VersionMetrics,
                  reasons: list[str]) -> tuple[int, bool]:
    failures = 0
    s_err, c_err = _clean(stable.error_samples), _clean(canary.error_samples)
    s_lat, c_lat = _clean(stable.latency_samples), _clean(canary.latency_samples)
    if min(len(s_err), len(c_err), len(s_lat), len(c_lat)) < MIN_SAMPLES:
        reasons.append(f"fewer than {MIN_SAMPLES} samples per version (error: stable {len(s_err)}, canary "
                       f"{len(c_err)}; latency: stable {len(s_lat)}, canary {len(c_lat)}): no data")
        return 0, True
    p = mann_whitney_worse(s_err, c_err)
    s_mean, c_mean = fmean(s_err), fmean(c_err)
    allowed = max(policy.error_rate_abs_tolerance, policy.error_rate_tolerance * s_mean)
    if p < policy.alpha and c_mean - s_mean > allowed:
        failures += 1
        reasons.append(f"canary error rate {c_mean:.2%} is significantly above stable {s_mean:.2%} "
                       f"(Mann-Whitney p={p:.4f} < {policy.alpha}, difference beyond tolerance {allowed:.2%})")
    else:
        reasons.append(f"canary error rate {c_mean:.2%} vs stable {s_mean:.2%}: no significant increase "
                       f"(p={p:.4f}, tolerance {allowed:.2%})")
    p = mann_whitney_worse(s_lat, c_lat)
    s_med, c_med = median(s_lat), median(c_lat)
    if p < policy.alpha and c_med > s_med * (1 + policy.latency_tolerance):
        failures += 1
        reasons.append(f"canary latency {c_med:.0f} ms is significantly above stable {s_med:.0f} ms "
                       f"(p={p:.4f}, beyond {policy.latency_tolerance:.0%})")
    else:
        reasons.append(f"canary latency {c_med:.0f} ms vs stable {s_med:.0f} ms: no significant increase (p={p:.4f})")
    return failures, False


def _cross_pool(policy: Policy, stable: VersionMetrics | None, canary: VersionMetrics) -> Verdict:
    reasons: list[str] = []
    failures = 0
    slo_p95 = policy.slo_p95_latency_ms or policy.max_p95_latency_ms
    if slo_p95 is None:
        return Verdict(False, ("a cross-pool canary needs a p95 latency SLO (slo.p95LatencyMs) to judge against",))
    p95 = canary.p95_ms or 0.0
    if p95 > slo_p95:
        failures += 1
        reasons.append(f"canary pool {canary.pool} p95 {p95:.0f} ms misses the SLO {slo_p95:.0f} ms")
    else:
        reasons.append(f"canary pool {canary.pool} p95 {p95:.0f} ms meets the SLO {slo_p95:.0f} ms")
    max_err = policy.slo_error_rate if policy.slo_error_rate is not None else policy.max_error_rate
    err = canary.error_rate or 0.0
    if err > max_err:
        failures += 1
        reasons.append(f"canary error rate {err:.2%} misses the SLO {max_err:.2%}")
    c_cost = canary.cost_per_1000
    s_cost = stable.cost_per_1000 if stable is not None and stable.has_data else None
    if c_cost is None or s_cost is None:
        return Verdict(False, (*reasons, "cost per 1,000 inferences unknown (need replicas, pool price and "
                                         "traffic for both pools): no data"), no_data=True)
    if c_cost < s_cost:
        reasons.append(f"canary pool {canary.pool} costs ${c_cost:.4f} per 1,000 inferences, "
                       f"cheaper than {stable.pool} at ${s_cost:.4f}")
    else:
        failures += 1
        reasons.append(f"canary pool {canary.pool} costs ${c_cost:.4f} per 1,000 inferences, "
                       f"not cheaper than {stable.pool} at ${s_cost:.4f}")
    return Verdict(failures == 0, tuple(reasons))
