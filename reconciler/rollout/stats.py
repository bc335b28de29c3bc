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

Power (the minimum-sample guard): how many canary requests the tests above need before a pass
means something. For errors, the conditional test of two Poisson rates, at a canary rate ``ratio`` x
the base rate ``p``, sees ``T = p*(ratio*n_c + n_s)`` errors of which the canary's share is ``pi1``
against ``pi0`` if it were no worse; the normal approximation of that binomial (with a continuity
correction) gives the power. Stable's
requests grow with the canary's while both serve (``stable_per_canary``); when stable serves nothing
(a 100 % step) they are fixed, which caps the power: the guard then asks for the requests that come
within ``CAPPED_MARGIN`` of the cap. For latency, the binomial test of the share above a bound has the
textbook one-sample sample size ``((z_a*sqrt(p0*q0) + z_b*sqrt(p1*q1)) / (p1 - p0))^2``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

Buckets = Sequence[tuple[float, float]]  # (upper bound in seconds, cumulative count), +Inf last

NORMAL = NormalDist()
CAPPED_MARGIN = 0.02     # kept for importers
CAPPED_SHARE = 0.9       # power unreachable (stable's counts are fixed): ask for this share of the cap
MAX_REQUESTS = 10 ** 12  # the search bound of the sample-size solvers


def z_upper(p: float) -> float:
    """The standard normal quantile with ``p`` above it."""
    return NORMAL.inv_cdf(1.0 - min(max(p, 1e-15), 1 - 1e-15))


def rate_ratio_power(canary_requests: float, stable_requests: float, base_rate: float, ratio: float,
                     alpha: float) -> float:
    """Power of the one-sided conditional test (``rate_ratio_pvalue``) to detect a canary at ``ratio`` x
    ``base_rate``: normal approximation of the binomial, with its variance under each hypothesis, at
    the expected number of errors of both tracks."""
    if canary_requests <= 0 or stable_requests <= 0 or base_rate <= 0 or ratio <= 1.0:
        return 0.0
    weight = ratio * canary_requests
    errors = base_rate * (weight + stable_requests)
    pi0 = canary_requests / (canary_requests + stable_requests)
    pi1 = weight / (weight + stable_requests)
    # in counts, with a continuity correction (the exact test needs a whole number of errors past its bound)
    shift = errors * (pi1 - pi0) - z_upper(alpha) * math.sqrt(errors * pi0 * (1 - pi0)) - 0.5
    return NORMAL.cdf(shift / math.sqrt(errors * pi1 * (1 - pi1)))


@dataclass(frozen=True)
class SampleSize:
    """Canary requests needed in all (``requests``), and the power they give (below the target when capped)."""

    requests: int
    power: float
    capped: bool = False


def requests_for_rate_power(base_rate: float, ratio: float, alpha: float, power: float, *,
                            stable_requests: float, stable_per_canary: float,
                            canary_requests: float = 0.0) -> SampleSize | None:
    """The canary requests at which the rate comparison reaches ``power`` against ``ratio`` x ``base_rate``.

    Stable has ``stable_requests`` now (with ``canary_requests`` on the canary) and gains
    ``stable_per_canary`` for every further canary request. None when no amount of canary traffic
    gives any power (no stable requests and none to come, or a zero base rate)."""
    if base_rate <= 0 or ratio <= 1.0 or (stable_requests <= 0 and stable_per_canary <= 0):
        return None

    def stable_at(n: float) -> float:
        return stable_requests + stable_per_canary * max(n - canary_requests, 0.0)

    def power_at(n: float) -> float:
        return rate_ratio_power(n, stable_at(n), base_rate, ratio, alpha)

    target, capped = power, False
    if stable_per_canary <= 0:  # stable's counts are fixed: the power tends to a cap
        cap = power_at(MAX_REQUESTS)
        if cap < power:
            target, capped = cap * CAPPED_SHARE, True
            if target <= 0.0:
                return None
    high = 1
    while power_at(high) < target:
        high *= 2
        if high > MAX_REQUESTS:
            return None
    low = high // 2
    while high - low > 1:  # power grows with n: the smallest n reaching the target
        mid = (low + high) // 2
        if power_at(mid) >= target:
            high = mid
        else:
            low = mid
    return SampleSize(high, power_at(high), capped)


