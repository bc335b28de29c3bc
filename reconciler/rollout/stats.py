"""The statistics the judges use, on counts. Pure functions in pure Python (the core install,
which runs canaries, has no scipy; only the Mann-Whitney judge needs it).

Errors are counts of requests, so they are compared as counts: given the errors both versions
made, a canary that is no worse than ``ratio`` x stable makes each of them with probability
``pi0 = ratio*n_c / (ratio*n_c + n_s)`` (the conditional test for two Poisson rates). That is exact
at any traffic, and it does not depend on how the requests were sliced into rate windows.

Latency comes from the request-duration histogram as Prometheus keeps it (cumulative bucket
counts). A canary whose p95 is no worse than ``T`` has at most 5 % of its requests slower than
``T``; the number slower than ``T`` is then binomial, which gives an exact one-sided test of "the
canary's p95 is above T" from the canary's own requests, one observation per request.
``histogram_quantile`` and ``fraction_above`` interpolate within a bucket the way PromQL's
``histogram_quantile`` does, so both sides of a comparison are read through the same lens.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

Buckets = Sequence[tuple[float, float]]  # (upper bound in seconds, cumulative count), +Inf last


def rate_ratio_pvalue(canary_errors: int, canary_requests: int, stable_errors: int, stable_requests: int,
                      ratio: float = 1.0) -> float:
    """One-sided p-value of "the canary's error rate is above ``ratio`` x stable's" (conditional binomial)."""
    total = canary_errors + stable_errors
    if total <= 0 or canary_requests <= 0 or canary_errors <= 0:
        return 1.0
    if stable_requests <= 0:
        return 1.0
    weight = ratio * canary_requests
    pi0 = weight / (weight + stable_requests)
    return binom_sf(canary_errors, total, pi0)


def tail_pvalue(slower: int, requests: int, share: float = 0.05) -> float:
    """One-sided p-value of "more than ``share`` of the requests are slower than the threshold"."""
    if requests <= 0 or slower <= 0:
        return 1.0
    return binom_sf(slower, requests, share)


def binom_sf(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), exact, in pure Python (the core install has no scipy).

    Sums the pmf outwards from k by the ratio of consecutive terms, over whichever tail is the
    smaller, and stops once the terms no longer change the sum."""
    if k <= 0:
        return 1.0
    if k > n or p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    log_p, log_q = math.log(p), math.log1p(-p)

    def log_pmf(i: int) -> float:
        return math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p + (n - i) * log_q

    upper = k > n * p  # sum the upper tail from k, else 1 - the lower tail below k
    i = k if upper else k - 1
    term = math.exp(log_pmf(i))
    total = 0.0
    ratio_pq = p / (1.0 - p)
    while True:
        total += term
        if upper:
            if i >= n:
                break
            term *= (n - i) / (i + 1) * ratio_pq
            i += 1
        else:
            if i <= 0:
                break
            term *= i / (n - i + 1) / ratio_pq
            i -= 1
        if term < total * 1e-16:
            break
    return min(1.0, total) if upper else max(0.0, 1.0 - total)


def _clean(buckets: Buckets) -> list[tuple[float, float]]:
    rows = sorted((float(le), float(c)) for le, c in buckets if c is not None and not math.isnan(c))
    out: list[tuple[float, float]] = []
    running = 0.0
    for le, count in rows:  # counts are cumulative; a scrape race can make them dip: keep them monotone
        running = max(running, count)
        out.append((le, running))
    return out


def histogram_quantile(q: float, buckets: Buckets) -> float | None:
    """PromQL's histogram_quantile: linear interpolation inside the bucket holding the rank (seconds)."""
    rows = _clean(buckets)
    if not rows or not math.isinf(rows[-1][0]) or rows[-1][1] <= 0:
        return None
    total = rows[-1][1]
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for le, count in rows:
        if count >= rank:
            if math.isinf(le):
                return lower_bound  # the +Inf bucket: PromQL returns the highest finite bound
            if count == lower_count:
                return le
            return lower_bound + (le - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = le, count
    return None


def fraction_above(buckets: Buckets, threshold: float) -> tuple[float, float]:
    """(requests slower than ``threshold`` seconds, all requests), interpolated inside its bucket."""
    rows = _clean(buckets)
    if not rows or not math.isinf(rows[-1][0]):
        return 0.0, 0.0
    total = rows[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for le, count in rows:
        if threshold <= le:
            if math.isinf(le):
                return total - lower_count, total  # beyond the last finite bound: all of the +Inf bucket
            below = lower_count + (count - lower_count) * (threshold - lower_bound) / (le - lower_bound)
            return max(total - below, 0.0), total
        lower_bound, lower_count = le, count
    return 0.0, total
