"""How often does the Mann-Whitney judge roll back a canary that is as good as stable (A/A), and how
often does it catch a canary with twice the error rate?

Each run simulates one whole rollout through the real state machine (reconciler.rollout.machine)
with seeded synthetic traffic: per analysis interval, every version gets one sample per sub-window
of its error rate (binomial errors over the requests it served at its current weight) and of its
p95 latency (log-normal noise). A/A runs give the canary exactly the stable's distributions;
"2x" runs double the canary's error probability.

    .venv/bin/python benchmarks/judge_false_rollback.py            # 100 seeds each
    .venv/bin/python benchmarks/judge_false_rollback.py --seeds 30

Figures and the command are recorded in benchmarks/README-canary.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass

import numpy as np

from reconciler.rollout.machine import Observations, Promote, Rollback, step
from reconciler.rollout.metrics import VersionMetrics
from reconciler.rollout.state import Phase, Policy, RolloutState


@dataclass(frozen=True)
class Scenario:
    total_rps: float = 100.0        # traffic of the model, split by weight between stable and canary
    error_rate: float = 0.02        # stable's error probability per request
    p95_ms: float = 120.0           # stable's typical p95
    latency_noise: float = 0.08     # log-normal sigma of the per-window p95
    window_seconds: int = 10        # one sample per window (a PromQL range query step)


POLICY = Policy(steps=(10, 25, 50, 100), interval_seconds=120, failure_threshold=2, progress_deadline_seconds=3600,
                max_error_rate=0.5, max_p95_latency_ms=None, judge="mann-whitney")


def _samples(rng: np.random.Generator, sc: Scenario, rps: float, p_error: float, n: int,
             latency_factor: float = 1.0) -> tuple[tuple[float, ...], tuple[float, ...]]:
    requests = max(int(round(rps * sc.window_seconds)), 0)
    if requests == 0:
        return (), ()
    errors = rng.binomial(requests, p_error, size=n)
    latency = sc.p95_ms * latency_factor * rng.lognormal(0.0, sc.latency_noise, size=n)
    return tuple(float(e) / requests for e in errors), tuple(float(v) for v in latency)


def _metrics(track: str, rps: float, errs: tuple[float, ...], lats: tuple[float, ...]) -> VersionMetrics:
    if not errs:
        return VersionMetrics(track=track, requests_per_second=0.0)
    return VersionMetrics(track=track, requests_per_second=rps, error_rate=float(np.mean(errs)),
                          p95_ms=float(np.percentile(lats, 95)), error_samples=errs, latency_samples=lats)


def simulate(seed: int, error_multiplier: float, *, policy: Policy = POLICY, scenario: Scenario = Scenario()) -> str:
    """One rollout; returns 'promoted' or 'rolled_back'."""
    rng = np.random.default_rng(seed)
    state = RolloutState(model="bench", environment="sim", policy=policy, stable_revision="v1")
    n = policy.interval_seconds // scenario.window_seconds
    now = 0.0
    for _ in range(100):
        weight = state.canary_weight / 100
        s_err, s_lat = _samples(rng, scenario, scenario.total_rps * (1 - weight), scenario.error_rate, n)
        c_err, c_lat = _samples(rng, scenario, scenario.total_rps * weight,
                                min(1.0, scenario.error_rate * error_multiplier), n)
        obs = Observations("v2", stable=_metrics("stable", scenario.total_rps * (1 - weight), s_err, s_lat),
                           canary=_metrics("canary", scenario.total_rps * weight, c_err, c_lat))
        actions, state = step(state, obs, now)
        if any(isinstance(a, (Promote, Rollback)) for a in actions):
            break
        now += policy.interval_seconds
    assert state.phase in (Phase.promoted, Phase.rolled_back), state.phase
    return state.phase.value


def rollback_rate(seeds: range, error_multiplier: float) -> float:
    outcomes = [simulate(seed, error_multiplier) for seed in seeds]
    return outcomes.count("rolled_back") / len(outcomes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=100)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    aa = rollback_rate(range(args.seeds), 1.0)
    bad = rollback_rate(range(10_000, 10_000 + args.seeds), 2.0)
    result = {"seeds": args.seeds, "aa_rollback_rate": aa, "double_error_rollback_rate": bad,
              "seconds": round(time.perf_counter() - started, 2), "policy": POLICY.to_dict(),
              "scenario": Scenario().__dict__}
    print(json.dumps(result, indent=2))
    ok = aa <= 0.01 and bad >= 0.95
    print("PASS" if ok else "FAIL", f"A/A rollback {aa:.1%} (<= 1%), 2x errors rollback {bad:.1%} (>= 95%)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