def requests_for_tail_power(p0: float, p1: float, alpha: float, power: float) -> int | None:
    """Requests at which the one-sided binomial test of "share above the bound > p0" reaches ``power``
    when the true share is ``p1``. None when p1 <= p0 (no effect to detect)."""
    if not 0.0 < p0 < 1.0 or not p0 < p1 < 1.0:
        return None
    za, zb = z_upper(alpha), z_upper(1.0 - power)
    n = ((za * math.sqrt(p0 * (1 - p0)) + zb * math.sqrt(p1 * (1 - p1))) / (p1 - p0)) ** 2
    return max(1, math.ceil(n))


def add_buckets(a: Buckets, b: Buckets) -> tuple[tuple[float, float], ...]:
    """The sum of two histograms' bucket increases (same bounds), or ``b`` when ``a`` is empty or differs."""
    if not a:
        return tuple((float(le), float(c)) for le, c in b)
    if not b:
        return tuple((float(le), float(c)) for le, c in a)
    if [le for le, _ in a] != [le for le, _ in b]:
        return tuple((float(le), float(c)) for le, c in b)  # the buckets changed: start again from this one
    return tuple((float(le), float(x) + float(y)) for (le, x), (_, y) in zip(a, b, strict=True))


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


# --------------------------------------------------------------------------- issue 21: counts as Prometheus keeps them
#
# Every check is a one-sided test on counts accumulated over the whole rollout, with the variance
# taken from the data (quasi-binomial: a dispersion phi estimated across analysis windows, so bursts
# of correlated errors widen the test instead of failing it), and the alpha of the whole rollout
# spent over its looks (Lan-DeMets, O'Brien-Fleming shape). See judge.py for how they are combined.


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b) (continued fraction, modified Lentz)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    if a <= 0.0:
        return 1.0
    if b <= 0.0:
        return 0.0
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x > (a + 1.0) / (a + b + 2.0):  # the continued fraction converges fast on this side only
        return 1.0 - betainc(b, a, 1.0 - x)
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((a + m2 - 1.0) * (a + m2)),
                    -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1.0))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return min(1.0, max(0.0, math.exp(log_front) * h / a))


def binom_sf_real(k: float, n: float, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), continued to real k and n (I_p(k, n - k + 1)): the exact
    binomial tail at whole numbers, and the quasi-binomial tail when counts are divided by phi."""
    if k <= 0.0:
        return 1.0
    if k > n or p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    return betainc(k, n - k + 1.0, p)


def quasi_rate_pvalue(canary_events: float, canary_requests: float, stable_events: float, stable_requests: float,
                      phi: float = 1.0) -> float:
    """One-sided p-value of "the canary's rate of events (errors, requests slower than a bound) is above
    stable's": the conditional binomial test of two Poisson rates on counts divided by the dispersion."""
    if canary_requests <= 0 or stable_requests <= 0 or canary_events <= 0:
        return 1.0
    phi = max(phi, 1.0)
    pi0 = canary_requests / (canary_requests + stable_requests)
    return binom_sf_real(canary_events / phi, (canary_events + stable_events) / phi, pi0)


def quasi_share_pvalue(events: float, requests: float, share: float, phi: float = 1.0) -> float:
    """One-sided p-value of "more than ``share`` of the requests are events" (quasi-binomial)."""
    if requests <= 0 or events <= 0 or share <= 0:
        return 1.0 if events <= 0 or requests <= 0 else 0.0
    phi = max(phi, 1.0)
    return binom_sf_real(events / phi, requests / phi, share)


