"""The minimum-sample guard: how many canary requests a step needs before it may pass. Pure.

From the effect the policy wants caught (``detect_error_increase``, default 2x stable's error rate;
``detect_latency_increase``, +30 % p95), stable's measured error rate (over the revision, floored at
``ERROR_FLOOR_SHARE`` of the error limit) and latency histogram, alpha (spent over the steps) and the
target ``power``, it computes the canary requests of the step at which the judge's tests
(reconciler.rollout.judge) detect that effect. A rollback takes ``failure_threshold`` failed looks in a
row, so each look is sized for ``power ** (1 / failure_threshold)``. See reconciler.rollout.stats for
the arithmetic and benchmarks/README-canary.md for what it costs and what it buys.
"""

from __future__ import annotations

from dataclasses import dataclass

from reconciler.rollout import stats
from reconciler.rollout.metrics import VersionMetrics
from reconciler.rollout.state import Evidence, Policy

TAIL_SHARE = 0.05  # the share of requests a p95 leaves above itself
# the guard sizes a step for stable's error rate, but never below this share of the error limit: a
# relative change of a near-zero rate matters less than the absolute limit, and sizing for it would
# hold a model that makes no errors for ever
ERROR_FLOOR_SHARE = 0.1

@dataclass(frozen=True)
class Guard:
    """The minimum-sample guard's answer for a step: canary requests it needs, and what they detect."""

    needed: int
    detect: str
    notes: tuple[str, ...] = ()  # how the figure was reached (a capped power, a floored base rate ...)
    unknown: str | None = None    # why no size could be computed (then the step cannot pass yet)


def _error_limit(policy: Policy, cross_pool: bool) -> float:
    if cross_pool and policy.slo_error_rate is not None:
        return policy.slo_error_rate
    return policy.max_error_rate


def stable_counts(policy: Policy, ev: Evidence) -> tuple[int, int, bool]:
    """(requests, errors, same period) stable is compared with: the step's while it serves, else the revision's."""
    if ev.stable_requests >= max(policy.min_requests, 1):
        return ev.stable_requests, ev.stable_errors, True
    if ev.reference_requests >= ev.stable_requests:
        return ev.reference_requests, ev.reference_errors, False
    return ev.stable_requests, ev.stable_errors, False


def guard(policy: Policy, ev: Evidence, *, cross_pool: bool = False, canary_weight: int = 0,
          reference: VersionMetrics | None = None) -> Guard:
    """How many canary requests this step needs before it may pass (pure; see the module docstring)."""
    alpha = policy.alpha / max(len(policy.steps), 1)
    ratio = 1.0 + policy.detect_error_increase
    # rolling back takes failure_threshold failed looks in a row: each must have power^(1/threshold)
    look_power = policy.power ** (1.0 / max(policy.failure_threshold, 1))
    parts = [f"+{policy.detect_error_increase:.0%} errors"]
    notes: list[str] = []
    needed = max(policy.min_requests, 1)
    # stable's rate over the revision (a state written before these counts existed has the step's only)
    ref_req, ref_err = max((ev.reference_requests, ev.reference_errors), (ev.stable_requests, ev.stable_errors))
    if ref_req <= 0:
        return Guard(needed, parts[0], unknown="no stable measurement yet to size the minimum sample with")
    measured = ref_err / ref_req
    floor = ERROR_FLOOR_SHARE * _error_limit(policy, cross_pool)
    base = max(measured, floor)
    if base > measured:
        notes.append(f"stable's error rate {measured:.3%} is sized as {base:.3%} ({ERROR_FLOOR_SHARE:.0%} of the limit)")
    s_req, _, same_period = stable_counts(policy, ev)
    if same_period:
        per_canary = (ev.stable_requests / ev.canary_requests if ev.canary_requests
                      else (100 - canary_weight) / max(canary_weight, 1))
    else:
        per_canary = 0.0  # stable serves nothing in this step: its counts so far are all there is
    size = stats.requests_for_rate_power(base, ratio, alpha, look_power, stable_requests=s_req,
                                         stable_per_canary=per_canary, canary_requests=ev.canary_requests)
    if size is None:
        return Guard(needed, parts[0], unknown="stable's counts cannot give the error comparison any power")
    needed = max(needed, size.requests)
    if size.capped:
        notes.append(f"power capped at {size.power:.0%} by stable's {s_req} requests")
    buckets = ev.stable_buckets if same_period and ev.stable_buckets else ev.reference_buckets
    if not buckets and reference is not None:
        buckets = reference.latency_buckets
    if not cross_pool and buckets:
        q = stats.histogram_quantile(0.95, buckets)
        if q is not None and q > 0:
            bound = q * (1 + policy.latency_tolerance)
            slower, total = stats.fraction_above(buckets, bound / (1 + policy.detect_latency_increase))
            n = stats.requests_for_tail_power(TAIL_SHARE, slower / total if total else 0.0, policy.alpha,
                                              look_power)
            if n is not None:
                needed = max(needed, n)
                parts.append(f"+{policy.detect_latency_increase:.0%} p95")
    return Guard(needed, ", ".join(parts), tuple(notes))
