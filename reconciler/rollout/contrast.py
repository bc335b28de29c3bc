"""The dispersion of the canary-vs-stable contrast, from windows where both tracks served (pure).

A comparison of canary and stable is noisy by what differs BETWEEN the tracks within a window, not by what
moves both at once. A common-mode shock (a noisy neighbour, a GC pause, the node under load, a dependency's
bad minute) raises the slow share or the error rate of both tracks in the same window; stable's own windows
over time read it as overdispersion, and on a real node one loaded window in four (96 of 326 requests slower
than 50 ms against ~2 % in the others) gave phi ~200, which blinded the latency test to an 8x slower canary.

So the dispersion is estimated from the paired contrast, stratified by window (as a Mantel-Haenszel analysis
stratifies): given the events both tracks had in window w (T_w), a canary whose rate is a constant ratio r
of stable's has k_c,w ~ Binomial(T_w, pi_w(r)), pi_w(r) = r n_c,w / (r n_c,w + n_s,w). A common shock changes
T_w only, so it cancels. ``r`` is fitted (the weighted score equation: expected canary events = observed),
so a steady regression is the effect the tests measure, not noise; what is left, Pearson's X^2 of the
windows about it (the between-window heterogeneity of the contrast), is the overdispersion a burst on ONE
track makes: a canary-only or stable-only burst still raises phi. Kayenta does the same kind of thing by
comparing canary and baseline over the same interval; Flagger compares absolute thresholds and has no
dispersion at all.

With fewer than two windows in which both tracks served and had events there are no degrees of freedom:
phi is 1 and the spending rule keeps those first looks strict (stats.dispersion, stable's history over time,
is still what the absolute checks, vs limit or SLO, read: there a common shock is real for the canary too).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from reconciler.rollout.state import Evidence
from reconciler.rollout.stats import DISPERSION_QUANTILE, binom_sf_real, chi2_quantile

Pair = tuple[float, float, float, float]  # (canary requests, canary events, stable requests, stable events)


def _canary_share(r: float, nc: float, ns: float) -> float:
    return r * nc / (r * nc + ns)


def common_ratio(rows: Sequence[Pair]) -> float:
    """The rate ratio canary/stable that makes the expected canary events over the windows (given each
    window's events on both tracks) equal the observed ones; 0 or inf when one track has no events."""
    observed = sum(kc for _, kc, _, _ in rows)
    total = sum(kc + ks for _, kc, _, ks in rows)
    if observed <= 0:
        return 0.0
    if observed >= total:
        return math.inf
    low, high = -40.0, 40.0  # log r: the expected canary events grow with r
    for _ in range(100):
        mid = (low + high) / 2
        r = math.exp(mid)
        expected = sum((kc + ks) * _canary_share(r, nc, ns) for nc, kc, ns, ks in rows)
        if expected < observed:
            low = mid
        else:
            high = mid
    return math.exp((low + high) / 2)


def paired_dispersion(windows: Sequence[Pair]) -> tuple[float, int]:
    """(phi, degrees of freedom) of the canary-vs-stable contrast across windows in which both served (see
    the module docstring). Never below 1; (1, 0) without two informative windows."""
    rows = [(nc, kc, ns, ks) for nc, kc, ns, ks in windows
            if nc >= 1.0 and ns >= 1.0 and not math.isnan(kc) and not math.isnan(ks) and kc + ks > 0]
    if len(rows) < 2:
        return 1.0, 0
    df = len(rows) - 1
    r = common_ratio(rows)
    if r <= 0.0 or math.isinf(r):  # one track had every event: each window fits exactly, nothing to measure
        return 1.0, df
    x2 = 0.0
    for nc, kc, ns, ks in rows:
        total = kc + ks
        pi = _canary_share(r, nc, ns)
        x2 += (kc - total * pi) ** 2 / (total * pi * (1.0 - pi))
    return max(1.0, x2 / chi2_quantile(df, DISPERSION_QUANTILE)), df


def _informative(windows: Sequence[Pair]) -> list[Pair]:
    return [(nc, kc, ns, ks) for nc, kc, ns, ks in windows
            if nc >= 1.0 and ns >= 1.0 and not math.isnan(kc) and not math.isnan(ks)]


def _pooled_share(rows: Sequence[Pair], ratio: float) -> tuple[float, float, float]:
    """(canary events, all events, the canary's expected share of them at ``ratio``) over the windows."""
    events = sum(kc + ks for _, kc, _, ks in rows)
    canary = sum(kc for _, kc, _, _ in rows)
    share = sum((kc + ks) * _canary_share(ratio, nc, ns) for nc, kc, ns, ks in rows) / events if events else 0.0
    return canary, events, share


def stratified_pvalue(windows: Sequence[Pair], ratio: float = 1.0, phi: float = 1.0) -> float:
    """One-sided p-value of "the canary's rate is above ``ratio`` x stable's", within the windows both served.

    Given each window's events, the canary's are Binomial(T_w, pi_w); their sum is a Poisson-binomial, read
    here as the binomial with the same mean (T events at the mean share): that has the larger variance, so
    its upper tail is the conservative one. Counts are divided by the paired dispersion as the quasi-binomial
    tests do (stats.quasi_rate_pvalue)."""
    rows = _informative(windows)
    canary, events, share = _pooled_share(rows, ratio)
    if canary <= 0 or events <= 0:
        return 1.0
    phi = max(phi, 1.0)
    return binom_sf_real(canary / phi, events / phi, share)


def error_pairs(ev: Evidence) -> list[Pair]:
    """Each window's (canary requests, canary errors, stable requests, stable errors)."""
    return [(w[0], w[1], w[2], w[3]) for w in ev.windows]


def latency_pairs(ev: Evidence, bound: float) -> list[Pair]:
    """Each window's (canary requests, canary slower than ``bound``, stable requests, stable slower); empty when
    ``bound`` is not a boundary the windows count at."""
    bounds = ev.window_bounds
    index = next((i for i, b in enumerate(bounds) if math.isclose(b, bound, rel_tol=1e-9)), None)
    if index is None:
        return []
    k = len(bounds)
    return [(w[0], w[4 + index], w[2], w[4 + k + index]) for w in ev.windows]


def sizing_dispersion(over_time: float, windows: Sequence[Pair]) -> float:
    """The dispersion the guard sizes with while stable serves beside the canary: the smaller of stable's over
    time and the paired contrast's (once it has a degree of freedom). A check vs stable fails on the stronger of
    its two readings (``both``), so a shock on both tracks that widens the pooled one must not set the
    information time of the spending rule (and so the levels the paired reading is held to) at the size only
    the blinded reading would need. At 100 % the guard sizes with stable's over time: only the pooled reading
    gains from those windows, and the sample that may promote must have the power for it."""
    paired, df = paired_dispersion(windows)
    return min(over_time, paired) if df >= 1 else over_time


@dataclass(frozen=True)
class Paired:
    """A comparison with stable read both ways (see ``both``)."""

    pvalue: float
    text: str


def both(pooled_p: float, windows: Sequence[Pair]) -> Paired:
    """A check vs stable fails on the smaller of two tests, each at half its level (Bonferroni: the chance of a
    false rollback stays within the check's alpha): the pooled one (the canary's counts against stable's over
    its whole revision, variance from stable's windows over time, which a shock on both tracks widens) and the
    stratified one (within the windows both served, variance from the paired contrast, where such a shock
    cancels). The acceptance side stays the pooled one's: under a shock both tracks' slow shares saturate, so
    the shocked windows, which hold most of the slow requests, pull the stratified ratio towards 1 and would
    accept a regression."""
    rows = _informative(windows)
    phi, _ = paired_dispersion(rows)
    paired_p = stratified_pvalue(rows, 1.0, phi)
    canary, events, share = _pooled_share(rows, 1.0)
    text = (f"; within the {len(rows)} windows both served: canary {canary:.0f} of {events:.0f} such requests "
            f"against {share:.0%} at equal rates, paired dispersion {phi:.2g} (pooled p={pooled_p:.2g}, paired "
            f"p={paired_p:.2g})") if rows else "; no window in which both served yet"
    return Paired(min(1.0, 2.0 * min(pooled_p, paired_p)), text)
