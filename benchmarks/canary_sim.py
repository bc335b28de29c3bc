"""Canary judgement on simulated real traffic: every scenario of issue #12, through the real state
machine (reconciler.rollout.machine.step) and judges (reconciler.rollout.judge).

Traffic model, per track (stable / canary) and per 15 s scrape period:
- arrivals: Poisson(rate x 15 s), the rate split by the weight the router achieved;
- errors: Binomial(requests, p), i.e. every request fails on its own with probability p;
- latency: every request log-normal (sigma 0.35, median set from the p95), counted into BentoML's
  default duration buckets (a Multinomial over the buckets is exactly per-request draws binned).
Prometheus' view: cumulative counters sampled at each scrape; ``increase()`` / ``rate()`` with
Prometheus' extrapolation (promql extrapolatedRate), ``sum by (le)`` + ``histogram_quantile`` on
the buckets, and the per-window p95 samples laid out by the same ``sample_layout`` that
``PrometheusAnalysis.collect`` uses. So the judges see what they would see from a real Prometheus.

    .venv/bin/python benchmarks/canary_sim.py                 # 200 seeds per scenario (the recorded table)
    .venv/bin/python benchmarks/canary_sim.py --seeds 40      # quicker
    .venv/bin/python benchmarks/canary_sim.py --only aa-threshold,2x-errors-0.2%

The table and the command are recorded in benchmarks/README-canary.md.
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import sys
import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from reconciler.rollout.judge import judge
from reconciler.rollout.machine import Observations, Promote, Rollback, step
from reconciler.rollout.metrics import VersionMetrics
from reconciler.rollout.prometheus import sample_layout
from reconciler.rollout.controller import achieved_weight as router_weight, canary_replicas
from reconciler.rollout.state import Phase, Policy, RolloutState
from reconciler.rollout.stats import histogram_quantile

SCRAPE = 15.0
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, math.inf)
SIGMA = 0.35
HORIZON = 80  # analyses before a run counts as "still running"


@dataclass(frozen=True)
class Track:
    error_rate: float = 0.002
    p95_ms: float = 120.0
    pool: str = "gpu-a10g"
    price: float = 1.006       # per replica-hour (g5.xlarge)
    replicas: int = 4

    def bucket_probs(self) -> np.ndarray:
        from scipy.stats import lognorm

        median = self.p95_ms / 1000.0 / math.exp(1.6448536 * SIGMA)
        cdf = [lognorm.cdf(b, SIGMA, scale=median) if math.isfinite(b) else 1.0 for b in BUCKETS]
        return np.diff([0.0, *cdf])


@dataclass(frozen=True)
class Scenario:
    name: str
    what: str
    stable: Track = Track()
    canary: Track = Track()
    total_rps: float = 50.0
    policy: Policy = Policy(steps=(10, 25, 50, 100), interval_seconds=300, failure_threshold=2,
                            progress_deadline_seconds=4 * 3600, max_error_rate=0.01, max_p95_latency_ms=None,
                            judge="threshold")
    cross_pool: bool = False
    router: str = "gateway-api"          # "replicas": weights follow whole replicas of total_replicas
    total_replicas: int = 4
    outage: tuple[float, float] | None = None  # Prometheus down over [start, end) seconds
    expect: tuple[str, str, float] = ("rolled_back", "<=", 0.01)  # (outcome prefix, <= or >=, share)
    seed_base: int = 0


def _extrapolated_increase(times: np.ndarray, values: np.ndarray, start: float, end: float) -> np.ndarray | None:
    """promql extrapolatedRate for counters (no resets), over the range (start, end]; values: (n, k)."""
    mask = (times > start) & (times <= end)
    if mask.sum() < 2:
        return None
    t, v = times[mask], values[mask]
    result = v[-1] - v[0]
    sampled = t[-1] - t[0]
    average = sampled / (len(t) - 1)
    to_start = np.full(result.shape, t[0] - start)
    with np.errstate(divide="ignore", invalid="ignore"):
        to_zero = np.where(result > 0, sampled * v[0] / np.where(result > 0, result, 1), np.inf)
    to_start = np.minimum(to_start, to_zero)
    to_end = end - t[-1]
    threshold = average * 1.1
    ext = sampled + np.where(to_start < threshold, to_start, average / 2) + (to_end if to_end < threshold else average / 2)
    return result * ext / sampled


class Prom:
    """The cumulative counters of one track as Prometheus scraped them."""

    def __init__(self, running_for: float = 0.0, track: Track | None = None, rps: float = 0.0) -> None:
        """``running_for`` seconds of earlier traffic in the counters: stable's pods have served for long
        (their counters are large), a canary's pods are new (counters start at zero, and Prometheus'
        extrapolation towards zero then under-counts the first interval, as it does for real)."""
        self.times: list[float] = []
        self.rows: list[np.ndarray] = []  # [requests, errors, bucket_le_0 .. bucket_le_inf] cumulative
        self._total = np.zeros(2 + len(BUCKETS))
        if running_for and track is not None:
            n = rps * running_for
            self._total = np.concatenate([[n, n * track.error_rate], np.cumsum(track.bucket_probs() * n)])

    def scrape(self, at: float, requests: int, errors: int, bucket_counts: np.ndarray) -> None:
        self._total = self._total + np.concatenate([[requests, errors], np.cumsum(bucket_counts)])
        self.times.append(at)
        self.rows.append(self._total.copy())

    def increase(self, start: float, end: float) -> np.ndarray | None:
        if len(self.times) < 2:
            return None
        # only the scrapes in (start, end] matter: slice them first (a long run has thousands)
        lo, hi = bisect.bisect_right(self.times, start), bisect.bisect_right(self.times, end)
        if hi - lo < 2:
            return None
        return _extrapolated_increase(np.asarray(self.times[lo:hi]), np.vstack(self.rows[lo:hi]), start, end)

    def metrics(self, track: Track, name: str, now: float, interval: int, samples: int = 12,
                windows_needed: bool = True) -> VersionMetrics:
        inc = self.increase(now - interval, now)
        if inc is None or inc[0] <= 0:
            return VersionMetrics(track=name, pool=track.pool, requests_per_second=0.0, requests=0.0,
                                  hourly_price=track.price, full_replicas=track.replicas)
        buckets = tuple(zip(BUCKETS, (float(c) for c in inc[2:]), strict=True))
        p95 = histogram_quantile(0.95, buckets)
        windows, seconds = sample_layout(interval, samples)
        lat = []
        if windows > 1 and windows_needed:  # only the Mann-Whitney judge reads the per-window p95s
            for k in range(windows):
                end = now - interval + seconds * (k + 1)
                w = self.increase(end - seconds, end)
                if w is not None and w[0] > 0:
                    q = histogram_quantile(0.95, tuple(zip(BUCKETS, (float(c) for c in w[2:]), strict=True)))
                    if q is not None:
                        lat.append(q * 1000.0)
        return VersionMetrics(track=name, pool=track.pool, requests_per_second=float(inc[0]) / interval,
                              error_rate=float(inc[1] / inc[0]), p95_ms=None if p95 is None else p95 * 1000.0,
                              latency_samples=tuple(lat), requests=float(inc[0]), errors=float(inc[1]),
                              latency_buckets=buckets, hourly_price=track.price, replicas=track.replicas,
                              full_replicas=track.replicas)


@dataclass
class Run:
    outcome: str                      # promoted | rolled_back | paused | running
    analyses: int = 0
    first_enough: int | None = None   # the first analysis whose step had the guard's requests (or the rollback)
    decided_at: int | None = None     # the analysis that rolled back / promoted
    achieved: list[tuple[int, float]] = field(default_factory=list)  # (step weight, achieved weight)
    pvalues: list[dict[str, float]] = field(default_factory=list)
    trace: list[tuple] = field(default_factory=list)


def simulate(sc: Scenario, seed: int, *, calibrate: bool = False) -> Run:
    rng = np.random.default_rng(seed)
    policy = sc.policy
    state = RolloutState(model="sim", environment="prod", policy=policy, stable_revision="v1",
                         stable_pool=sc.stable.pool)
    canary_pool = sc.canary.pool if sc.cross_pool else sc.stable.pool
    probs = {"stable": sc.stable.bucket_probs(), "canary": sc.canary.bucket_probs()}
    proms = {"stable": Prom(running_for=86_400, track=sc.stable, rps=sc.total_rps), "canary": Prom()}
    phase = rng.uniform(0, SCRAPE)
    clock = 0.0
    run = Run("running")
    interval = policy.interval_seconds

    def achieved_weight() -> float:
        w = state.canary_weight
        if state.phase is Phase.promoting:
            w = 100 if sc.cross_pool or w == 100 else w
        if sc.router == "replicas" and state.phase is Phase.progressing:
            c = canary_replicas("replicas", w, sc.total_replicas, sc.total_replicas, state.phase)
            return router_weight("replicas", w, sc.total_replicas, c)
        return float(w)

    def advance(until: float) -> None:
        nonlocal clock, phase
        while phase + SCRAPE <= until:
            phase += SCRAPE
            share = achieved_weight() / 100.0
            for name, track, rps in (("stable", sc.stable, sc.total_rps * (1 - share)),
                                     ("canary", sc.canary, sc.total_rps * share)):
                n = int(rng.poisson(rps * SCRAPE)) if rps > 0 else 0
                errors = int(rng.binomial(n, track.error_rate)) if n else 0
                buckets = rng.multinomial(n, probs[name]) if n else np.zeros(len(BUCKETS))
                proms[name].scrape(phase, n, errors, buckets)
        clock = until

    now = float(interval)  # stable has served alone for an interval when the new revision arrives
    advance(now)
    actions, state = step(state, Observations("v2", canary_ready=False, stable_pool=sc.stable.pool,
                                              canary_pool=canary_pool), now)
    now += interval  # the canary starts; stable's interval alone is its baseline
    advance(now)
    actions, state = step(state, Observations("v2", canary_ready=True, stable_pool=sc.stable.pool,
                                              canary_pool=canary_pool,
                                              stable=proms["stable"].metrics(sc.stable, "stable", now, interval)), now)
    for _ in range(HORIZON * 3):
        now += interval
        advance(now)
        down = sc.outage is not None and sc.outage[0] <= now < sc.outage[1]
        mw = policy.judge == "mann-whitney"
        stable_m = None if down else proms["stable"].metrics(sc.stable, "stable", now, interval, windows_needed=mw)
        canary_m = None if down else proms["canary"].metrics(sc.canary, "canary", now, interval, windows_needed=mw)
        obs = Observations("v2", canary_ready=True, stable=stable_m, canary=canary_m, stable_pool=sc.stable.pool,
                           canary_pool=canary_pool, achieved_weight=achieved_weight(),
                           promoted_ready=state.phase is Phase.promoting,
                           metrics_error="Prometheus is unreachable" if down else None)
        analysing = state.phase is Phase.progressing and not state.paused
        if analysing:
            run.analyses += 1
            run.achieved.append((state.canary_weight, achieved_weight()))
            if calibrate and canary_m is not None:
                from reconciler.rollout.judge import accumulate

                ev = accumulate(state.evidence, stable_m, canary_m, policy.min_requests)
                v = judge(policy, stable_m, canary_m, evidence=ev, cross_pool=state.cross_pool,
                          canary_weight=state.canary_weight)
                run.pvalues.append(v.pvalues)
        before = state.generation
        actions, state = step(state, obs, now)
        if analysing and run.first_enough is None and state.generation != before and (
                state.history[-1].decision not in ("wait", "inconclusive", "hold") or
                (state.evidence.needed_requests and not state.evidence.waiting_for)):
            # the guard let a pass through: the step has the requests to detect the sized effect (a
            # failure before this point is earlier than the target asks; it counts from here too)
            run.first_enough = run.analyses
        if analysing:
            run.trace.append((state.history[-1].decision, state.canary_weight, state.evidence.canary_requests,
                              state.evidence.needed_requests))
        if any(isinstance(a, Rollback) for a in actions):
            run.outcome, run.decided_at = "rolled_back", run.analyses
            return run
        if any(isinstance(a, Promote) for a in actions):
            run.outcome, run.decided_at = "promoted", run.analyses
            return run
        if state.paused:
            run.outcome = f"paused ({state.pause_reason})"
            return run
        if run.analyses >= HORIZON:
            break
    return run


# --------------------------------------------------------------------------- the scenarios of issue #12

PROD = Scenario("base", "")
SLO_POLICY = replace(PROD.policy, slo_p95_latency_ms=250, slo_error_rate=0.005)
G5, INF2 = Track(pool="gpu-a10g", price=1.006), Track(pool="inf2", price=0.758, p95_ms=150)


def scenarios() -> list[Scenario]:
    mw = replace(PROD.policy, judge="mann-whitney")
    low = 60 / 300 / 0.1 / 10  # the canary gets ~5 requests per 5-minute interval at 10 %
    out = [
        Scenario("aa-threshold", "A/A, threshold judge, prod traffic", expect=("rolled_back", "<=", 0.01)),
        Scenario("aa-mann-whitney", "A/A, Mann-Whitney judge", policy=mw, expect=("rolled_back", "<=", 0.01)),
        Scenario("2x-errors-0.2%", "2x errors at a 0.2 % baseline (threshold judge)",
                 canary=Track(error_rate=0.004), expect=("rolled_back", ">=", 0.95), seed_base=10_000),
        Scenario("2x-errors-0.2%-mw", "2x errors at a 0.2 % baseline (Mann-Whitney judge)", policy=mw,
                 canary=Track(error_rate=0.004), expect=("rolled_back", ">=", 0.95), seed_base=10_000),
        Scenario("2x-errors-1%", "2x errors at a 1 % baseline", stable=Track(error_rate=0.01),
                 canary=Track(error_rate=0.02), policy=replace(PROD.policy, max_error_rate=0.05),
                 expect=("rolled_back", ">=", 0.95), seed_base=20_000),
        Scenario("p95+30%", "+30 % p95 (threshold judge)", canary=Track(p95_ms=156), expect=("rolled_back", ">=", 0.95),
                 seed_base=30_000),
        Scenario("p95+30%-mw", "+30 % p95 (Mann-Whitney judge)", policy=mw, canary=Track(p95_ms=156),
                 expect=("rolled_back", ">=", 0.95), seed_base=30_000),
        Scenario("staging-under-limits", "threshold judge: 2x errors and +30 % p95, both under the fixed limits",
                 canary=Track(error_rate=0.004, p95_ms=156),
                 policy=replace(PROD.policy, max_error_rate=0.05, max_p95_latency_ms=1000),
                 expect=("rolled_back", ">=", 0.95), seed_base=40_000),
        Scenario("low-traffic-aa", "low traffic: ~5 canary requests per interval, A/A", total_rps=low,
                 expect=("promoted", "<=", 0.0), seed_base=50_000),
        Scenario("low-traffic-50x", "low traffic, canary errors 10 % (50x stable)", total_rps=low,
                 canary=Track(error_rate=0.10), expect=("promoted", "<=", 0.0), seed_base=60_000),
        Scenario("outage-10min", "A/A with Prometheus down for 10 minutes mid-rollout", outage=(850, 1450),
                 expect=("rolled_back", "<=", 0.01), seed_base=70_000),
        Scenario("replicas-5-10-25", "replica router, 4 replicas, steps 5/10/25/50/100: achieved weights",
                 router="replicas", policy=replace(PROD.policy, steps=(5, 10, 25, 50, 100)),
                 expect=("rolled_back", "<=", 0.01), seed_base=80_000),
    ]
    for steps in ((10, 25, 50, 100), (5, 10, 25, 50, 100), (50, 100), (100,)):
        label = "/".join(map(str, steps))
        out.append(Scenario(f"cross-cheaper-{label}", f"g5 -> inf2, cheaper and meets the SLO, steps {label}",
                            stable=G5, canary=INF2, cross_pool=True, policy=replace(SLO_POLICY, steps=steps),
                            expect=("promoted", ">=", 0.99), seed_base=90_000))
    out += [
        Scenario("cross-misses-slo", "g5 -> inf2, inf2 p95 300 ms misses the 250 ms SLO", stable=G5,
                 canary=replace(INF2, p95_ms=300), cross_pool=True, policy=SLO_POLICY, expect=("rolled_back", ">=", 0.99),
                 seed_base=91_000),
        Scenario("cross-costlier-confirm", "g5 -> inf2 costing more ($1.20/h), meets the SLO; costPolicy confirm",
                 stable=G5, canary=replace(INF2, price=1.20), cross_pool=True, policy=SLO_POLICY,
                 expect=("paused (confirm", ">=", 1.0), seed_base=92_000),
        Scenario("cross-costlier-promote", "same, costPolicy promote", stable=G5, canary=replace(INF2, price=1.20),
                 cross_pool=True, policy=replace(SLO_POLICY, cost_policy="promote"), expect=("promoted", ">=", 0.99),
                 seed_base=92_000),
        Scenario("cross-costlier-rollback", "same, costPolicy rollback", stable=G5, canary=replace(INF2, price=1.20),
                 cross_pool=True, policy=replace(SLO_POLICY, cost_policy="rollback"), expect=("rolled_back", ">=", 0.99),
                 seed_base=92_000),
    ]
    return out


def check(expect: tuple[str, str, float], rates: dict[str, float]) -> bool:
    prefix, op, value = expect
    got = sum(v for k, v in rates.items() if k.startswith(prefix))
    return got <= value + 1e-9 if op == "<=" else got >= value - 1e-9


def words(expect: tuple[str, str, float]) -> str:
    prefix, op, value = expect
    return f"{prefix.replace('_', ' ').rstrip(' (')}{')' if '(' in prefix else ''} {op} {value:.0%}"


def summarise(sc: Scenario, runs: list[Run]) -> dict[str, Any]:
    outcomes: dict[str, int] = {}
    for r in runs:
        outcomes[r.outcome] = outcomes.get(r.outcome, 0) + 1
    rates = {k: v / len(runs) for k, v in sorted(outcomes.items())}
    decided = [r.decided_at - (r.first_enough or 1) + 1 for r in runs if r.decided_at and r.outcome == "rolled_back"]
    within = sum(1 for d in decided if d <= sc.policy.failure_threshold)
    achieved = sorted({(w, round(a, 1)) for r in runs for w, a in r.achieved})
    row = {"scenario": sc.name, "what": sc.what, "seeds": len(runs), "outcomes": rates,
           "bound": words(sc.expect), "met": check(sc.expect, rates)}
    if decided:
        row["rollback_analyses_after_first_enough"] = {"median": float(np.median(decided)),
                                                       "max": int(max(decided)),
                                                       "within_threshold": within / len(runs)}
    if sc.router == "replicas":
        row["achieved_weights"] = achieved
    return row


def calibration(seeds: int) -> dict[str, Any]:
    """A/A: the share of analyses with p < 0.01, per test (should be about 1 % or less)."""
    out = {}
    for sc in (scenarios()[0], scenarios()[1]):
        ps: dict[str, list[float]] = {}
        for seed in range(seeds):
            for pv in simulate(sc, 500_000 + seed, calibrate=True).pvalues:
                for key, p in pv.items():
                    ps.setdefault(key, []).append(p)
        out[sc.policy.judge] = {key: {"analyses": len(v), "p<0.01": round(sum(p < 0.01 for p in v) / len(v), 4)}
                                for key, v in ps.items()}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=200)
    parser.add_argument("--only", default="", help="comma-separated scenario names")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--calibrate", type=int, default=None,
                        help="A/A runs per judge for the p-value calibration (default seeds/4; 0: none)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    wanted = {n for n in args.only.split(",") if n}
    rows = []
    if not args.json:  # one row at a time, as each scenario finishes (the 200-seed table takes a while)
        print("| scenario | seeds | outcomes | bound | met | rollback: analyses after first step with enough traffic |")
        print("|---|---|---|---|---|---|", flush=True)
    for sc in scenarios():
        if wanted and sc.name not in wanted:
            continue
        rows.append(summarise(sc, [simulate(sc, sc.seed_base + s) for s in range(args.seeds)]))
        if not args.json:
            print(_row(rows[-1]), flush=True)
    runs = args.calibrate if args.calibrate is not None else (0 if wanted else max(20, args.seeds // 4))
    cal = calibration(runs) if runs else {}
    if args.json:
        print(json.dumps({"rows": rows, "calibration": cal}, indent=2, default=str))
    elif cal:
        print("\nA/A calibration (share of analyses with p < 0.01):", json.dumps(cal))
    print(f"\n{time.perf_counter() - started:.1f} s", file=sys.stderr)
    return 0 if all(r["met"] for r in rows) else 1


def _row(r: dict[str, Any]) -> str:
    """One markdown row of the table."""
    outcomes = ", ".join(f"{k} {v:.1%}" for k, v in r["outcomes"].items())
    timing = r.get("rollback_analyses_after_first_enough")
    when = (f"median {timing['median']:g}, max {timing['max']}, within threshold "
            f"{timing['within_threshold']:.1%}" if timing else "")
    if "achieved_weights" in r:
        when = "achieved weight per step: " + ", ".join(f"{w}%->{a}%" for w, a in r["achieved_weights"])
    return (f"| {r['scenario']}: {r['what']} | {r['seeds']} | {outcomes} | {r['bound']} | "
            f"{'yes' if r['met'] else 'NO'} | {when} |")

if __name__ == "__main__":
    sys.exit(main())
