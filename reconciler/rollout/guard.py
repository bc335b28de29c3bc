"""The minimum-sample guard: how many canary requests a rollout needs before it may be promoted (pure).

From the effect the policy wants caught (``detect_error_increase``, default 2x stable's error rate;
``detect_latency_increase``, +30 % latency), stable's measured error rate and latency histogram, the
alpha each check may spend, and the target ``power`` (0.95), it computes the canary requests the whole
rollout needs (``stats.requests_for_rate_power``), inflated by the dispersion measured across windows
(a bursty error series carries less information per request); where the paired contrast of canary and
stable within the same windows shows less (a shock on both tracks at once), with that (contrast.py). The figure is also the information
time of the spending rule (judge.py): the alpha a check may spend grows with the canary's share of it.

Sizing level: each check's alpha is spent over the looks (O'Brien-Fleming); the last looks spend about
half of it, so the sample is sized at half the check's alpha. A rollback takes ``failure_threshold``
failed looks in a row: each must have ``power^(1/threshold)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from reconciler.rollout import contrast, spending, stats
from reconciler.rollout.spending import check_names
from reconciler.rollout.state import Evidence, Policy

# the guard sizes for stable's error rate, but never below this share of the error limit: a relative
# change of a near-zero rate matters less than the absolute limit, and sizing for it would hold a model
# that makes no errors for ever
ERROR_FLOOR_SHARE = 0.1
SIZING_SHARE = 0.15  # the sample is sized at this share of a check's alpha (below the last looks' increments)
TAIL_SHARE = 0.05    # kept for importers
MIN_SLOW = 30        # stable's slow requests a latency boundary needs


@dataclass(frozen=True)
class Guard:
    """The guard's answer for the rollout: canary requests it needs, and what they detect."""

    needed: int
    detect: str
    notes: tuple[str, ...] = ()  # how the figure was reached (a capped power, a floored base rate ...)
    unknown: str | None = None    # why no size could be computed (then the rollout cannot be promoted yet)
    phi_errors: float = 1.0       # the dispersion of error counts across windows


def _error_limit(policy: Policy, cross_pool: bool) -> float:
    if cross_pool and policy.slo_error_rate is not None:
        return policy.slo_error_rate
    return policy.max_error_rate


def stable_counts(policy: Policy, ev: Evidence) -> tuple[int, int, bool]:
    """(requests, errors, same period) stable is compared with: its counts over the revision."""
    return ev.reference_requests, ev.reference_errors, ev.stable_requests >= max(policy.min_requests, 1)


# The dispersion is estimated from stable's windows only: stable is the healthy version, whose
# burstiness says how noisy healthy counts are. The canary's own windows would let a regression hide
# itself (a step change in the canary's error rate looks like overdispersion around its mean).


def error_windows(ev: Evidence) -> list[list[tuple[float, float]]]:
    """Stable's windows' (requests, errors), for the dispersion estimate."""
    return [[(w[2], w[3]) for w in ev.windows if w[2] > 0]]


def latency_windows(ev: Evidence, bound: float, stable: bool = True) -> list[list[tuple[float, float]]]:
    """Stable's windows' (requests, requests slower than ``bound``), for the dispersion estimate."""
    bounds = ev.window_bounds
    index = next((i for i, b in enumerate(bounds) if math.isclose(b, bound, rel_tol=1e-9)), None)
    if index is None:
        return []
    k = len(bounds)
    return [[(w[2], w[4 + k + index]) for w in ev.windows if w[2] > 0 and not math.isnan(w[4 + k + index])]]


def _survival(buckets: tuple[tuple[float, float], ...], at: float) -> float | None:
    """Share of requests slower than ``at`` s, log-log interpolated between bucket boundaries: used only
    to size the sample and pick a boundary, never to judge."""
    rows = [(le, c) for le, c in buckets if math.isfinite(le)]
    total = buckets[-1][1] if buckets and math.isinf(buckets[-1][0]) else None
    if not rows or not total or total <= 0:
        return None
    points = [(le, max(total - c, 0.0) / total) for le, c in rows]
    for le, s in points:
        if math.isclose(le, at, rel_tol=1e-9):
            return s
    below = [(le, s) for le, s in points if le < at]
    above = [(le, s) for le, s in points if le > at]
    if not below:
        return 1.0 if not above else max(above[0][1], 1.0 - (1.0 - above[0][1]) * at / above[0][0])
    if not above:
        return below[-1][1]
    (l0, s0), (l1, s1) = below[-1], above[0]
    floor = 0.5 / total  # a zero share reads as half a request, so the logarithm exists
    s0, s1 = max(s0, floor), max(s1, floor)
    frac = (math.log(at) - math.log(l0)) / (math.log(l1) - math.log(l0))
    return math.exp(math.log(s0) + frac * (math.log(s1) - math.log(s0)))


survival = _survival  # the judge reads the +detect regression's slow share with it (the acceptance side)


