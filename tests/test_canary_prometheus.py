"""Canary analysis against a REAL Prometheus (Debian's /usr/bin/prometheus) scraping a synthetic
BentoML metrics endpoint every second."""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path

import pytest

from reconciler.rollout.judge import judge
from reconciler.rollout.machine import Observations, step
from reconciler.rollout.prometheus import PrometheusAnalysis, PrometheusClient, selector
from reconciler.rollout.state import Phase, Policy, RolloutState
from reconciler.errors import MetricsError
from tests.fake_metrics import PROMETHEUS, FakeBentoMetrics, Series, run_prometheus, wait_for
from tests.requirements import missing

pytestmark = pytest.mark.slow

INTERVAL = 10  # seconds of data each analysis looks at


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory):
    if not Path(PROMETHEUS).exists() and shutil.which("prometheus") is None:
        missing("no prometheus binary: apt-get install -y --no-install-recommends prometheus")
    series = [
        Series("iris", "stable", "gpu-a10g", requests=100, errors=1, latency=0.08),
        Series("iris", "canary", "gpu-a10g", requests=20, errors=4, latency=0.3),
        Series("digits", "stable", "gpu-a10g", requests=50, errors=0, latency=0.04),
        Series("digits", "canary", "inf2", requests=50, errors=0, latency=0.09),
        Series("quiet", "canary", "gpu-a10g", requests=0, errors=0, latency=0.05),  # scraped, never called
    ]
    with FakeBentoMetrics(series) as fake, run_prometheus(tmp_path_factory.mktemp("prom"), fake.address) as url:
        client = PrometheusClient(url)
        analysis = PrometheusAnalysis(client, samples=5, min_window=2)  # 1 s scrapes: 2 s windows hold two

        def ready():
            now = time.time()
            m = analysis.collect(model="iris", track="canary", pool="gpu-a10g", now=now, interval_seconds=INTERVAL)
            return m.has_data and len(m.latency_samples) >= 4 and (m.requests or 0) > 100

        wait_for(ready, timeout=45, poll=0.5, what="Prometheus to hold a few seconds of scraped samples")
        yield analysis
        client.close()


def test_success_rate_and_p95_per_track_and_pool(prometheus: PrometheusAnalysis) -> None:
    now = time.time()
    stable = prometheus.collect(model="iris", track="stable", pool="gpu-a10g", namespace="models-prod", now=now,
                                interval_seconds=INTERVAL)
    canary = prometheus.collect(model="iris", track="canary", pool="gpu-a10g", namespace="models-prod", now=now,
                                interval_seconds=INTERVAL)
    assert stable.error_rate == pytest.approx(0.01, rel=1e-6)
    assert canary.error_rate == pytest.approx(0.20, rel=1e-6)
    # all stable requests fall in the (0.075, 0.1] bucket: p95 interpolates to 98.75 ms; canary (0.25, 0.5]
    assert stable.p95_ms == pytest.approx(98.75, rel=1e-6)
    assert canary.p95_ms == pytest.approx(487.5, rel=1e-6)
    assert stable.requests_per_second > canary.requests_per_second > 0  # 100 vs 20 requests per 1 s scrape
    assert stable.requests_per_second / canary.requests_per_second == pytest.approx(5, rel=0.05)
    # counts over the interval, from increase(): errors / requests is the same 20 %, in whole requests
    assert canary.errors / canary.requests == pytest.approx(0.2, rel=1e-6)
    assert canary.requests == pytest.approx(canary.requests_per_second * INTERVAL, rel=1e-6)  # increase = rate x window
    # the duration histogram, cumulative per bucket: every canary request is in (0.25, 0.5]
    buckets = dict(canary.latency_buckets)
    assert buckets[0.25] == 0 and buckets[0.5] == pytest.approx(canary.requests) and math.inf in buckets
    # non-overlapping windows of 2 s: one p95 per window
    assert 4 <= len(canary.latency_samples) <= 5 and all(v == pytest.approx(487.5) for v in canary.latency_samples)
    verdict = judge(Policy(max_error_rate=0.05, max_p95_latency_ms=300, min_requests=50), stable, canary)
    assert verdict.failed, verdict.reasons
    # the judge counts whole requests: increase() extrapolates, so 165.4 requests and 33.08 errors become
    # 165 and 33; the rate it reports is 20 % within one request of rounding
    failed = [r for r in verdict.reasons if r.startswith("FAILED errors vs limit: canary ")]
    assert failed, verdict.reasons
    reported = float(failed[0].removeprefix("FAILED errors vs limit: canary ").split("%")[0])
    assert reported == pytest.approx(20.0, abs=100 / canary.request_count), failed


