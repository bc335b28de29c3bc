"""Judges and their statistics, pure: counts-based error test, histogram tail test, Mann-Whitney on
non-overlapping windows, three outcomes, guards, cross-pool SLO + fair cost; and CI-sized runs of
the traffic simulation (benchmarks/canary_sim.py) for every scenario of issue #12."""

from __future__ import annotations

import importlib.util
import math
import sys
from dataclasses import replace
from statistics import NormalDist
from pathlib import Path

import numpy as np
import pytest

from reconciler.rollout import spending, stats
from reconciler.catalog.buckets import BENTOML_DEFAULT, duration_buckets
from reconciler.rollout.evidence import accumulate
from reconciler.rollout.judge import Outcome, judge, mann_whitney_worse
from reconciler.rollout.metrics import VersionMetrics
from reconciler.rollout.prometheus import sample_layout
from reconciler.rollout.state import Evidence, Policy
from reconciler.rollout.stats import fraction_above, histogram_quantile, rate_ratio_pvalue, tail_pvalue

ROOT = Path(__file__).resolve().parents[1]
# these tests judge single intervals on other grounds: the minimum-sample guard is sized for a 10x error
# regression at 60 % power so that it lets them through (the guard itself: test_canary_guard.py)
SIZED = {"detect_error_increase": 9.0, "power": 0.6}
POLICY = Policy(max_error_rate=0.05, max_p95_latency_ms=None, **SIZED)
BUCKETS = (0.05, 0.1, 0.25, 0.5, math.inf)


def counts(track: str, requests: float, errors: float, p95: float = 120.0, buckets=None, **kw) -> VersionMetrics:
    return VersionMetrics(track=track, requests_per_second=requests / 300, error_rate=errors / max(requests, 1),
                          p95_ms=p95, requests=requests, errors=errors, latency_buckets=tuple(buckets or ()), **kw)


def hist(requests: int, p95_ms: float, rng: np.random.Generator, sigma: float = 0.35) -> tuple:
    median = p95_ms / 1000 / math.exp(1.645 * sigma)
    samples = rng.lognormal(math.log(median), sigma, requests)
    return tuple((le, float((samples <= le).sum())) for le in BUCKETS)


# --------------------------------------------------------------------------- statistics


def test_rate_ratio_pvalue_direction_and_ratio() -> None:
    assert rate_ratio_pvalue(40, 10_000, 20, 10_000) < 0.01      # twice the errors on equal traffic
    assert rate_ratio_pvalue(20, 10_000, 40, 10_000) > 0.99
    assert rate_ratio_pvalue(0, 10_000, 40, 10_000) == 1.0
    # tested against "no worse than 1.25x", the same counts are weaker evidence
    assert rate_ratio_pvalue(40, 10_000, 20, 10_000, ratio=1.25) > rate_ratio_pvalue(40, 10_000, 20, 10_000)


def test_rate_ratio_pvalue_is_calibrated_on_identical_rates() -> None:
    rng = np.random.default_rng(7)
    ps = [rate_ratio_pvalue(int(rng.binomial(1500, 0.002)), 1500, int(rng.binomial(13_500, 0.002)), 13_500)
          for _ in range(2000)]
    assert sum(p < 0.01 for p in ps) / len(ps) <= 0.015  # exact test: at most alpha (discreteness makes it less)


def test_histogram_quantile_and_fraction_above_interpolate_like_promql() -> None:
    buckets = ((0.1, 50.0), (0.2, 90.0), (math.inf, 100.0))
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1)
    assert histogram_quantile(0.7, buckets) == pytest.approx(0.15)
    assert histogram_quantile(0.95, buckets) == pytest.approx(0.2)  # in +Inf: the highest finite bound
    slower, total = fraction_above(buckets, 0.15)
    assert (slower, total) == (pytest.approx(30.0), 100.0)
    assert histogram_quantile(0.5, ()) is None and fraction_above((), 0.1) == (0.0, 0.0)


def test_tail_pvalue() -> None:
    assert tail_pvalue(50, 1000) > 0.4          # 5 % slower than the bound: what a p95 allows
    assert tail_pvalue(100, 1000) < 1e-6


