"""What the analysis observed for one version (stable or canary) of a model over one interval."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any


def _finite(value: float | None) -> bool:
    return value is not None and not (isinstance(value, float) and (math.isnan(value) or math.isinf(value)))


@dataclass(frozen=True)
class VersionMetrics:
    """Metrics of one track (stable | canary) of a model in one pool over one analysis interval.

    ``requests_per_second`` is the traffic the version served; ``error_rate`` is in [0, 1];
    latencies are milliseconds. ``error_samples`` / ``latency_samples`` are the per-sub-interval
    series (e.g. one point per 10 s) that the Mann-Whitney judge compares. ``replicas`` and
    ``hourly_price`` (of the pool, per replica) give the cost per 1,000 inferences.
    """

    track: str
    pool: str | None = None
    requests_per_second: float | None = None
    error_rate: float | None = None
    p95_ms: float | None = None
    p50_ms: float | None = None
    error_samples: tuple[float, ...] = field(default_factory=tuple)
    latency_samples: tuple[float, ...] = field(default_factory=tuple)
    replicas: int | None = None
    hourly_price: float | None = None
    # counts over the interval (PromQL increase(), so not always whole numbers) and the latency
    # histogram's bucket increases as (upper bound in seconds, cumulative count) pairs
    requests: float | None = None
    errors: float | None = None
    latency_buckets: tuple[tuple[float, float], ...] = field(default_factory=tuple)
    full_replicas: int | None = None  # replicas the pool runs when it serves all of the model's traffic

    @property
    def has_data(self) -> bool:
        """True when the version served traffic and its error rate and p95 are real numbers."""
        return (_finite(self.requests_per_second) and (self.requests_per_second or 0) > 0
                and _finite(self.error_rate) and _finite(self.p95_ms))

    def missing(self) -> list[str]:
        """Names of the measurements that are absent or NaN."""
        out = []
        if not _finite(self.requests_per_second) or not (self.requests_per_second or 0) > 0:
            out.append("request rate")
        if not _finite(self.error_rate):
            out.append("error rate")
        if not _finite(self.p95_ms):
            out.append("p95 latency")
        return out

    @property
    def request_count(self) -> int:
        """Requests served in the interval as a whole number (from the counter, else rate x interval)."""
        value = float(self.requests or 0.0) if _finite(self.requests) else 0.0
        return int(round(value)) if value > 0 else 0

    @property
    def error_count(self) -> int:
        if _finite(self.errors):
            return min(int(round(self.errors or 0.0)), self.request_count)
        if _finite(self.error_rate):
            return min(int(round((self.error_rate or 0.0) * self.request_count)), self.request_count)
        return 0

    @property
    def cost_per_1000(self) -> float | None:
        """What this pool actually spent per 1,000 inferences it served (price x live replicas / served
        per hour). Not fair between tracks at different weights: see ``cost_at_load``."""
        if self.hourly_price is None or self.replicas is None or not _finite(self.requests_per_second):
            return None
        per_hour = (self.requests_per_second or 0.0) * 3600.0
        if per_hour <= 0:
            return None
        return self.hourly_price * self.replicas / per_hour * 1000.0

    def cost_at_load(self, load_rps: float | None) -> float | None:
        """Cost per 1,000 inferences if this pool served ``load_rps`` (the model's whole traffic) at the
        replica count it runs at full size: hourly price x full replicas / inferences per hour x 1000.

        Both pools are priced at the same load, so a pool that is cheaper per replica at the same
        replica count comes out cheaper whatever weight each track serves today."""
        replicas = self.full_replicas if self.full_replicas is not None else self.replicas
        if self.hourly_price is None or replicas is None or not _finite(load_rps) or (load_rps or 0) <= 0:
            return None
        return self.hourly_price * replicas / ((load_rps or 0.0) * 3600.0) * 1000.0

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["error_samples"] = [_clean(v) for v in self.error_samples]
        data["latency_samples"] = [_clean(v) for v in self.latency_samples]
        data["latency_buckets"] = [[_bound(le), _clean(c)] for le, c in self.latency_buckets]
        for key in ("requests_per_second", "error_rate", "p95_ms", "p50_ms", "requests", "errors"):
            data[key] = _clean(data[key])
        return data

    def summary(self) -> dict[str, Any]:
        """The figures shown in a report (no sample series)."""
        cost = self.cost_per_1000
        return {"track": self.track, "pool": self.pool, "rps": _clean(self.requests_per_second),
                "error_rate": _clean(self.error_rate), "p95_ms": _clean(self.p95_ms),
                "cost_per_1000": None if cost is None else round(cost, 6),
                "requests": _clean(self.requests), "errors": _clean(self.errors), "replicas": self.replicas}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "VersionMetrics":
        data = dict(data)
        data["error_samples"] = tuple(_nan(v) for v in data.get("error_samples") or ())
        data["latency_samples"] = tuple(_nan(v) for v in data.get("latency_samples") or ())
        data["latency_buckets"] = tuple((float(le) if le is not None else math.inf, _nan(c))
                                        for le, c in data.get("latency_buckets") or ())
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


def _clean(value: float | None) -> float | None:
    """JSON has no NaN: store NaN/inf as None (which reads back as 'no data')."""
    return value if _finite(value) else None


def _bound(le: float) -> float | None:
    return None if math.isinf(le) else le


def _nan(value: float | None) -> float:
    return float("nan") if value is None else float(value)