def test_state_machine_on_real_metrics_rolls_back_the_bad_canary(prometheus: PrometheusAnalysis) -> None:
    policy = Policy(steps=(10, 50, 100), interval_seconds=INTERVAL, failure_threshold=2, max_error_rate=0.05,
                    min_requests=50)
    state = RolloutState("iris", "prod", policy, stable_revision="r1")
    _, state = step(state, Observations("r2"), 0)
    _, state = step(state, Observations("r2"), 1)  # canary ready: weight 10
    for tick in range(2, 4):
        now = time.time()
        obs = Observations("r2", stable=prometheus.collect(model="iris", track="stable", pool="gpu-a10g", now=now,
                                                           interval_seconds=INTERVAL),
                           canary=prometheus.collect(model="iris", track="canary", pool="gpu-a10g", now=now,
                                                     interval_seconds=INTERVAL))
        _, state = step(state, obs, 1 + tick * INTERVAL)
    assert state.phase is Phase.rolled_back
    assert state.history[-1].canary["error_rate"] == pytest.approx(0.2, rel=1e-6)


def test_missing_series_is_no_data_and_never_passes(prometheus: PrometheusAnalysis) -> None:
    m = prometheus.collect(model="absent-model", track="canary", now=time.time(), interval_seconds=INTERVAL)
    assert not m.has_data and m.requests_per_second is None
    assert set(m.missing()) == {"request rate", "error rate", "p95 latency"}
    verdict = judge(Policy(), None, m)
    assert not verdict.passed and verdict.no_data


def test_zero_traffic_gives_nan_which_is_no_data(prometheus: PrometheusAnalysis) -> None:
    m = prometheus.collect(model="quiet", track="canary", now=time.time(), interval_seconds=INTERVAL)
    assert m.requests_per_second == 0.0
    assert math.isnan(m.error_rate) and math.isnan(m.p95_ms)  # 0/0 in PromQL
    verdict = judge(Policy(), None, m)
    assert verdict.inconclusive  # never a pass, never a failure
    assert "request rate, error rate, p95 latency" in verdict.reasons[0]


def test_cross_pool_cost_and_slo_from_real_metrics(prometheus: PrometheusAnalysis) -> None:
    now = time.time()
    stable = prometheus.collect(model="digits", track="stable", pool="gpu-a10g", now=now, interval_seconds=INTERVAL,
                                replicas=2, hourly_price=1.006)
    canary = prometheus.collect(model="digits", track="canary", pool="inf2", now=now, interval_seconds=INTERVAL,
                                replicas=2, hourly_price=0.758)
    assert stable.p95_ms == pytest.approx(48.75) and canary.p95_ms == pytest.approx(98.75)
    assert canary.error_rate == 0.0  # no 5xx series at all: "or vector(0)" keeps the ratio defined
    expected = 0.758 * 2 / (canary.requests_per_second * 3600) * 1000
    assert canary.cost_per_1000 == pytest.approx(expected)
    # at equal load: the same replicas at full size, both priced for the model's whole traffic
    load = stable.requests_per_second + canary.requests_per_second
    assert canary.cost_at_load(load) < stable.cost_at_load(load)
    # one interval of a few hundred requests: the minimum-sample guard sized for a 100x regression lets it through
    policy = Policy(slo_p95_latency_ms=200, slo_error_rate=0.01, min_requests=50, detect_error_increase=99, power=0.55)
    verdict = judge(policy, stable, canary, cross_pool=True)
    assert verdict.passed, verdict.reasons  # 98.75 ms p95 < 200, and cheaper
    # an SLO at a bucket boundary (75 ms) is tested on exact counts: every canary request is slower
    strict = Policy(slo_p95_latency_ms=75, slo_error_rate=0.01, min_requests=50)
    verdict = judge(strict, stable, canary, cross_pool=True)
    assert verdict.failed and any(r.startswith("FAILED p95 vs SLO: canary 100.00%") for r in verdict.reasons)
    # 90 ms is no boundary of these buckets: counted at 100 ms, which can only miss a breach, and said so
    loose = judge(Policy(slo_p95_latency_ms=90, slo_error_rate=0.01, min_requests=50), stable, canary, cross_pool=True)
    assert any("not a bucket boundary: counted at the next one, 100 ms" in r for r in loose.reasons)


def test_bad_query_and_unreachable_prometheus_raise_metrics_error(prometheus: PrometheusAnalysis) -> None:
    broken = PrometheusAnalysis(prometheus.client, queries={"request_rate": "sum(rate(x{$selector}[$window]"})
    with pytest.raises(MetricsError, match="Prometheus rejected") as info:
        broken.collect(model="iris", track="canary", now=time.time(), interval_seconds=INTERVAL)
    assert "canary.queries" in str(info.value)
    with pytest.raises(MetricsError, match="unknown canary queries"):
        PrometheusAnalysis(prometheus.client, queries={"p99": "x"})
    with PrometheusClient("http://127.0.0.1:9", deadline=2) as dead:
        with pytest.raises(MetricsError, match="unreachable"):
            dead.query("up", time.time())


def test_selector_quotes_label_values() -> None:
    assert selector("iris", "canary", "inf2", "ns") == (
        'gitops_ml_model="iris",gitops_ml_track="canary",gitops_ml_pool="inf2",namespace="ns"')
    assert selector('a"b', "stable") == 'gitops_ml_model="a\\"b",gitops_ml_track="stable"'