def test_latency_windows_never_overlap() -> None:
    # measured on main: 12 one-minute windows every 25 s overlapped, and 25-27 % of A/A intervals gave p < 0.01
    for interval in (60, 300, 600, 3600):
        windows, seconds = sample_layout(interval, 12)
        assert windows * seconds == pytest.approx(interval) and seconds >= 30 and windows <= 12


def test_mann_whitney_pvalue_direction() -> None:
    low, high = [0.01, 0.02, 0.01, 0.015, 0.012, 0.011], [0.05, 0.06, 0.04, 0.055, 0.07, 0.045]
    assert mann_whitney_worse(low, high) < 0.01
    assert mann_whitney_worse(high, low) > 0.9
    assert mann_whitney_worse([0.0] * 6, [0.0] * 6) == 1.0  # all ties: no evidence


# --------------------------------------------------------------------------- issue 21: the new statistics


def test_continuous_binomial_tail_matches_scipy() -> None:
    from scipy.special import betainc as sp_betainc
    from scipy.stats import binom

    for a, b, x in ((3, 10, 0.2), (0.5, 2, 0.3), (50, 4000, 0.01), (7.3, 991.2, 0.004)):
        assert stats.betainc(a, b, x) == pytest.approx(sp_betainc(a, b, x), rel=1e-9, abs=1e-15)
    for k, n, p in ((7, 1000, 0.004), (1, 50, 0.01), (60, 20_000, 0.002)):
        assert stats.binom_sf_real(k, n, p) == pytest.approx(binom.sf(k - 1, n, p), rel=1e-9)


def test_spending_is_nothing_early_and_all_of_alpha_at_the_end() -> None:
    a = 0.0025
    assert spending.obrien_fleming_spent(0.0, a) == 0.0
    assert spending.obrien_fleming_spent(0.25, a) < a * 1e-5
    assert spending.obrien_fleming_spent(0.5, a) < spending.obrien_fleming_spent(0.9, a) < a
    assert spending.obrien_fleming_spent(1.0, a) == pytest.approx(a) and spending.obrien_fleming_spent(3.0, a) <= a


def test_dispersion_is_one_for_binomial_counts_and_large_for_bursts() -> None:
    rng = np.random.default_rng(5)
    plain = [[(15_000.0, float(rng.binomial(15_000, 0.002))) for _ in range(30)]]
    phi, df = stats.dispersion(plain)
    assert df == 29 and 1.0 <= phi < 2.0  # an upper estimate: X^2 over the chi-square's lower quartile (~1.2)
    bursty = [[(15_000.0, float(rng.binomial(15_000, 0.002 * (8 if rng.random() < 0.2 else 0.3))))
               for _ in range(30)]]
    assert stats.dispersion(bursty)[0] > 3
    assert stats.dispersion([[(100.0, 1.0)]]) == (1.0, 0)  # one window: no degrees of freedom


def test_quasi_tests_hold_alpha_on_overdispersed_counts_where_binomial_ones_do_not() -> None:
    # bursty A/A windows (20 % of windows at 8x), phi estimated from stable's windows as the judge does
    rng = np.random.default_rng(11)

    def window(n: int) -> float:
        return float(rng.binomial(n, 0.002 * (8 if rng.random() < 0.2 else 0.25)))

    plain_hits = quasi_hits = 0
    trials = 400
    for _ in range(trials):
        stable = [(15_000.0, window(15_000)) for _ in range(12)]
        canary = [(15_000.0, window(15_000)) for _ in range(4)]
        phi = stats.dispersion([stable])[0]
        kc, nc = sum(k for _, k in canary), sum(n for n, _ in canary)
        ks, ns = sum(k for _, k in stable), sum(n for n, _ in stable)
        plain_hits += stats.quasi_rate_pvalue(kc, nc, ks, ns) < 0.01
        quasi_hits += stats.quasi_rate_pvalue(kc, nc, ks, ns, phi) < 0.01
    assert plain_hits / trials > 0.2  # the binomial test is fooled by bursts (measured 0.41 at p < 0.01)
    # the quasi-binomial one mostly not: what remains (measured 0.04, the same at p < 0.001) are histories of 12
    # windows without a single burst (0.8^12 = 7 %), where nothing shows the dispersion; the rollout's
    # spending rule keeps those looks far stricter than 0.01 (benchmarks/README-canary.md: bursty A/A rows)
    assert quasi_hits / trials <= 0.06 and quasi_hits < plain_hits / 5


