"""Judges and their statistics, pure: counts-based error test, histogram tail test, Mann-Whitney on
non-overlapping windows, three outcomes, guards, cross-pool SLO + fair cost; and CI-sized runs of
the traffic simulation (benchmarks/canary_sim.py) for every scenario of issue #12."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from reconciler.rollout.judge import Outcome, accumulate, judge, mann_whitney_worse
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


# --------------------------------------------------------------------------- outcomes and guards


@pytest.mark.parametrize("canary", [None, VersionMetrics("canary"),
                                    VersionMetrics("canary", requests_per_second=5.0, error_rate=float("nan"),
                                                   p95_ms=100.0, requests=1500)])
def test_missing_data_is_inconclusive_never_a_pass_or_a_failure(canary) -> None:
    verdict = judge(POLICY, counts("stable", 13_500, 27), canary)
    assert verdict.outcome is Outcome.inconclusive and "no data" in verdict.reasons[0]


def test_fewer_requests_than_the_minimum_is_inconclusive_even_with_50x_errors() -> None:
    # measured on main: 5 requests per interval were promoted in 98.5 % of A/A runs, 18 % at a 10 % error rate
    verdict = judge(POLICY, counts("stable", 13_500, 27), counts("canary", 5, 1))
    assert verdict.inconclusive and "fewer than the minimum 200" in verdict.reasons[0]


def test_two_x_errors_at_a_low_baseline_fail_on_the_counts() -> None:
    # measured on main: the 0.2-point absolute floor equalled the whole increase; caught in 53 % of runs
    evidence = Evidence(canary_requests=12_750, canary_errors=51, stable_requests=45_750, stable_errors=92)
    verdict = judge(POLICY, counts("stable", 7500, 15), counts("canary", 7500, 30), evidence=evidence)
    assert verdict.failed and "significantly above stable" in verdict.reasons[0]
    same = Evidence(canary_requests=12_750, canary_errors=26, stable_requests=45_750, stable_errors=92)
    assert judge(POLICY, counts("stable", 7500, 15), counts("canary", 7500, 15), evidence=same).passed


def test_error_increase_within_the_tolerance_passes_even_when_significant() -> None:
    evidence = Evidence(canary_requests=1_000_000, canary_errors=2200, stable_requests=1_000_000, stable_errors=2000)
    assert rate_ratio_pvalue(2200, 1_000_000, 2000, 1_000_000) < 0.01  # 10 % more: "significant"
    assert judge(POLICY, counts("stable", 7500, 15), counts("canary", 7500, 16), evidence=evidence).passed


@pytest.mark.parametrize("judge_name", ["threshold", "mann-whitney"])
def test_thirty_percent_slower_p95_fails_both_judges(judge_name: str) -> None:
    # measured on main: the threshold judge caught a +30 % p95 under its fixed limit 0 % of the time
    rng = np.random.default_rng(3)
    policy = Policy(judge=judge_name, max_error_rate=0.05, max_p95_latency_ms=1000, **SIZED)
    windows = dict(latency_samples=tuple(rng.normal(120, 4, 10)))
    slow = dict(latency_samples=tuple(rng.normal(156, 5, 10)))
    stable = counts("stable", 13_500, 27, p95=120, buckets=hist(13_500, 120, rng), **windows)
    canary = counts("canary", 1500, 3, p95=156, buckets=hist(1500, 156, rng), **slow)
    verdict = judge(policy, stable, canary)
    assert verdict.failed and any("significantly above stable" in r for r in verdict.reasons)
    same = counts("canary", 1500, 3, p95=121, buckets=hist(1500, 120, rng),
                  latency_samples=tuple(rng.normal(120, 4, 10)))
    assert judge(policy, stable, same).passed


def test_fixed_limits_stay_an_absolute_check() -> None:
    policy = Policy(max_error_rate=0.01, max_p95_latency_ms=200, **SIZED)
    verdict = judge(policy, counts("stable", 13_500, 270), counts("canary", 1500, 30, p95=250))
    assert verdict.failed
    assert any("p95 250 ms is above the limit 200 ms" in r for r in verdict.reasons)
    assert any("error rate 2.00% is above the limit 1.00%" in r for r in verdict.reasons)


def test_empty_stable_is_judged_against_its_last_measurement() -> None:
    # measured on main: at 100 % the stable serves nothing and that counted as "no data" (30 of 30 rolled back)
    stable_before = counts("stable", 7500, 15, p95=120)
    evidence = accumulate(Evidence(), stable_before, counts("canary", 7500, 15), POLICY.min_requests)
    assert evidence.baseline is not None
    empty = VersionMetrics("stable", requests_per_second=0.0, requests=0.0)
    evidence = accumulate(evidence, empty, counts("canary", 15_000, 30, p95=121), POLICY.min_requests)
    verdict = judge(POLICY, empty, counts("canary", 15_000, 30, p95=121), evidence=evidence, canary_weight=100)
    assert verdict.passed, verdict.reasons
    assert judge(POLICY, empty, counts("canary", 15_000, 30, p95=200), evidence=evidence).failed


# --------------------------------------------------------------------------- across pools: SLO and fair cost

CROSS = Policy(slo_p95_latency_ms=250, slo_error_rate=0.005, max_error_rate=0.01, **SIZED)


def pool(track: str, name: str, price: float, weight: float, p95: float = 150, replicas: int = 4,
         total_rps: float = 50.0) -> VersionMetrics:
    requests = total_rps * 300 * weight
    return counts(track, requests, requests * 0.002, p95=p95, pool=name, hourly_price=price, replicas=replicas,
                  full_replicas=4)


@pytest.mark.parametrize("weight", [0.05, 0.10, 0.25, 0.5, 1.0])
def test_cheaper_pool_is_cheaper_at_any_weight(weight: float) -> None:
    # measured on main: at 5 % with 4 replicas a side, inf2 came out at $0.319 per 1k against $0.023 for g5
    stable = pool("stable", "gpu-a10g", 1.006, 1 - weight, p95=90)
    canary = pool("canary", "inf2", 0.758, weight)
    evidence = accumulate(Evidence(baseline=pool("stable", "gpu-a10g", 1.006, 1.0, p95=90).as_dict(),
                                   stable_requests=15_000, stable_errors=30), stable, canary, 200)
    verdict = judge(CROSS, stable, canary, evidence=evidence, cross_pool=True, canary_weight=int(weight * 100))
    assert verdict.passed, verdict.reasons
    assert any("canary pool is cheaper" in r for r in verdict.reasons)


def test_pool_missing_the_slo_fails() -> None:
    verdict = judge(CROSS, pool("stable", "gpu-a10g", 1.006, 0.5), pool("canary", "inf2", 0.758, 0.5, p95=300),
                    cross_pool=True)
    assert verdict.failed and "misses the SLO 250 ms" in verdict.reasons[0]


@pytest.mark.parametrize("cost_policy, outcome, confirm", [("promote", Outcome.passed, False),
                                                           ("rollback", Outcome.failed, False),
                                                           ("confirm", Outcome.passed, True)])
def test_dearer_pool_meeting_the_slo_follows_the_cost_policy(cost_policy, outcome, confirm) -> None:
    policy = Policy(**{**CROSS.__dict__, "cost_policy": cost_policy})
    verdict = judge(policy, pool("stable", "gpu-a10g", 1.006, 0.5), pool("canary", "inf2", 1.30, 0.5),
                    cross_pool=True)
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


# every scenario of the issue with the seeds CI can afford; bounds are the benchmark's own, except where a
# small sample needs slack (written next to it); the 200-seed table is in benchmarks/README-canary.md
CI = {
    "aa-threshold": 20, "aa-mann-whitney": 10, "2x-errors-0.2%": 20, "2x-errors-1%": 10, "p95+30%": 10,
    "p95+30%-mw": 10, "staging-under-limits": 10, "low-traffic-aa": 10, "low-traffic-50x": 10, "outage-10min": 10,
    "replicas-5-10-25": 5, "cross-cheaper-10/25/50/100": 5, "cross-cheaper-5/10/25/50/100": 5,
    "cross-cheaper-50/100": 5, "cross-cheaper-100": 5, "cross-misses-slo": 5, "cross-costlier-confirm": 5,
    "cross-costlier-promote": 5, "cross-costlier-rollback": 5,
}
SLACK = {"2x-errors-0.2%": 0.90, "2x-errors-0.2%-mw": 0.90,  # >= 95 % over 200 seeds; 20 seeds allow one miss
         "replicas-5-10-25": 0.2}  # <= 1 % over 200 seeds (see README-canary.md); 5 seeds allow one


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CI))
def test_simulated_traffic_scenario(sim, name: str) -> None:
    scenario = next(s for s in sim.scenarios() if s.name == name)
    runs = [sim.simulate(scenario, scenario.seed_base + seed) for seed in range(CI[name])]
    row = sim.summarise(scenario, runs)
    prefix, op, bound = scenario.expect
    if name in SLACK:
        bound = SLACK[name]
    got = sum(v for k, v in row["outcomes"].items() if k.startswith(prefix))
    assert (got <= bound) if op == "<=" else (got >= bound), row
    if name.startswith("2x-errors-0.2%"):  # caught within interval x threshold of the guard's first full sample
        assert row["rollback_analyses_after_first_enough"]["within_threshold"] >= SLACK[name], row
    if name == "replicas-5-10-25":  # the weight reported is what the replicas achieve, not the step's
        assert (5, 20.0) in row["achieved_weights"] and (50, 50.0) in row["achieved_weights"]
