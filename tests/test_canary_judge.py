"""Judges: fixed limits, Mann-Whitney (Kayenta-style) and the false-rollback bounds of the benchmark."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np

from reconciler.rollout.judge import judge, mann_whitney_worse
from reconciler.rollout.metrics import VersionMetrics
from reconciler.rollout.state import Policy

ROOT = Path(__file__).resolve().parents[1]
MW = Policy(judge="mann-whitney", max_error_rate=0.5)


def sampled(track: str, errors: list[float], latency: list[float]) -> VersionMetrics:
    return VersionMetrics(track=track, requests_per_second=20.0, error_rate=float(np.mean(errors)),
                          p95_ms=float(np.percentile(latency, 95)), error_samples=tuple(errors),
                          latency_samples=tuple(latency))


def test_mann_whitney_pvalue_direction() -> None:
    low, high = [0.01, 0.02, 0.01, 0.015, 0.012, 0.011], [0.05, 0.06, 0.04, 0.055, 0.07, 0.045]
    assert mann_whitney_worse(low, high) < 0.01
    assert mann_whitney_worse(high, low) > 0.9
    assert mann_whitney_worse([0.0] * 6, [0.0] * 6) == 1.0  # all ties: no evidence


def test_mann_whitney_fails_a_clearly_worse_canary_and_says_why() -> None:
    rng = np.random.default_rng(1)
    stable = sampled("stable", list(rng.normal(0.01, 0.002, 12)), list(rng.normal(100, 5, 12)))
    canary = sampled("canary", list(rng.normal(0.05, 0.002, 12)), list(rng.normal(100, 5, 12)))
    verdict = judge(MW, stable, canary)
    assert not verdict.passed and not verdict.no_data
    assert any("significantly above stable" in r for r in verdict.reasons)


def test_effect_size_tolerance_ignores_tiny_significant_differences() -> None:
    # a 3 % slower canary with almost no noise is "significant" but within the 10 % tolerance
    stable = sampled("stable", [0.01] * 12, [100.0 + i * 0.01 for i in range(12)])
    canary = sampled("canary", [0.01] * 12, [103.0 + i * 0.01 for i in range(12)])
    assert mann_whitney_worse(list(stable.latency_samples), list(canary.latency_samples)) < 0.01
    assert judge(MW, stable, canary).passed
    slower = sampled("canary", [0.01] * 12, [130.0 + i * 0.01 for i in range(12)])
    assert not judge(MW, stable, slower).passed


def test_mann_whitney_without_stable_data_fails_as_no_data_except_at_full_weight() -> None:
    canary = sampled("canary", [0.01] * 6, [100.0] * 6)
    verdict = judge(MW, VersionMetrics(track="stable"), canary, canary_weight=50)
    assert not verdict.passed and verdict.no_data
    assert judge(MW, VersionMetrics(track="stable"), canary, canary_weight=100).passed
    few = sampled("canary", [0.01] * 2, [100.0] * 2)
    assert judge(MW, canary, few).no_data


def test_threshold_judge_limits() -> None:
    policy = Policy(max_error_rate=0.01, max_p95_latency_ms=200)
    ok = VersionMetrics("canary", requests_per_second=5, error_rate=0.005, p95_ms=150)
    assert judge(policy, None, ok).passed
    slow = VersionMetrics("canary", requests_per_second=5, error_rate=0.005, p95_ms=250)
    verdict = judge(policy, None, slow)
    assert not verdict.passed and "p95 250 ms is above the limit 200 ms" in verdict.reasons[1]


def _benchmark():
    spec = importlib.util.spec_from_file_location("judge_false_rollback", ROOT / "benchmarks" / "judge_false_rollback.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


def test_statistical_judge_false_rollback_bounds_on_30_seeds() -> None:
    bench = _benchmark()
    assert bench.rollback_rate(range(30), 1.0) <= 0.01       # A/A: identical canary, at most 1 % rolled back
    assert bench.rollback_rate(range(10_000, 10_030), 2.0) >= 0.95  # 2x error rate: at least 95 % caught