def test_share_above_is_exact_at_a_boundary_and_refuses_elsewhere() -> None:
    buckets = ((0.1, 50.0), (0.2, 90.0), (math.inf, 100.0))
    assert stats.share_above(buckets, 0.2) == (10.0, 100.0)
    assert stats.share_above(buckets, 0.15) is None  # would need interpolation
    assert stats.boundary_at_or_above([0.1, 0.25, math.inf], 0.2) == 0.25


# --------------------------------------------------------------------------- outcomes and checks

LAYOUT = duration_buckets([200])


def expected_hist(requests: float, p95_ms: float, layout=LAYOUT, sigma: float = 0.35) -> tuple:
    """Expected cumulative bucket counts of log-normal latencies with this p95 (+Inf last)."""
    median = p95_ms / 1000 / math.exp(1.6448536 * sigma)
    dist = NormalDist(math.log(median), sigma)
    return (*((le, requests * dist.cdf(math.log(le))) for le in layout), (math.inf, float(requests)))


def window(track: str, requests: float, errors: float, p95: float = 120.0, layout=LAYOUT, **kw) -> VersionMetrics:
    return counts(track, requests, errors, p95=p95, buckets=expected_hist(requests, p95, layout), **kw)


def rollout(stable_windows: int = 6, looks: list[tuple[VersionMetrics, VersionMetrics]] | None = None,
            policy: Policy = POLICY) -> Evidence:
    """Evidence of a rollout: stable's history windows, then the analysed (stable, canary) windows."""
    ev = Evidence()
    for _ in range(stable_windows):
        ev = accumulate(ev, window("stable", 15_000, 30), None, policy.min_requests)
    for stable, canary in looks or []:
        ev = accumulate(ev, stable, canary, policy.min_requests)
    return ev


@pytest.mark.parametrize("canary", [None, VersionMetrics("canary"),
                                    VersionMetrics("canary", requests_per_second=5.0, error_rate=float("nan"),
                                                   p95_ms=100.0, requests=1500)])
def test_missing_data_is_inconclusive_never_a_pass_or_a_failure(canary) -> None:
    verdict = judge(POLICY, counts("stable", 13_500, 27), canary)
    assert verdict.outcome is Outcome.inconclusive and "no data" in verdict.reasons[0]


def test_two_x_errors_fail_on_the_rollouts_counts_saying_which_test_on_how_many_requests() -> None:
    policy = Policy(max_error_rate=0.05)
    look = (window("stable", 7500, 15), window("canary", 7500, 30))
    ev = rollout(looks=[look] * 4, policy=policy)
    verdict = judge(policy, *look, evidence=ev, canary_weight=50)
    assert verdict.failed, verdict.reasons
    assert verdict.reasons[0].startswith("decided by errors vs stable on 30000 canary requests")
    assert "error budget left" in verdict.reasons[0] and verdict.budget_left is not None
    assert any(r.startswith("FAILED errors vs stable: canary 0.400% (120/30000)") for r in verdict.reasons)
    same = rollout(looks=[(look[0], window("canary", 7500, 15))] * 4, policy=policy)
    assert judge(policy, look[0], window("canary", 7500, 15), evidence=same, canary_weight=50).passed


def test_error_increase_within_the_tolerance_passes_even_when_significant() -> None:
    policy = Policy(max_error_rate=0.05)
    look = (window("stable", 1_000_000, 2000), window("canary", 1_000_000, 2200))
    ev = rollout(looks=[look], policy=policy)
    assert stats.quasi_rate_pvalue(2200, 1_000_000, 2000 + 180, 1_090_000) < 0.01  # 10 % more: "significant"
    assert not judge(policy, *look, evidence=ev, canary_weight=50).failed


