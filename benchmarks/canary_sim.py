"""Canary judgement on traffic as a serving stack and Prometheus really report it (issue 21), through the
real state machine (reconciler.rollout.machine.step) and judges (reconciler.rollout.judge).

What is simulated, per track (stable / canary) and per 15 s scrape (the scrape phase is random per run):
- arrivals: Poisson(rate x 15 s), the rate split by the weight the router achieves; the rate may ramp
  (0.3x -> 1x over 30 minutes) and follow a daily cycle (+-60 %, random phase);
- errors: each request fails with probability p, or in bursts: a scrape period is a burst with
  probability 3 %, during which requests fail 20x as often (the mean stays p), independently per track;
- latency: log-normal per request (sigma 0.35, median set from the p95), optionally with a slow tail
  (a share of requests ``tail_factor`` x slower: a p99-only regression), counted into the service's
  buckets: BentoML's defaults (0.005 ... 180 s) or the template's layout (defaults + finer bounds +
  the policy's thresholds, reconciler.catalog.buckets.duration_buckets);
- common-mode shocks (``shocks``): a scrape period is a shock with probability 5 % for BOTH tracks at once (a
  loaded node, a noisy neighbour, a GC pause), during which every request is 3x slower and fails 10x as often;
- cold starts: a new canary pod serves 10x slower for its first ``cold_start`` seconds (at the start
  and when a weight increase adds pods: the Gateway API router runs ceil(4 x weight) canary pods);
- counter resets: pods restart (about once per 20 minutes per track): the counter drops to the
  requests counted since the restart; those served between the last scrape and the restart are lost.
Prometheus' view: each track's cumulative counters (requests, errors, every bucket) as scraped, and
``increase()`` over the analysis interval computed as Prometheus 2.42's ``extrapolatedRate``
(promql/functions.go: samples in [start, end], counter-reset correction per series, extrapolation to
the range's edges when the first/last sample is within 1.1x the average spacing, else half a spacing,
and never back past the counter's zero point). Prometheus down: the analysis gets a measurement error.
Several models on one Prometheus: three rollouts in lockstep (50, 20 and 5 req/s) with one outage.

    .venv/bin/python benchmarks/canary_sim.py --seeds 200              # the recorded table
    .venv/bin/python benchmarks/canary_sim.py --seeds 40 --only aa-prod-default,2x-errors-0.2%-prod-default

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
from scipy.stats import lognorm

from reconciler.catalog.buckets import BENTOML_DEFAULT, duration_buckets, thresholds_ms
from reconciler.rollout.objects import achieved_weight as router_weight, canary_replicas
from reconciler.rollout.machine import Observations, Promote, Rollback, history_layout, step
from reconciler.rollout.metrics import VersionMetrics
from reconciler.rollout.state import Phase, Policy, RolloutState
from reconciler.rollout.stats import histogram_quantile
from reconciler.rollout.warmup import default_warmup
from reconciler.catalog.kinds import AcceleratorKind

SCRAPE = 15.0
SIGMA = 0.35
HORIZON_SECONDS = 8 * 3600  # a run still undecided after this long counts as "running"
BURST_SHARE, BURST_FACTOR = 0.03, 20.0
SHOCK_SHARE, SHOCK_SLOW, SHOCK_ERRORS = 0.05, 3.0, 10.0  # common-mode shocks: both tracks in the same scrape period
RESET_EVERY = 1200.0  # seconds between pod restarts, on average, per track
COLD_FACTOR = 10.0
FULL_REPLICAS = 4

# the warm-up as the controller derives it from the template's probes (reconciler.rollout.warmup): readiness
# every 5 s, startup budget of the pool kind: prod's models here run on a GPU pool (60 s), staging's on CPU (15 s)
READINESS_PERIOD = 5
PROD = Policy(steps=(5, 10, 25, 50, 100), interval_seconds=300, failure_threshold=2, progress_deadline_seconds=1800,
              max_error_rate=0.01, max_p95_latency_ms=200, judge="mann-whitney", slo_p95_latency_ms=200,
              slo_error_rate=0.005,
              warmup_seconds=default_warmup(READINESS_PERIOD, AcceleratorKind("gpu").profile.startup_seconds))
STAGING = Policy(steps=(20, 50, 100), interval_seconds=120, failure_threshold=2, progress_deadline_seconds=1800,
                 max_error_rate=0.01, max_p95_latency_ms=300, judge="threshold", slo_p95_latency_ms=300,
                 slo_error_rate=0.01,
                 warmup_seconds=default_warmup(READINESS_PERIOD, AcceleratorKind("cpu").profile.startup_seconds))
DECLARED_WARMUP = 60  # a model whose pods are slow for their first minute declares it: canary.warmup 60s


@dataclass(frozen=True)
class Track:
    error_rate: float = 0.002
    p95_ms: float = 120.0
    pool: str = "gpu-a10g"
    price: float = 1.006       # per replica-hour (g5.xlarge)
    replicas: int = FULL_REPLICAS
    tail_share: float = 0.0    # this share of requests is tail_factor x slower
    tail_factor: float = 1.0

    def bucket_probs(self, bounds: tuple[float, ...], slow: float = 1.0) -> np.ndarray:
        """P(latency in each bucket), +Inf last: per-request draws binned (a Multinomial over these)."""
        median = self.p95_ms / 1000.0 / math.exp(1.6448536 * SIGMA) * slow
        edges = np.asarray(bounds)
        cdf = lognorm.cdf(edges, SIGMA, scale=median)
        if self.tail_share:
            cdf = (1 - self.tail_share) * cdf + self.tail_share * lognorm.cdf(edges, SIGMA, scale=median * self.tail_factor)
        return np.diff([0.0, *cdf, 1.0])


@dataclass(frozen=True)
class Scenario:
    name: str
    what: str
    stable: Track = Track()
    canary: Track = Track()
    total_rps: float = 50.0
    policy: Policy = PROD
    layout: str = "default"             # default (BentoML's buckets) | template (buckets.duration_buckets)
    cross_pool: bool = False
    router: str = "gateway-api"
    bursts: bool = False
    daily: bool = False                 # ramp + daily cycle
    resets: bool = False
    shocks: bool = False                # common-mode latency and error shocks (both tracks, same periods)
    cold_start: float = 0.0             # seconds a new canary pod serves 10x slower
    models: int = 1                     # 3: three models (50, 20, 5 req/s) on one Prometheus
    outage: tuple[float, float] | None = None  # Prometheus down over [start, end) s after the canary starts
    expect: tuple[str, str, float] = ("rolled_back", "<=", 0.01)  # (outcome prefix, <= or >=, share)
    seed_base: int = 0

    @property
    def bounds(self) -> tuple[float, ...]:
        return BENTOML_DEFAULT if self.layout == "default" else duration_buckets(thresholds_ms(self.policy))


def prom_increase(times: np.ndarray, values: np.ndarray, start: float, end: float) -> np.ndarray | None:
    """Prometheus 2.42 extrapolatedRate(isCounter=true, isRate=false) over [start, end], per column."""
    mask = (times >= start) & (times <= end)
    if mask.sum() < 2:
        return None
    t, v = times[mask], values[mask]
    drops = np.where(v[1:] < v[:-1], v[:-1], 0.0)  # a reset: add the value before it
    result = v[-1] - v[0] + drops.sum(axis=0)
    sampled = t[-1] - t[0]
    average = sampled / (len(t) - 1)
    to_start = np.full(result.shape, t[0] - start)
    to_end = end - t[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        to_zero = np.where((result > 0) & (v[0] >= 0), sampled * v[0] / np.where(result > 0, result, 1.0), np.inf)
    to_start = np.minimum(to_start, to_zero)
    threshold = average * 1.1
    ext = sampled + np.where(to_start < threshold, to_start, average / 2) + (to_end if to_end < threshold else average / 2)
    return result * ext / sampled


class Series:
    """One track's cumulative counters as Prometheus scraped them: [requests, errors, bucket le...]."""

    def __init__(self, columns: int, start_total: np.ndarray | None = None) -> None:
        self.times: list[float] = []
        self.rows: list[np.ndarray] = []
        self.total = np.zeros(columns) if start_total is None else start_total.copy()

    def add(self, at: float, counts: np.ndarray, reset_fraction: float | None = None) -> None:
        if reset_fraction is not None:  # the pod restarted within the period: only what came after counts
            self.total = np.floor(counts * reset_fraction)
        else:
            self.total = self.total + counts
        self.times.append(at)
        self.rows.append(self.total.copy())

    def increase(self, start: float, end: float) -> np.ndarray | None:
        lo, hi = bisect.bisect_left(self.times, start), bisect.bisect_right(self.times, end)
        if hi - lo < 2:
            return None
        return prom_increase(np.asarray(self.times[lo:hi]), np.vstack(self.rows[lo:hi]), start, end)


