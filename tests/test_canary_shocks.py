"""A shock that hits canary and stable in the same window (a loaded node, a noisy neighbour, a GC pause) does
not blind the comparison; a burst on one track still counts as noise (reconciler/rollout/contrast.py). Pure.

The figures are a real run's (tests/test_e2e_node_canary.py::test_a_slower_version_is_rolled_back on the real
node at load ~10-20): stable's history had one loaded window (96 of 327 requests slower than 50 ms, against
~2 % in the others), and a canary 8x slower (p95 394 ms vs 49 ms) was not rolled back: the dispersion
estimated from stable's windows over time was ~220, the test read p=0.32, and the guard asked for 27,965
requests (about 2.8 h) at the next looks.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from reconciler.rollout import stats
from reconciler.rollout.contrast import error_pairs, latency_pairs, paired_dispersion, stratified_pvalue
from reconciler.rollout.evidence import accumulate
from reconciler.rollout.guard import error_windows, guard, latency_windows
from reconciler.rollout.judge import judge
from reconciler.rollout.metrics import VersionMetrics
from reconciler.rollout.state import Evidence, Policy

# the e2e tier's dev policy, as the failing state recorded it
E2E = Policy(steps=(50, 100), interval_seconds=30, failure_threshold=1, max_error_rate=0.01, max_p95_latency_ms=500,
             alpha=0.01, error_rate_tolerance=0.25, latency_tolerance=1.0, detect_error_increase=99.0,
             detect_latency_increase=2.0, power=0.55, min_requests=50, slo_p95_latency_ms=500, slo_error_rate=0.02,
             warmup_seconds=60)
BOUNDS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
# (canary requests, canary slower than each bound, stable requests, stable slower than each bound), per window,
# from the failing state's evidence (rounded to whole requests): four windows of stable alone, the fourth one
# loaded, then the canary's first three analysed windows
WINDOWS = [
    (0, (0, 0, 0, 0, 0, 0), 1454, (192, 24, 4, 3, 2, 0)),
    (0, (0, 0, 0, 0, 0, 0), 1288, (245, 32, 2, 1, 0, 0)),
    (0, (0, 0, 0, 0, 0, 0), 1682, (420, 104, 14, 3, 2, 0)),
    (0, (0, 0, 0, 0, 0, 0), 327, (264, 96, 17, 0, 0, 0)),
    (91, (82, 82, 82, 82, 0, 0), 86, (44, 3, 0, 0, 0, 0)),
    (86, (77, 77, 77, 77, 0, 0), 92, (59, 16, 1, 0, 0, 0)),
    (83, (75, 74, 74, 74, 0, 0), 91, (56, 15, 0, 0, 0, 0)),
]


def track(name: str, requests: float, slower: tuple[float, ...], errors: float = 0.0) -> VersionMetrics:
    buckets = (*((le, requests - s) for le, s in zip(BOUNDS, slower, strict=True)), (math.inf, float(requests)))
    p95 = stats.histogram_quantile(0.95, buckets)
    return VersionMetrics(track=name, requests_per_second=requests / 30, error_rate=errors / max(requests, 1),
                          p95_ms=p95 * 1000 if p95 is not None else None, requests=requests, errors=errors,
                          latency_buckets=buckets)


def evidence(windows, policy: Policy = E2E) -> Evidence:
    ev = Evidence()
    for nc, c_slow, ns, s_slow in windows:
        canary = track("canary", nc, c_slow) if nc else None
        ev = accumulate(ev, track("stable", ns, s_slow), canary, policy.min_requests)
    return ev


def test_an_8x_slower_canary_after_a_loaded_stable_window_is_rolled_back_at_its_first_analysis() -> None:
    ev = evidence(WINDOWS[:5])
    # the cause, as it was: stable's windows over time read the loaded window as overdispersion
    assert stats.dispersion(latency_windows(ev, 0.05))[0] > 100
    # the paired contrast has no common shock in it (one window with both tracks: no degrees of freedom yet)
    assert paired_dispersion(latency_pairs(ev, 0.05)) == (1.0, 0)
    stable, canary = track("stable", *WINDOWS[4][2:]), track("canary", *WINDOWS[4][:2])
    verdict = judge(E2E, stable, canary, evidence=ev, canary_weight=50)
    assert verdict.failed, verdict.reasons
    assert verdict.reasons[0].startswith("decided by p95 vs stable on 91 canary requests"), verdict.reasons[0]
    assert any(r.startswith("FAILED p95 vs stable: canary 90.11% of 91 requests slower than 50 ms vs stable")
               for r in verdict.reasons), verdict.reasons


def test_the_guard_sizes_with_the_paired_contrast_while_stable_serves_beside_the_canary() -> None:
    # the failing run's third look: at 100 % (stable's windows no longer add to the paired reading) the guard
    # sizes for the pooled test, at stable's dispersion over time; at 50 % with the paired contrast's, so the
    # spending rule's information time, and the levels the paired reading is held to, are not set by the shock
    ev = evidence(WINDOWS)
    at_full, beside = guard(E2E, ev, canary_weight=100).needed, guard(E2E, ev, canary_weight=50).needed
    assert beside < at_full / 5, (beside, at_full)


def pairs(rng: np.random.Generator, *, common: set[int] = frozenset(), canary_only: set[int] = frozenset(),
          ratio: float = 1.0, windows: int = 12, n: int = 2000, rate: float = 0.02) -> list[tuple[float, ...]]:
    """Windows of (canary requests, events, stable requests, events): a shock (x10) on both tracks in the
    ``common`` windows, on the canary alone in the ``canary_only`` ones, the canary at ``ratio`` x stable."""
    rows = []
    for w in range(windows):
        shock = 10.0 if w in common else 1.0
        burst = 10.0 if w in canary_only else 1.0
        rows.append((float(n), float(rng.binomial(n, min(rate * shock * burst * ratio, 1.0))),
                     float(n), float(rng.binomial(n, min(rate * shock, 1.0)))))
    return rows


def test_a_common_shock_cancels_in_the_paired_contrast_and_a_canary_only_burst_does_not() -> None:
    # 12 windows of 2,000 requests per track at 2 % slow, over 40 seeds (the estimate is an upper one: X^2 over
    # the chi-square's lower quartile, so a binomial contrast reads about 1.2)
    common, over_time, burst, steady = [], [], [], []
    for seed in range(40):
        rng = np.random.default_rng(seed)
        shocked = pairs(rng, common={3, 8})
        common.append(paired_dispersion(shocked)[0])
        over_time.append(stats.dispersion([[(ns, ks) for _, _, ns, ks in shocked]])[0])
        burst.append(paired_dispersion(pairs(rng, canary_only={5}))[0])
        steady.append(paired_dispersion(pairs(rng, ratio=3.0, common={2}))[0])
    assert min(over_time) > 100  # stable's windows over time: two shocks read as noise (phi ~300)
    assert np.median(common) < 1.5 and max(common) < 3  # the contrast: they cancel
    assert min(burst) > 10  # a burst on the canary alone is noise the tests must widen for (phi ~30)
    assert np.median(steady) < 1.5 and max(steady) < 3  # a steady regression is the effect: it cannot hide itself
    assert paired_dispersion(pairs(np.random.default_rng(0))[:1]) == (1.0, 0)  # one window: no degrees of freedom


def test_the_stratified_reading_holds_its_level_on_shocks_and_bursts_and_sees_through_shocks() -> None:
    rng = np.random.default_rng(3)
    trials, pooled_hits, paired_hits = 300, 0, 0
    for _ in range(trials):  # A/A: two common shocks and a burst on the canary alone (not in a shocked window,
        # where 10x10 would make every request fail), the canary at two weights
        burst = int(rng.choice([0, 1, 3, 4, 5, 6, 8, 9, 10, 11]))
        rows = pairs(rng, common={2, 7}, canary_only={burst}, windows=12, rate=0.01)
        rows = [(nc * (0.2 if w < 6 else 1.0), kc * (0.2 if w < 6 else 1.0), ns, ks) for w, (nc, kc, ns, ks)
                in enumerate(rows)]  # the canary at a fifth of its traffic in the first half (counts rounded below)
        rows = [(round(nc), round(kc), ns, ks) for nc, kc, ns, ks in rows]
        paired_hits += stratified_pvalue(rows, 1.0, paired_dispersion(rows)[0]) < 0.01
        kc, nc = sum(r[1] for r in rows), sum(r[0] for r in rows)
        ks, ns = sum(r[3] for r in rows), sum(r[2] for r in rows)
        pooled_hits += stats.quasi_rate_pvalue(kc, nc, ks, ns) < 0.01
    assert paired_hits / trials <= 0.01, paired_hits  # calibrated on shocks and bursts (measured 0 of 1,000)
    assert pooled_hits / trials > 0.1, pooled_hits  # without a dispersion the pooled binomial is not
    # a 2x canary under the same shocks: the stratified reading sees it where stable's time series hides it
    rows = pairs(np.random.default_rng(4), common={2, 7}, ratio=2.0, rate=0.01)
    kc, nc, ks, ns = (sum(r[i] for r in rows) for i in (1, 0, 3, 2))
    time_phi = stats.dispersion([[(r[2], r[3]) for r in rows]])[0]
    assert stats.quasi_rate_pvalue(kc, nc, ks, ns, time_phi) > 0.01  # blinded: phi over time ~ 100
    assert stratified_pvalue(rows, 1.0, paired_dispersion(rows)[0]) < 1e-6


def test_the_error_check_shows_both_readings() -> None:
    rows = pairs(np.random.default_rng(8), common={4}, ratio=3.0, rate=0.002, n=20_000)
    ev = Evidence()
    for nc, kc, ns, ks in rows:
        c = VersionMetrics(track="canary", requests_per_second=nc / 30, error_rate=kc / nc, p95_ms=100.0, requests=nc,
                           errors=kc)
        s = VersionMetrics(track="stable", requests_per_second=ns / 30, error_rate=ks / ns, p95_ms=100.0, requests=ns,
                           errors=ks)
        ev = accumulate(ev, s, c, E2E.min_requests)
    assert stats.dispersion([error_windows(ev)[0]])[0] > 10  # the shock, read over time
    assert paired_dispersion(error_pairs(ev))[0] < 3
    verdict = judge(replace(E2E, detect_error_increase=1.0, power=0.95), s, c, evidence=ev, canary_weight=50)
    versus = next(r for r in verdict.reasons if "errors vs stable: canary" in r)
    assert "within the 12 windows both served" in versus and "paired dispersion" in versus, versus
    assert verdict.failed and "errors vs stable" in verdict.reasons[0], verdict.reasons