def test_a_look_spends_only_new_alpha_and_a_confirming_look_the_alpha_spent_so_far() -> None:
    policy = Policy(max_error_rate=0.05)
    look = (window("stable", 7500, 15), window("canary", 7500, 30))
    ev = rollout(looks=[look] * 4, policy=policy)
    first = judge(policy, *look, evidence=ev, canary_weight=50)
    assert first.failed and first.evidence is not None
    # the same evidence judged again: its alpha is spent, nothing new to spend on it
    again = judge(policy, *look, evidence=first.evidence, canary_weight=50)
    assert not again.failed
    # but a look confirming an earlier failure is held to all the alpha spent so far
    assert judge(policy, *look, evidence=first.evidence, canary_weight=50, confirming=True).failed
    spent = sum(v for _, v in first.evidence.spent)
    assert spent <= policy.alpha and first.budget_left == pytest.approx(policy.alpha - spent)


def test_the_acceptance_side_excludes_a_regression_at_most_at_its_level() -> None:
    """quasi_rate_pvalue_below: when the canary truly runs at the ratio to catch, its p-value is below a level at
    most that often (it is a valid test of "the regression is there"); when the canary is as good as stable and
    the counts are large, it excludes the regression."""
    rng = np.random.default_rng(21)
    base, ratio, nc, ns = 0.002, 2.0, 12_000, 180_000
    below = [stats.quasi_rate_pvalue_below(rng.binomial(nc, base * ratio), nc, rng.binomial(ns, base), ns, ratio)
             for _ in range(4000)]
    for level in (0.01, 0.05):
        assert np.mean(np.array(below) < level) <= level + 0.005
    healthy = [stats.quasi_rate_pvalue_below(rng.binomial(nc * 4, base), nc * 4, rng.binomial(ns, base), ns, ratio)
               for _ in range(200)]
    assert np.mean(np.array(healthy) < 0.01) > 0.9
    assert stats.quasi_share_pvalue_below(2, 10_000, 0.05) < 1e-100
    assert stats.quasi_rate_pvalue_below(0, 1000, 0, 1000, 2.0) == 1.0  # nothing to nothing: excludes nothing
    levels = [spending.accept_level(0.0, 0.03)]
    for _ in range(30):
        levels.append(spending.accept_level(sum(levels), 0.03))
    assert levels[0] == 0.015 and sum(levels) <= 0.03


def test_a_healthy_canary_is_accepted_early_at_the_last_weight_only_and_a_regressed_one_never() -> None:
    """The two-sided sequential test (issue 21, fast when healthy): at the last weight a look may promote before
    the guard's full sample when every check's upper bound excludes the regression it must catch."""
    policy = Policy(max_error_rate=0.05)
    history = 24
    healthy = (window("stable", 7500, 15), window("canary", 7500, 15))
    ev = rollout(stable_windows=history, looks=[healthy], policy=policy)
    at_last = judge(policy, *healthy, evidence=ev, canary_weight=100)
    assert at_last.passed and at_last.accepted and not at_last.enough, at_last.reasons
    assert at_last.decided_by.startswith("accepted early on 7500 canary requests")
    assert "2x stable's error rate excluded" in at_last.decided_by and "error budget left" in at_last.decided_by
    before_last = judge(policy, *healthy, evidence=ev, canary_weight=50)
    assert before_last.passed and not before_last.accepted
    doubled = (window("stable", 7500, 15), window("canary", 7500, 30))
    bad = rollout(stable_windows=history, looks=[doubled], policy=policy)
    verdict = judge(policy, *doubled, evidence=bad, canary_weight=100)
    assert not verdict.accepted and any("2x stable's error rate not yet excluded" in r for r in verdict.reasons)
    # the acceptance budget is spent: looked at again, the same evidence meets half the level
    again = judge(policy, *healthy, evidence=at_last.evidence, canary_weight=100)
    assert dict(again.evidence.accept_spent)["errors vs stable"] == pytest.approx(
        0.75 * (1 - policy.power) * spending.ACCEPT_SHARE)