def metrics(series: Series, bounds: tuple[float, ...], track: Track, name: str, now: float,
            interval: int) -> VersionMetrics:
    inc = series.increase(now - interval, now)
    if inc is None or inc[0] <= 0:
        return VersionMetrics(track=name, pool=track.pool, requests_per_second=0.0, requests=0.0,
                              hourly_price=track.price, full_replicas=track.replicas)
    les = (*bounds, math.inf)
    buckets = tuple(zip(les, (float(c) for c in inc[2:]), strict=True))
    p95 = histogram_quantile(0.95, buckets)
    return VersionMetrics(track=name, pool=track.pool, requests_per_second=float(inc[0]) / interval,
                          error_rate=float(inc[1] / inc[0]), p95_ms=None if p95 is None else p95 * 1000.0,
                          requests=float(inc[0]), errors=float(inc[1]), latency_buckets=buckets,
                          hourly_price=track.price, replicas=track.replicas, full_replicas=track.replicas)


@dataclass
class Run:
    outcome: str                        # promoted | rolled_back | paused (...) | running
    seconds: float | None = None        # from the canary's start to the decision
    analyses: int = 0
    decided_by: str | None = None
    last_reason: str | None = None
    trace: list[tuple] = field(default_factory=list)


class Rollout:
    """One model's rollout: its traffic, its series in Prometheus, its state machine."""

    def __init__(self, sc: Scenario, rng: np.random.Generator, rps: float) -> None:
        self.sc, self.rng, self.rps = sc, rng, rps
        self.bounds = sc.bounds
        self.columns = 2 + len(self.bounds) + 1
        cols = self.columns
        self.probs = {(name, cold): track.bucket_probs(self.bounds, COLD_FACTOR if cold else 1.0)
                      for name, track in (("stable", sc.stable), ("canary", sc.canary)) for cold in (False, True)}
        self.shock_probs = {name: track.bucket_probs(self.bounds, SHOCK_SLOW)
                            for name, track in (("stable", sc.stable), ("canary", sc.canary))}
        day = rps * 86_400  # stable's pods have served for a day: their counters are large
        start = np.concatenate([[day, day * sc.stable.error_rate], np.cumsum(self.probs[("stable", False)]) * day])
        self.series = {"stable": Series(cols, start), "canary": Series(cols)}
        self.state = RolloutState(model="sim", environment="sim", policy=sc.policy, stable_revision="v1",
                                  stable_pool=sc.stable.pool)
        self.canary_pool = sc.canary.pool if sc.cross_pool else sc.stable.pool
        self.run = Run("running")
        self.started: float | None = None
        self.pod_starts: list[float] = []   # when each canary pod started (cold for cold_start s)
        self.next_reset = {"stable": rng.exponential(RESET_EVERY), "canary": math.inf}
        self.daily_phase = rng.uniform(0, 86_400)
        self.done = False

    # ---------------------------------------------------------------- traffic
    def weight(self) -> float:
        st, sc = self.state, self.sc
        w = st.canary_weight
        if st.phase is Phase.promoting:
            w = 100 if sc.cross_pool or w == 100 else w
        if st.phase not in (Phase.progressing, Phase.promoting):
            return 0.0
        if sc.router == "replicas" and st.phase is Phase.progressing:
            c = canary_replicas("replicas", w, FULL_REPLICAS, FULL_REPLICAS, st.phase)
            return router_weight("replicas", w, FULL_REPLICAS, c)
        return float(w)

    def rate(self, t: float) -> float:
        r = self.rps
        if self.sc.daily:
            r *= min(1.0, 0.3 + 0.7 * t / 1800.0) * (1.0 + 0.6 * math.sin(2 * math.pi * (t + self.daily_phase) / 86_400))
        return r

    def scale_pods(self, now: float) -> None:
        if self.state.phase is not Phase.progressing:
            return
        want = max(1, math.ceil(FULL_REPLICAS * self.state.canary_weight / 100))
        while len(self.pod_starts) < want:
            self.pod_starts.append(now)

    def scrape(self, at: float) -> None:
        share = self.weight() / 100.0
        rate = self.rate(at)
        shocked = self.sc.shocks and self.rng.random() < SHOCK_SHARE  # one draw: both tracks in the same period
        for name, track, rps in (("stable", self.sc.stable, rate * (1 - share)), ("canary", self.sc.canary, rate * share)):
            if name == "canary" and not self.pod_starts:
                continue  # no canary pod yet: no series
            n = int(self.rng.poisson(rps * SCRAPE)) if rps > 0 else 0
            p = track.error_rate
            if self.sc.bursts:
                base = p / (1 - BURST_SHARE + BURST_SHARE * BURST_FACTOR)
                p = base * (BURST_FACTOR if self.rng.random() < BURST_SHARE else 1.0)
            if shocked:
                p *= SHOCK_ERRORS
            errors = int(self.rng.binomial(n, min(p, 1.0))) if n else 0
            cold = 0.0
            if name == "canary" and self.sc.cold_start and self.pod_starts:
                cold = sum(1 for s in self.pod_starts if at - s < self.sc.cold_start) / len(self.pod_starts)
            warm = self.shock_probs[name] if shocked else self.probs[(name, False)]
            probs = warm * (1 - cold) + self.probs[(name, True)] * cold
            bins = self.rng.multinomial(n, probs) if n else np.zeros(len(probs))
            counts = np.concatenate([[n, errors], np.cumsum(bins)])
            reset = None
            if self.sc.resets and at >= self.next_reset[name]:
                reset = float(self.rng.uniform())
                self.next_reset[name] = at + self.rng.exponential(RESET_EVERY)
            self.series[name].add(at, counts, reset)

    # ---------------------------------------------------------------- the controller's tick
    def tick(self, now: float, down: bool) -> None:
        if self.done:
            return
        sc, st = self.sc, self.state
        interval = sc.policy.interval_seconds
        since = now - (self.started or now)
        if self.started is None:  # the new revision arrives; the canary pods start at once, ready 10 s later
            self.started = now
            obs = Observations("v2", canary_ready=False, stable_pool=sc.stable.pool, canary_pool=self.canary_pool,
                               stable=None if down else metrics(self.series["stable"], self.bounds, sc.stable,
                                                                "stable", now, interval))
            _, self.state = step(st, obs, now)
            self.pod_starts.append(now)
            self.next_reset["canary"] = now + self.rng.exponential(RESET_EVERY)
            return
        due = (st.phase is not Phase.progressing or st.last_analysis_at is None
               or now - st.last_analysis_at >= interval)
        if not due:  # the machine would do nothing (metrics are read only when an analysis is due)
            return
        stable_m = None if down else metrics(self.series["stable"], self.bounds, sc.stable, "stable", now, interval)
        history: tuple[VersionMetrics, ...] = ()
        if st.phase is Phase.initializing and not down:  # the controller reads stable's recent past once
            count, seconds = history_layout(interval)
            history = tuple(metrics(self.series["stable"], self.bounds, sc.stable, "stable", now - j * seconds, seconds)
                            for j in range(count - 1, -1, -1))
        canary_m = None if down else metrics(self.series["canary"], self.bounds, sc.canary, "canary", now, interval)
        obs = Observations("v2", canary_ready=since >= 10, stable=stable_m, canary=canary_m,
                           stable_pool=sc.stable.pool, canary_pool=self.canary_pool, achieved_weight=self.weight(),
                           promoted_ready=st.phase is Phase.promoting,
                           metrics_error="Prometheus is unreachable" if down else None, stable_history=history)
        before = st.generation
        actions, self.state = step(st, obs, now)
        self.scale_pods(now)
        if self.state.generation != before and self.state.history:
            rec = self.state.history[-1]
            if rec.decision not in ("advance", "start"):
                self.run.analyses += 1
            self.run.trace.append((round(since), rec.decision, self.state.canary_weight,
                                   self.state.evidence.canary_requests, self.state.evidence.needed_requests))
            self.run.last_reason = rec.reasons[0] if rec.reasons else None
        if any(isinstance(a, Rollback) for a in actions):
            self._end("rolled_back", since)
        elif any(isinstance(a, Promote) for a in actions):
            self._end("promoted", since)
        elif self.state.paused:
            self._end(f"paused ({self.state.pause_reason})", since)
        elif since >= HORIZON_SECONDS:
            self._end("running", since)

    def _end(self, outcome: str, since: float) -> None:
        self.run.outcome, self.run.seconds, self.done = outcome, since, True
        self.run.decided_by = self.state.evidence.decided_by