def binom_cdf_real(k: float, n: float, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), continued to real k and n (I_{1-p}(n - k, k + 1)): the lower tail the
    acceptance side of the sequential test reads."""
    if k < 0.0:
        return 0.0
    if k >= n or p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    return betainc(n - k, k + 1.0, 1.0 - p)


def quasi_rate_pvalue_below(canary_events: float, canary_requests: float, stable_events: float,
                            stable_requests: float, ratio: float, phi: float = 1.0) -> float:
    """One-sided p-value of "the canary's rate is below ``ratio`` x stable's" (the regression to catch is
    excluded): the conditional binomial's lower tail at ``ratio``, on counts divided by the dispersion.
    1.0 (nothing excluded) without events on either track: a ratio of nothing to nothing says nothing."""
    if canary_requests <= 0 or stable_requests <= 0 or ratio <= 0 or canary_events + stable_events <= 0:
        return 1.0
    phi = max(phi, 1.0)
    weight = ratio * canary_requests
    pi_r = weight / (weight + stable_requests)
    return binom_cdf_real(canary_events / phi, (canary_events + stable_events) / phi, pi_r)


def quasi_share_pvalue_below(events: float, requests: float, share: float, phi: float = 1.0) -> float:
    """One-sided p-value of "at most ``share`` of the requests are events" being excluded from above, i.e.
    of "the share is below ``share``" (quasi-binomial lower tail)."""
    if requests <= 0 or share <= 0:
        return 1.0
    phi = max(phi, 1.0)
    return binom_cdf_real(events / phi, requests / phi, share)


def chi2_quantile(df: float, q: float) -> float:
    """The chi-square quantile (Wilson-Hilferty), accurate to a few per cent from df = 1."""
    if df <= 0:
        return 0.0
    z = NORMAL.inv_cdf(min(max(q, 1e-12), 1 - 1e-12))
    c = 2.0 / (9.0 * df)
    return max(df * (1.0 - c + z * math.sqrt(c)) ** 3, 1e-9)


DISPERSION_QUANTILE = 0.25  # phi is X^2 over the chi-square's lower quartile: an upper estimate (few windows err wide)


def dispersion(groups: Sequence[Sequence[tuple[float, float]]]) -> tuple[float, int]:
    """(phi, degrees of freedom): the quasi-binomial dispersion of event counts across windows.

    ``groups`` are series with one rate each (the canary's windows, stable's windows): each window is
    (requests, events). Pearson's X^2 of every window against its group's pooled rate, over its
    degrees of freedom' chi-square median (about X^2 / df). Never below 1 (a binomial is the least variance counts can have). With no degrees of
    freedom: 1, and the spending rule keeps such early looks strict."""
    x2, terms, used = 0.0, 0, 0
    for windows in groups:
        rows = [(n, k) for n, k in windows if n >= 1.0]
        total_n = sum(n for n, _ in rows)
        total_k = sum(k for _, k in rows)
        if len(rows) < 2 or total_n <= 0 or total_k <= 0:
            continue
        rate = total_k / total_n
        if rate >= 1.0:
            continue
        used += 1
        for n, k in rows:
            expected = n * rate
            x2 += (k - expected) ** 2 / (expected * (1.0 - rate))
            terms += 1
    df = terms - used
    if df <= 0:
        return 1.0, 0
    return max(1.0, x2 / chi2_quantile(df, DISPERSION_QUANTILE)), df


def share_above(buckets: Buckets, bound: float) -> tuple[float, float] | None:
    """(requests slower than ``bound`` seconds, all requests) when ``bound`` is a bucket boundary
    (exact: no interpolation), else None."""
    rows = _clean(buckets)
    if not rows or not math.isinf(rows[-1][0]):
        return None
    total = rows[-1][1]
    for le, count in rows:
        if math.isclose(le, bound, rel_tol=1e-9, abs_tol=1e-12):
            return max(total - count, 0.0), total
    return None


def boundary_at_or_above(bounds: Sequence[float], value: float) -> float | None:
    """The smallest finite bucket boundary >= ``value`` (seconds)."""
    finite = sorted(b for b in bounds if math.isfinite(b))
    for b in finite:
        if b >= value * (1 - 1e-9):
            return b
    return None
