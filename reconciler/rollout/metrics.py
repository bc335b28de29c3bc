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
    def cost_per_1000(self) -> float | None:
        """Pool hourly price x replicas / requests served per hour x 1000, or None when unknown."""
        if self.hourly_price is None or self.replicas is None or not _finite(self.requests_per_second):
            return None
        per_hour = (self.requests_per_second or 0.0) * 3600.0
        if per_hour <= 0:
            return None
        return self.hourly_price * self.replicas / per_hour * 1000.0

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["error_samples"] = [_clean(v) for v in self.error_samples]
        data["latency_samples"] = [_clean(v) for v in self.latency_samples]
        for key in ("requests_per_second", "error_rate", "p95_ms", "p50_ms"):
            data[key] = _clean(data[key])
        return data

    def summary(self) -> dict[str, Any]:
        """The figures shown in a report (no sample series)."""
        cost = self.cost_per_1000
        return {"track": self.track, "pool": self.pool, "rps": _clean(self.requests_per_second),
                "error_rate": _clean(self.error_rate), "p95_ms": _clean(self.p95_ms),
                "cost_per_1000": None if cost is None else round(cost, 6)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "VersionMetrics":
        data = dict(data)
        data["error_samples"] = tuple(_nan(v) for v in data.get("error_samples") or ())
        data["latency_samples"] = tuple(_nan(v) for v in data.get("latency_samples") or ())
        return cls(**data)


def _clean(value: float | None) -> float | None:
    """JSON has no NaN: store NaN/inf as None (which reads back as 'no data')."""
    return value if _finite(value) else None


def _nan(value: float | None) -> float:
    return float("nan") if value is None else float(value)