def simulate(sc: Scenario, seed: int) -> list[Run]:
    """One run of the scenario: one Run per model."""
    rng = np.random.default_rng(seed)
    rates = (50.0, 20.0, 5.0) if sc.models == 3 else (sc.total_rps,)
    rollouts = [Rollout(sc, np.random.default_rng(rng.integers(2**63)), rps) for rps in rates]
    tick = 10.0
    clock = rng.uniform(0, SCRAPE)  # the scrape phase
    now = 0.0
    lead = 3600 + sc.policy.interval_seconds  # stable serves alone before the new revision arrives
    next_tick = lead
    while not all(r.done for r in rollouts):
        clock += SCRAPE
        while next_tick <= clock:
            down = sc.outage is not None and sc.outage[0] <= next_tick - lead < sc.outage[1]
            for r in rollouts:
                r.tick(next_tick, down)
            next_tick += tick
        for r in rollouts:
            if not r.done:
                r.scrape(clock)
        now = clock
    del now
    return [r.run for r in rollouts]


def flagger_seconds(policy: Policy) -> float:
    """Flagger's time to promote a healthy canary at the same policy: interval x steps."""
    return policy.interval_seconds * len(policy.steps)


# --------------------------------------------------------------------------- scenarios (issue 21's list)


def scenarios() -> list[Scenario]:
    out: list[Scenario] = []
    for layout in ("default", "template"):
        for env, policy in (("prod", PROD), ("staging", STAGING)):
            sfx = f"{env}-{layout}"
            aa = dict(policy=policy, layout=layout)
            out += [
                Scenario(f"aa-{sfx}", f"A/A, {env} policy", **aa),
                Scenario(f"aa-bursts-{sfx}", f"A/A, errors in bursts (0.2 % mean), {env}", bursts=True,
                         seed_base=1000, **aa),
                Scenario(f"aa-daily-{sfx}", f"A/A, traffic ramping and on a daily cycle, {env}", daily=True,
                         seed_base=2000, **aa),
                Scenario(f"aa-resets-{sfx}", f"A/A, counters reset by pod restarts, {env}", resets=True,
                         seed_base=3000, **aa),
                Scenario(f"aa-3models-{sfx}", f"A/A, three models on one Prometheus (50/20/5 req/s), down 10 min, {env}",
                         models=3, outage=(600, 1200), seed_base=4000, **aa),
                Scenario(f"cold-start-{sfx}", f"healthy canary, 60 s cold start (10x latency), declared "
                         f"(canary.warmup {DECLARED_WARMUP}s), {env}", cold_start=60, expect=("promoted", ">=", 0.99),
                         seed_base=5000, policy=replace(policy, warmup_seconds=max(policy.warmup_seconds,
                                                                                  DECLARED_WARMUP)), layout=layout),
                Scenario(f"slow-after-warmup-{sfx}", f"canary still 10x slow 3 min after each weight increase, past "
                         f"its {policy.warmup_seconds} s warm-up, {env}", cold_start=180,
                         expect=("rolled_back", ">=", 0.95), seed_base=5500, **aa),
                Scenario(f"2x-errors-0.2%-{sfx}", f"2x errors at a 0.2 % baseline, {env}", canary=Track(error_rate=0.004),
                         expect=("rolled_back", ">=", 0.95), seed_base=6000, **aa),
                Scenario(f"p95+30%-{sfx}", f"+30 % p95, {env}", canary=Track(p95_ms=156),
                         expect=("rolled_back", ">=", 0.95), seed_base=7000, **aa),
                Scenario(f"aa-shocks-{sfx}", f"A/A, common-mode shocks: 5 % of 15 s periods 3x slower and 10x errors "
                         f"on both tracks at once, {env}", shocks=True, seed_base=14_000, **aa),
                Scenario(f"p95+30%-shocks-{sfx}", f"+30 % p95 under the same common-mode shocks, {env}",
                         canary=Track(p95_ms=156), shocks=True, expect=("rolled_back", ">=", 0.95), seed_base=15_000,
                         **aa),
            ]
        sfx = f"prod-{layout}"
        slo = replace(PROD, slo_p95_latency_ms=200, slo_error_rate=0.005)
        g5, inf2 = Track(pool="gpu-a10g", price=1.006), Track(pool="inf2", price=0.758, p95_ms=150)
        out += [
            Scenario(f"2x-errors-1%-{sfx}", "2x errors at a 1 % baseline (error limit 5 %), prod",
                     stable=Track(error_rate=0.01), canary=Track(error_rate=0.02),
                     policy=replace(PROD, max_error_rate=0.05), layout=layout, expect=("rolled_back", ">=", 0.95),
                     seed_base=8000),
            Scenario(f"p99+100%-{sfx}", "p99 +100 %, p95 unchanged; the policy asks p95 and p99, prod",
                     canary=Track(tail_share=0.012, tail_factor=2.6), policy=replace(PROD, quantiles=(0.95, 0.99)),
                     layout=layout, expect=("rolled_back", ">=", 0.95), seed_base=9000),
            Scenario(f"aa-p99-{sfx}", "A/A, the policy asks p95 and p99, prod", policy=replace(PROD, quantiles=(0.95, 0.99)),
                     layout=layout, seed_base=9500),
            Scenario(f"cross-cheaper-{sfx}", "g5 -> inf2, cheaper, true p95 150 ms within the 200 ms SLO", stable=g5,
                     canary=inf2, cross_pool=True, policy=slo, layout=layout, expect=("promoted", ">=", 0.99),
                     seed_base=10_000),
            Scenario(f"cross-misses-slo-{sfx}", "g5 -> inf2, true p95 260 ms misses the 200 ms SLO", stable=g5,
                     canary=replace(inf2, p95_ms=260), cross_pool=True, policy=slo, layout=layout,
                     expect=("rolled_back", ">=", 0.99), seed_base=11_000),
            Scenario(f"low-traffic-{sfx}", "A/A at 5 req/s: ends on its own, promoted or paused with the figure",
                     total_rps=5.0, layout=layout, expect=("running", "<=", 0.0), seed_base=12_000),
            Scenario(f"outage-{sfx}", "A/A, Prometheus down 10 min mid-rollout", outage=(600, 1200), layout=layout,
                     seed_base=13_000),
        ]
    return out


