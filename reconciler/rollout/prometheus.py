"""Canary analysis from Prometheus over its HTTP API (httpx). Errors become MetricsError.

Default queries are PromQL over BentoML's own metrics (``bentoml_service_request_total`` with
``http_response_code``/``endpoint`` labels, and the ``bentoml_service_request_duration_seconds``
histogram), selected per model / track / pool / namespace, without the kubelet's probes
(``reconciler.probes``). Those selector labels are the pods'
``gitops.ml/*`` labels as Prometheus names them when a PodMonitor copies them with
``podTargetLabels: [gitops.ml/model, gitops.ml/track, gitops.ml/pool]`` (dots and slashes become
underscores). A model's canary policy can replace any query (``canary.queries``), using the
placeholders ``$selector`` (the label matchers) and ``$window`` (the rate window).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from string import Template
from typing import Any

from reconciler import probes
from reconciler.errors import MetricsError
from reconciler.rollout.metrics import VersionMetrics
from reconciler import net
import httpx

LABELS = {"model": "gitops_ml_model", "track": "gitops_ml_track", "pool": "gitops_ml_pool", "namespace": "namespace"}

# the model's own requests: every default reads BentoML's series without the kubelet's probes (reconciler.probes),
# which BentoML counts as requests (0.3 per second per pod, fast, a 503 while not ready): left in, at low traffic
# they would outnumber the predictions, dilute a failing canary's error rate, pull its latency towards theirs and
# count toward the sample the guard sizes. A model's own canary.queries are read as written.
_MODEL = "$selector," + probes.NOT_PROBES
DEFAULT_QUERIES: dict[str, str] = {
    "requests": f"sum(increase(bentoml_service_request_total{{{_MODEL}}}[$window]))",
    "errors": (f'sum(increase(bentoml_service_request_total{{{_MODEL},http_response_code=~"5.."}}[$window])) '
               "or vector(0)"),
    "latency_buckets": f"sum by (le) (increase(bentoml_service_request_duration_seconds_bucket{{{_MODEL}}}[$window]))",
    "request_rate": f"sum(rate(bentoml_service_request_total{{{_MODEL}}}[$window]))",
    "error_rate": (f'(sum(rate(bentoml_service_request_total{{{_MODEL},http_response_code=~"5.."}}[$window])) '
                   f"or vector(0)) / sum(rate(bentoml_service_request_total{{{_MODEL}}}[$window]))"),
    "p95_latency_ms": ("histogram_quantile(0.95, sum by (le) "
                       f"(rate(bentoml_service_request_duration_seconds_bucket{{{_MODEL}}}[$window]))) * 1000"),
}
QUERY_KEYS = tuple(DEFAULT_QUERIES)
MIN_SAMPLE_WINDOW = 30  # seconds: a rate() window must hold at least two scrapes (15 s is the usual interval)


def sample_layout(interval_seconds: int, samples: int, min_window: float = MIN_SAMPLE_WINDOW) -> tuple[int, float]:
    """(windows, seconds each) for the per-window latency samples of one interval. Pure.

    The windows tile the interval without overlapping (range-query step = rate window), so the
    samples are independent: overlapping windows share requests and make a rank test's p-values
    far too small (1-minute windows every 5 s gave p < 0.01 in a quarter of A/A intervals)."""
    windows = max(1, min(max(samples, 1), int(interval_seconds // max(min_window, 1))))
    return windows, interval_seconds / windows


def selector(model: str, track: str | None, pool: str | None = None, namespace: str | None = None,
             labels: dict[str, str] = LABELS) -> str:
    """Label matchers for one version; ``track=None`` leaves the track out (a cross-pool canary is
    told apart by its pool)."""
    def quote(value: str) -> str:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'

    parts = [f"{labels['model']}={quote(model)}"]
    if track:
        parts.append(f"{labels['track']}={quote(track)}")
    if pool:
        parts.append(f"{labels['pool']}={quote(pool)}")
    if namespace:
        parts.append(f"{labels['namespace']}={quote(namespace)}")
    return ",".join(parts)


def render_query(template: str, sel: str, window: str) -> str:
    try:
        return Template(template).substitute(selector=sel, window=window)
    except (KeyError, ValueError) as exc:
        raise MetricsError(f"canary query {template!r} has an unknown placeholder: {exc}",
                           fix="use only $selector and $window in canary.queries") from None


def _seconds(value: float) -> str:
    return f"{max(1, int(math.ceil(value)))}s"


_SLOW_FIX = ("check Prometheus' load and the network to it; the canary holds its step until a pass can measure it "
             "(--prometheus-deadline / RECONCILER_PROMETHEUS_DEADLINE sets the deadline)")


def _value(raw: Any) -> float:
    try:
        return float(raw)  # Prometheus sends "NaN", "+Inf" as strings; float() reads them
    except (TypeError, ValueError):
        return float("nan")


class PrometheusClient:
    """The two Prometheus HTTP API calls the analysis needs.

    ``deadline`` bounds each whole request (connect, headers and body: reconciler.net), not each
    socket read: a Prometheus that drips its answer costs at most that. A client lives for one
    sync pass; once one of its requests ran out its deadline, the rest of the pass's queries fail
    at once with the same error (a stalled Prometheus is asked once per pass, not once per query),
    so a pass costs at most one deadline however many canaries it analyses. Each failure is a
    MetricsError: an inconclusive measurement, never a canary failure."""

    def __init__(self, url: str, *, deadline: float = 10.0, transport: Any = None) -> None:
        self.url = url.rstrip("/")
        self.deadline = deadline
        self.stalled: str | None = None
        self._client = net.client(deadline, base_url=self.url, transport=transport)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> "PrometheusClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _get(self, path: str, params: dict[str, str]) -> dict[str, Any]:
        if self.stalled:
            raise MetricsError(self.stalled, fix=_SLOW_FIX)
        try:
            response = self._client.get(path, params=params)
        except net.DeadlineExceeded:
            self.stalled = (f"Prometheus at {self.url} did not answer within its {self.deadline:g} s deadline "
                            "(not asked again this pass)")
            raise MetricsError(self.stalled, fix=_SLOW_FIX) from None
        except httpx.HTTPError as exc:
            raise MetricsError(f"Prometheus at {self.url} is unreachable: {type(exc).__name__}: {exc}",
                               fix="check the Prometheus URL (--prometheus-url / RECONCILER_PROMETHEUS_URL) "
                                   "and that it is running") from None
        try:
            body = response.json()
        except ValueError:
            raise MetricsError(f"Prometheus at {self.url} answered HTTP {response.status_code} with a non-JSON body "
                               f"for {params.get('query')!r}",
                               fix="check the URL points at Prometheus' API, not a proxy login page") from None
        if response.status_code != 200 or body.get("status") != "success":
            raise MetricsError(f"Prometheus rejected {params.get('query')!r}: HTTP {response.status_code} "
                               f"{body.get('errorType', '')}: {body.get('error', '')}",
                               fix="check the PromQL in the model's canary.queries" if response.status_code == 400
                               else None)
        return body["data"]

    def query(self, promql: str, at: float) -> float | None:
        """The single value of an instant query; None when it returned no series."""
        data = self._get("/api/v1/query", {"query": promql, "time": f"{at:.3f}"})
        result = data.get("result")
        if data.get("resultType") == "scalar":
            return _value(result[1])
        if not result:
            return None
        if len(result) > 1:
            raise MetricsError(f"query {promql!r} returned {len(result)} series, expected one",
                               fix="aggregate it, e.g. wrap it in sum(...)")
        return _value(result[0]["value"][1])

    def query_vector(self, promql: str, at: float, label: str) -> list[tuple[str, float]]:
        """An instant query returning many series: (value of ``label``, value) per series."""
        data = self._get("/api/v1/query", {"query": promql, "time": f"{at:.3f}"})
        return [((item.get("metric") or {}).get(label, ""), _value(item["value"][1])) for item in data.get("result") or []]

    def query_range(self, promql: str, start: float, end: float, step: float) -> list[tuple[float, float]]:
        data = self._get("/api/v1/query_range", {"query": promql, "start": f"{start:.3f}", "end": f"{end:.3f}",
                                                 "step": f"{step:g}"})
        result = data.get("result") or []
        if len(result) > 1:
            raise MetricsError(f"query {promql!r} returned {len(result)} series, expected one",
                               fix="aggregate it, e.g. wrap it in sum(...)")
        return [(float(t), _value(v)) for t, v in result[0]["values"]] if result else []


@dataclass
class PrometheusAnalysis:
    """Collects VersionMetrics for one track of a model over the last analysis interval.

    Counts (``increase()`` over the interval) feed the error test, the duration histogram's bucket
    increases feed the latency test; ``samples`` non-overlapping windows of at least
    ``min_window`` seconds (``sample_layout``) give the Mann-Whitney judge its per-window p95s.
    """

    client: PrometheusClient
    queries: dict[str, str] = field(default_factory=dict)
    samples: int = 12
    min_window: float = MIN_SAMPLE_WINDOW
    labels: dict[str, str] = field(default_factory=lambda: dict(LABELS))

    def __post_init__(self) -> None:
        unknown = set(self.queries) - set(QUERY_KEYS)
        if unknown:
            raise MetricsError(f"unknown canary queries: {', '.join(sorted(unknown))}",
                               fix=f"canary.queries may set only {', '.join(QUERY_KEYS)}")
        self.queries = {**DEFAULT_QUERIES, **self.queries}

    def collect(self, *, model: str, track: str, now: float, interval_seconds: int, pool: str | None = None,
                namespace: str | None = None, replicas: int | None = None,
                hourly_price: float | None = None, match_track: bool = True,
                full_replicas: int | None = None) -> VersionMetrics:
        sel = selector(model, track if match_track else None, pool, namespace, self.labels)
        window = _seconds(interval_seconds)
        q = {key: render_query(text, sel, window) for key, text in self.queries.items()}
        requests = self.client.query(q["requests"], now)
        errors = self.client.query(q["errors"], now)
        rps = self.client.query(q["request_rate"], now)
        error_rate = self.client.query(q["error_rate"], now)
        p95 = self.client.query(q["p95_latency_ms"], now)
        buckets = []
        for le, count in self.client.query_vector(q["latency_buckets"], now, "le"):
            try:
                buckets.append((float(le), count))  # "+Inf" reads as inf
            except ValueError:
                continue
        windows, seconds = sample_layout(interval_seconds, self.samples, self.min_window)
        latency: list[tuple[float, float]] = []
        if windows > 1:
            sample_q = render_query(self.queries["p95_latency_ms"], sel, _seconds(seconds))
            latency = self.client.query_range(sample_q, now - interval_seconds + seconds, now, seconds)
        return VersionMetrics(
            track=track, pool=pool, requests_per_second=rps, error_rate=error_rate, p95_ms=p95,
            latency_samples=tuple(v for _, v in latency if not math.isnan(v)),
            replicas=replicas, hourly_price=hourly_price, requests=requests, errors=errors,
            latency_buckets=tuple(sorted(buckets)), full_replicas=full_replicas)