def test_thirty_percent_slower_fails_at_a_bucket_boundary_for_both_judge_names() -> None:
    for name in ("threshold", "mann-whitney"):
        policy = Policy(judge=name, max_error_rate=0.05)
        look = (window("stable", 13_500, 27), window("canary", 1500, 3, p95=156))
        ev = rollout(looks=[look] * 3, policy=policy)
        verdict = judge(policy, *look, evidence=ev, canary_weight=10)
        assert verdict.failed, verdict.reasons
        assert "decided by p95 vs stable" in verdict.reasons[0]
        assert any("exact at a bucket boundary" in r for r in verdict.reasons)
        fine = rollout(looks=[(look[0], window("canary", 1500, 3))] * 3, policy=policy)
        assert not judge(policy, look[0], window("canary", 1500, 3), evidence=fine, canary_weight=10).failed


def test_limits_are_tests_on_counts_at_the_thresholds_bucket() -> None:
    policy = Policy(max_error_rate=0.01, max_p95_latency_ms=200)
    look = (window("stable", 13_500, 27), window("canary", 7500, 150, p95=250))
    ev = rollout(looks=[look] * 3, policy=policy)
    verdict = judge(policy, *look, evidence=ev, canary_weight=50)
    assert verdict.failed
    assert any(r.startswith("FAILED errors vs limit: canary 2.000%") for r in verdict.reasons)
    assert any(r.startswith("FAILED p95 vs limit") and "slower than 200 ms" in r for r in verdict.reasons)
    # with BentoML's default buckets 200 ms is no boundary: counted at 250 ms, and said so
    default = tuple(BENTOML_DEFAULT)
    look = (window("stable", 13_500, 27, layout=default), window("canary", 7500, 15, p95=300, layout=default))
    ev = rollout(looks=[look] * 3, policy=policy)
    reasons = " ".join(judge(policy, *look, evidence=ev, canary_weight=50).reasons)
    assert "not a bucket boundary: counted at the next one, 250 ms" in reasons


def test_an_empty_stable_is_compared_through_its_counts_over_the_revision() -> None:
    # measured on main: at 100 % the stable serves nothing and that counted as "no data" (30 of 30 rolled back)
    empty = VersionMetrics("stable", requests_per_second=0.0, requests=0.0)
    ev = rollout(looks=[(window("stable", 7500, 15), window("canary", 7500, 15))])
    ev = accumulate(ev, empty, window("canary", 15_000, 30), POLICY.min_requests)
    verdict = judge(POLICY, empty, window("canary", 15_000, 30), evidence=ev, canary_weight=100)
    assert verdict.passed, verdict.reasons


# --------------------------------------------------------------------------- across pools: SLO and fair cost

CROSS = Policy(slo_p95_latency_ms=200, slo_error_rate=0.005, max_error_rate=0.01)


def pool(track: str, name: str, price: float, weight: float, p95: float = 150, replicas: int = 4,
         total_rps: float = 50.0) -> VersionMetrics:
    requests = total_rps * 300 * weight
    return window(track, requests, requests * 0.002, p95=p95, pool=name, hourly_price=price, replicas=replicas,
                  full_replicas=4)


@pytest.mark.parametrize("weight", [0.05, 0.10, 0.25, 0.5, 1.0])
def test_cheaper_pool_is_cheaper_at_any_weight(weight: float) -> None:
    # measured on main: at 5 % with 4 replicas a side, inf2 came out at $0.319 per 1k against $0.023 for g5
    stable = pool("stable", "gpu-a10g", 1.006, 1 - weight, p95=90)
    canary = pool("canary", "inf2", 0.758, weight)
    ev = rollout(looks=[(stable, canary)])
    ev = replace(ev, baseline=pool("stable", "gpu-a10g", 1.006, 1.0, p95=90).as_dict())
    verdict = judge(CROSS, stable, canary, evidence=ev, cross_pool=True, canary_weight=int(weight * 100))
    assert verdict.passed, verdict.reasons
    assert any("canary pool is cheaper" in r for r in verdict.reasons)