def check(expect: tuple[str, str, float], rates: dict[str, float]) -> bool:
    prefix, op, value = expect
    got = sum(v for k, v in rates.items() if k.startswith(prefix))
    return got <= value + 1e-9 if op == "<=" else got >= value - 1e-9


def words(expect: tuple[str, str, float]) -> str:
    prefix, op, value = expect
    return f"{prefix.replace('_', ' ')} {op} {value:.0%}"


def summarise(sc: Scenario, runs: list[list[Run]]) -> dict[str, Any]:
    """Outcome shares over seeds. With several models, a seed's outcome is the worst of its models
    (rolled back if any was, else paused if any was, else the first model's)."""
    def outcome_of(models: list[Run]) -> str:
        for prefix in ("rolled_back", "running", "paused"):
            hit = next((m.outcome for m in models if m.outcome.startswith(prefix)), None)
            if hit:
                return hit
        return models[0].outcome

    outcomes: dict[str, int] = {}
    for models in runs:
        o = outcome_of(models)
        outcomes[o] = outcomes.get(o, 0) + 1
    rates = {k: v / len(runs) for k, v in sorted(outcomes.items())}
    promoted = [m.seconds for models in runs for m in models[:1] if m.outcome == "promoted" and m.seconds is not None]
    rolled = [m.seconds for models in runs for m in models[:1] if m.outcome == "rolled_back" and m.seconds is not None]
    row = {"scenario": sc.name, "what": sc.what, "seeds": len(runs), "outcomes": rates, "bound": words(sc.expect),
           "met": check(sc.expect, rates), "flagger_min": flagger_seconds(sc.policy) / 60}
    if promoted:
        row["promote_min"] = {"median": float(np.median(promoted)) / 60, "p90": float(np.percentile(promoted, 90)) / 60}
    if rolled:
        row["rollback_min"] = {"median": float(np.median(rolled)) / 60, "p90": float(np.percentile(rolled, 90)) / 60}
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=200)
    parser.add_argument("--only", default="", help="comma-separated scenario names (prefixes allowed)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    wanted = [n for n in args.only.split(",") if n]
    rows = []
    if not args.json:
        print("| scenario | seeds | outcomes | bound | met | median (p90) minutes to promote / roll back | Flagger |")
        print("|---|---|---|---|---|---|---|", flush=True)
    for sc in scenarios():
        if wanted and not any(sc.name == w or sc.name.startswith(w) for w in wanted):
            continue
        rows.append(summarise(sc, [simulate(sc, sc.seed_base + s) for s in range(args.seeds)]))
        if not args.json:
            print(_row(rows[-1]), flush=True)
    if args.json:
        print(json.dumps({"rows": rows}, indent=2, default=str))
    print(f"\n{time.perf_counter() - started:.1f} s", file=sys.stderr)
    return 0 if all(r["met"] for r in rows) else 1


def _row(r: dict[str, Any]) -> str:
    outcomes = ", ".join(f"{k} {v:.1%}" for k, v in r["outcomes"].items())
    times = []
    for key, word in (("promote_min", "promote"), ("rollback_min", "roll back")):
        if key in r:
            times.append(f"{word} {r[key]['median']:.0f} ({r[key]['p90']:.0f})")
    return (f"| {r['scenario']}: {r['what']} | {r['seeds']} | {outcomes} | {r['bound']} | "
            f"{'yes' if r['met'] else 'NO'} | {', '.join(times)} | {r['flagger_min']:.0f} min |")


if __name__ == "__main__":
    sys.exit(main())