def choose_boundary(buckets: tuple[tuple[float, float], ...], q: float, detect: float) -> float | None:
    """The bucket boundary at which to compare slow shares for quantile ``q``: a boundary at or beyond
    stable's q-quantile (at most 2 x (1 - q) of stable's requests above it; 3 x with coarse buckets)
    where stable has at least ``MIN_SLOW`` slow requests of its own (else the comparison's power is
    capped by stable's few), and among those the one where a +``detect`` slowdown shows most per request."""
    if not buckets or not math.isinf(buckets[-1][0]) or buckets[-1][1] <= 0:
        return None
    total = buckets[-1][1]
    rows = [(le, max(total - c, 0.0)) for le, c in buckets if math.isfinite(le)]
    near = [(le, slow) for le, slow in rows if slow / total <= 2 * (1 - q)]
    wide = [(le, slow) for le, slow in rows if slow / total <= 3 * (1 - q)]
    candidates = ([x for x in near if x[1] >= MIN_SLOW] or [x for x in wide if x[1] >= MIN_SLOW] or near)
    best, best_score = None, -1.0
    floor = 0.5 / total
    for le, slow in candidates:
        p0 = slow / total
        p1 = _survival(buckets, le / (1 + detect))
        if p1 is None:
            continue
        score = (p1 - p0) / math.sqrt(max(p1, floor))
        if score > best_score:
            best, best_score = le, score
    return best


def guard(policy: Policy, ev: Evidence, *, cross_pool: bool = False, canary_weight: int = 0,
          check_alpha: float | None = None, reference: object = None) -> Guard:
    """How many canary requests the rollout needs before it may be promoted (pure; see the module docstring)."""
    if check_alpha is None:
        check_alpha = policy.alpha / len(check_names(policy, cross_pool))
    alpha = check_alpha * SIZING_SHARE
    ratio = 1.0 + policy.detect_error_increase
    # early acceptance (judge.py) may spend ACCEPT_SHARE of the miss budget: the full sample is sized for the rest
    sizing_power = 1.0 - (1.0 - policy.power) * (1.0 - spending.ACCEPT_SHARE)
    look_power = sizing_power ** (1.0 / max(policy.failure_threshold, 1))
    parts = [f"+{policy.detect_error_increase:.0%} errors"]
    notes: list[str] = []
    needed = max(policy.min_requests, 1)
    ref_req, ref_err = ev.reference_requests, ev.reference_errors
    phi = stats.dispersion(error_windows(ev))[0]
    if ref_req <= 0:
        return Guard(needed, parts[0], unknown="no stable measurement yet to size the minimum sample with", phi_errors=phi)
    measured = ref_err / ref_req
    floor = ERROR_FLOOR_SHARE * _error_limit(policy, cross_pool)
    base = max(measured, floor)
    if base > measured:
        notes.append(f"stable's error rate {measured:.3%} is sized as {base:.3%} ({ERROR_FLOOR_SHARE:.0%} of the limit)")
    # while stable serves beside the canary, sized with the smaller of the two readings' dispersions
    # (contrast.sizing_dispersion); at 100 % no window adds to the paired reading, so the sample that may
    # promote is the pooled test's, at stable's dispersion over time (phi_errors, which the test keeps)
    paired = 0 < canary_weight < 100
    sizing = contrast.sizing_dispersion(phi, contrast.error_pairs(ev)) if paired else phi
    if sizing > 1.0:
        notes.append(f"errors overdispersed across windows (phi {sizing:.2g})")
    # stable keeps serving while the canary is below 100 %: its requests grow with the canary's
    per_canary = (100 - canary_weight) / canary_weight if 0 < canary_weight < 100 else 0.0
    size = stats.requests_for_rate_power(base, ratio, alpha, look_power, stable_requests=ref_req / sizing,
                                         stable_per_canary=per_canary, canary_requests=ev.canary_requests / sizing)
    if size is None:
        return Guard(needed, parts[0], unknown="stable's counts cannot give the error comparison any power",
                     phi_errors=phi)
    needed = max(needed, math.ceil(size.requests * sizing))
    if size.capped:
        notes.append(f"power capped at {size.power:.0%} by stable's {ref_req} requests")
    buckets = ev.reference_buckets
    if not cross_pool and buckets and ev.boundaries is not None:
        chosen = dict(ev.boundaries)
        for q in policy.quantiles:
            name = f"p{q * 100:g} vs stable"
            bound = chosen.get(name) or choose_boundary(buckets, q, policy.detect_latency_increase)
            if bound is None:
                continue
            got = stats.share_above(buckets, bound)
            p1 = _survival(buckets, bound / (1 + policy.detect_latency_increase))
            if got is None or p1 is None or got[1] <= 0:
                continue
            p0 = max(got[0] / got[1], 0.5 / got[1])
            if p1 <= p0:
                continue
            phi_lat = stats.dispersion(latency_windows(ev, bound))[0]
            if paired:
                phi_lat = contrast.sizing_dispersion(phi_lat, contrast.latency_pairs(ev, bound))
            lat = stats.requests_for_rate_power(p0, p1 / p0, alpha, look_power, stable_requests=got[1] / phi_lat,
                                                stable_per_canary=per_canary, canary_requests=ev.canary_requests / phi_lat)
            if lat is not None:
                needed = max(needed, math.ceil(lat.requests * phi_lat))
                part = f"+{policy.detect_latency_increase:.0%} p{q * 100:g}"
                if part not in parts:
                    parts.append(part)
    return Guard(needed, ", ".join(parts), tuple(notes), phi_errors=phi)