def test_pool_missing_the_slo_fails() -> None:
    stable, canary = pool("stable", "gpu-a10g", 1.006, 0.5), pool("canary", "inf2", 0.758, 0.5, p95=300)
    ev = rollout(looks=[(stable, canary)] * 3)
    verdict = judge(CROSS, stable, canary, evidence=ev, cross_pool=True, canary_weight=50)
    assert verdict.failed and verdict.reasons[0].startswith("decided by p95 vs SLO"), verdict.reasons


@pytest.mark.parametrize("cost_policy, outcome, confirm", [("promote", Outcome.passed, False),
                                                           ("rollback", Outcome.failed, False),
                                                           ("confirm", Outcome.passed, True)])
def test_dearer_pool_meeting_the_slo_follows_the_cost_policy(cost_policy, outcome, confirm) -> None:
    policy = Policy(**{**CROSS.__dict__, "cost_policy": cost_policy})
    stable, canary = pool("stable", "gpu-a10g", 1.006, 0.5), pool("canary", "inf2", 1.30, 0.5)
    verdict = judge(policy, stable, canary, evidence=rollout(looks=[(stable, canary)]), cross_pool=True,
                    canary_weight=50)
    assert verdict.outcome is outcome and verdict.needs_confirmation is confirm
    assert any("costs more" in r for r in verdict.reasons)


# --------------------------------------------------------------------------- the traffic simulation, CI-sized


def _sim():
    spec = importlib.util.spec_from_file_location("canary_sim", ROOT / "benchmarks" / "canary_sim.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def sim():
    return _sim()


# the promises of issue 21 with the seeds CI can afford (bounds, not timings; the 200-seed table is in
# benchmarks/README-canary.md). A/A rows: no false rollback in any seed (the 200-seed bound is 1 %);
# regression rows: every seed caught (200-seed bound 95 %); healthy rows: every seed promoted.
CI = {
    "aa-prod-default": 10, "aa-bursts-prod-default": 6, "aa-daily-staging-default": 6, "aa-resets-prod-template": 6,
    "aa-3models-staging-template": 4, "cold-start-prod-default": 6, "2x-errors-0.2%-prod-default": 6,
    "2x-errors-1%-prod-template": 6, "p95+30%-staging-default": 6, "p99+100%-prod-template": 6,
    "cross-cheaper-prod-default": 6, "cross-misses-slo-prod-template": 6, "low-traffic-prod-default": 4,
    "outage-prod-default": 4, "aa-staging-default": 10, "cold-start-staging-template": 4,
    "slow-after-warmup-staging-default": 4,
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CI))
def test_simulated_traffic_scenario(sim, name: str) -> None:
    scenario = next(s for s in sim.scenarios() if s.name == name)
    runs = [sim.simulate(scenario, scenario.seed_base + seed) for seed in range(CI[name])]
    row = sim.summarise(scenario, runs)
    prefix, op, bound = scenario.expect
    got = sum(v for k, v in row["outcomes"].items() if k.startswith(prefix))
    assert (got <= 0.0) if op == "<=" else (got >= 1.0), row
    if name.startswith("aa-") or name.startswith("cold-start") or name.startswith("cross-cheaper"):
        assert not any(k.startswith("rolled_back") for k in row["outcomes"]), row
    if name in ("aa-staging-default", "aa-prod-default"):  # fast when healthy: within 2x Flagger's interval x steps
        assert row["promote_min"]["median"] <= 2 * row["flagger_min"], row
    # every decision says which test decided, on how many requests, with what error budget left
    for models in runs:
        for run in models:
            if run.outcome in ("promoted", "rolled_back"):
                assert run.decided_by and "canary requests" in run.decided_by and "error budget left" in run.decided_by
    if name.startswith("low-traffic"):  # ends on its own and says why
        assert all(m.outcome == "promoted" or "more canary requests are needed" in (m.last_reason or "")
                   for models in runs for m in models), [m.last_reason for models in runs for m in models]
