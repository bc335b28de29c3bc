"""The persisted state of one model's rollout in one environment, and its policy.

Everything here is a plain dataclass that round-trips through ``to_dict`` / ``from_dict`` (JSON),
so the reconciler can store it in a ConfigMap and a restarted reconciler continues exactly where
the previous one stopped.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from enum import Enum
from typing import Any, Literal

from reconciler.catalog.effective import EffectiveCanary
from reconciler.catalog.specs import SLO
from reconciler.errors import ReconcilerError

SCHEMA_VERSION = 1


class Phase(str, Enum):
    stable = "stable"              # no canary: all traffic on the stable revision
    initializing = "initializing"  # a canary revision is being deployed at weight 0
    progressing = "progressing"    # traffic is being shifted step by step, under analysis
    promoting = "promoting"        # judged good: the new version scales to full size before the old goes
    promoted = "promoted"          # the canary became stable (terminal for that revision)
    rolled_back = "rolled_back"    # the canary was abandoned (terminal for that revision)

    @property
    def active(self) -> bool:
        return self in (Phase.initializing, Phase.progressing, Phase.promoting)


MAX_WINDOWS = 240  # analysis windows kept for the dispersion estimate (the totals keep counting beyond)


@dataclass(frozen=True)
class Evidence:
    """What analysis has measured over the whole rollout of a canary revision (issue 21).

    Every analysed interval is one *window*: the canary's and stable's request and error counts and
    latency bucket increases, as Prometheus' ``increase()`` reports them (so not always whole
    numbers). Windows before the canary gets traffic are stable's alone (canary counts 0); windows in
    the canary's warm-up are not analysed at all. The totals (``canary_*``, ``reference_*``) add up
    every window since the revision started: a canary is judged on all its traffic, every look re-tests
    the running totals, and the spending rule (``spent``) is what keeps those repeated looks within one
    error budget. ``canary_buckets`` / ``reference_buckets`` are cumulative bucket counts with
    ``bounds`` as upper bounds (+Inf last). ``step_requests`` counts the canary's requests at the
    current weight. ``boundaries`` fixes, per latency check, the bucket boundary it counts slow
    requests at (chosen at its first look). ``needed_requests`` / ``detect`` are the guard's last
    answer: the canary requests the rollout needs and the effect they detect.

    ``stable_requests`` / ``stable_errors`` / ``stable_buckets`` / ``intervals`` are kept with their
    old meaning for readers of persisted state: stable over the analysed windows.
    """

    canary_requests: int = 0
    canary_errors: int = 0
    stable_requests: int = 0
    stable_errors: int = 0
    intervals: int = 0
    baseline: dict[str, Any] | None = None
    canary_buckets: tuple[tuple[float, float], ...] = ()
    stable_buckets: tuple[tuple[float, float], ...] = ()
    reference_requests: int = 0
    reference_errors: int = 0
    reference_buckets: tuple[tuple[float, float], ...] = ()
    needed_requests: int | None = None
    detect: str | None = None
    # issue 21
    windows: tuple[tuple[float, ...], ...] = ()  # (canary req, canary err, stable req, stable err, *canary slow, *stable slow)
    window_bounds: tuple[float, ...] = ()       # the bucket bounds the windows' slow counts are per (finite ones)
    step_requests: int = 0
    spent: tuple[tuple[str, float], ...] = ()   # alpha spent so far, per check
    boundaries: tuple[tuple[str, float], ...] = ()  # the bucket boundary (s) each latency check counts at
    budget_left: float | None = None            # the rollout's error budget not yet spent (of policy.alpha)
    decided_by: str | None = None               # the test that decided the last judgement, in words
    accept_spent: tuple[tuple[str, float], ...] = ()  # the miss budget early acceptance spent so far, per check

    def next_step(self) -> "Evidence":
        """The evidence a new weight starts with: everything stays (the rollout is judged as a whole),
        only the count of the step's own canary requests starts again."""
        return replace(self, step_requests=0)

    def spent_on(self, check: str) -> float:
        return dict(self.spent).get(check, 0.0)

    @property
    def waiting_for(self) -> int:
        """Canary requests the guard still waits for (0: enough)."""
        return max((self.needed_requests or 0) - self.canary_requests, 0)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("canary_buckets", "stable_buckets", "reference_buckets"):  # JSON has no Infinity
            data[key] = [[None if math.isinf(le) else le, c] for le, c in getattr(self, key)]
        data["windows"] = [list(w) for w in self.windows]
        data["window_bounds"] = list(self.window_bounds)
        data["spent"] = [list(x) for x in self.spent]
        data["boundaries"] = [list(x) for x in self.boundaries]
        data["accept_spent"] = [list(x) for x in self.accept_spent]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "Evidence":
        known = set(cls.__dataclass_fields__)
        values = {k: v for k, v in (data or {}).items() if k in known}
        for key in ("canary_buckets", "stable_buckets", "reference_buckets"):
            values[key] = tuple((math.inf if le is None else float(le), float(c)) for le, c in values.get(key) or ())
        values["windows"] = tuple(tuple(float(x) for x in w) for w in values.get("windows") or ())
        values["window_bounds"] = tuple(float(x) for x in values.get("window_bounds") or ())
        values["spent"] = tuple((str(k), float(v)) for k, v in values.get("spent") or ())
        values["boundaries"] = tuple((str(k), float(v)) for k, v in values.get("boundaries") or ())
        values["accept_spent"] = tuple((str(k), float(v)) for k, v in values.get("accept_spent") or ())
        return cls(**values)


@dataclass(frozen=True)
class Pause:
    """A manual gate in the step list: after step ``after`` (an index into the weights) passes, hold
    for ``seconds`` (None: until a person runs ``reconciler rollout resume`` or ``promote``)."""

    after: int
    seconds: int | None = None


@dataclass(frozen=True)
class Policy:
    """The canary policy of a model in an environment (from specs.EffectiveCanary and the SLO)."""

    steps: tuple[int, ...] = (10, 25, 50, 100)
    interval_seconds: int = 60
    failure_threshold: int = 2
    progress_deadline_seconds: int = 1800
    max_error_rate: float = 0.01
    max_p95_latency_ms: float | None = None
    judge: Literal["threshold", "mann-whitney"] = "threshold"
    router: str = "replicas"                 # a name of the router registry (reconciler.traffic)
    slo_p95_latency_ms: float | None = None
    slo_error_rate: float | None = None
    # comparison with stable (both judges): significance level and the effect size tolerated
    alpha: float = 0.01
    error_rate_tolerance: float = 0.25       # relative: canary may make up to 1.25x stable's errors
    latency_tolerance: float = 0.10          # relative: canary's p95 may be 10 % above stable's
    # the minimum-sample guard: a step passes only once its counts detect these increases with this power
    detect_error_increase: float = 1.0       # relative: 2x stable's error rate
    detect_latency_increase: float = 0.30    # relative: +30 % on stable's p95
    power: float = 0.95
    # guards and outcomes (Argo Rollouts' AnalysisRun: Successful / Failed / Inconclusive)
    min_requests: int = 200                  # canary requests per interval below which nothing is concluded
    inconclusive_limit: int = 3              # consecutive inconclusive analyses before on_inconclusive
    on_inconclusive: Literal["pause", "rollback"] = "pause"
    # cross-pool: a canary pool that meets the SLO but costs more per 1,000 inferences
    cost_policy: Literal["promote", "rollback", "confirm"] = "confirm"
    pauses: tuple[Pause, ...] = ()           # manual gates between steps
    ab_header: tuple[str, str] | None = None  # requests with this header/value always go to the canary
    mirror_percent: int | None = None         # shadow this % of stable's requests to the canary
    confirm_url: str | None = None            # Flagger-style confirm-promotion webhook
    route_domain: str | None = None           # the model's route hostname is <model>.<ns>.<route_domain>
    # issue 21: warm-up, tail quantiles, measurement errors
    warmup_seconds: int = 0                   # after each weight increase, this long is not judged (initialDelay)
    quantiles: tuple[float, ...] = (0.95,)    # latency quantiles compared with stable (0.99: the tail too)
    measurement_error_limit: int = 3          # consecutive analyses without metrics before on_measurement_error
    on_measurement_error: Literal["pause", "rollback"] = "pause"

    @classmethod
    def from_spec(cls, canary: EffectiveCanary, slo: SLO | None = None) -> "Policy":
        """Build from the catalog's effective canary settings and the model's SLO. Every field is read by
        name (mypy checks them against EffectiveCanary); an optional one left undeclared (None) keeps
        this class's default."""
        declared: dict[str, Any] = {
            "min_requests": canary.min_requests, "inconclusive_limit": canary.inconclusive_limit,
            "on_inconclusive": canary.on_inconclusive, "cost_policy": canary.cost_policy,
            "error_rate_tolerance": canary.error_rate_tolerance, "latency_tolerance": canary.latency_tolerance,
            "detect_error_increase": canary.detect_error_increase,
            "detect_latency_increase": canary.detect_latency_increase, "power": canary.power,
            "mirror_percent": canary.mirror_percent, "confirm_url": canary.confirm_url,
            "route_domain": canary.route_domain, "warmup_seconds": canary.warmup_seconds,
            "measurement_error_limit": canary.measurement_error_limit,
            "on_measurement_error": canary.on_measurement_error,
            "quantiles": tuple(sorted(float(q) for q in canary.quantiles)) if canary.quantiles else None,
            "ab_header": (canary.ab_header.name, canary.ab_header.value) if canary.ab_header else None,
            "pauses": tuple(Pause(p.after, p.seconds) for p in canary.pauses) or None,
        }
        policy = cls(steps=tuple(canary.steps), interval_seconds=canary.interval_seconds,
                     failure_threshold=canary.failure_threshold,
                     progress_deadline_seconds=canary.progress_deadline_seconds,
                     max_error_rate=canary.max_error_rate, max_p95_latency_ms=canary.max_p95_latency_ms,
                     judge=canary.judge, router=canary.router,
                     slo_p95_latency_ms=slo.p95_latency_ms if slo is not None else None,
                     slo_error_rate=slo.error_rate if slo is not None else None,
                     **{key: value for key, value in declared.items() if value is not None})
        policy.check()
        return policy

    def check(self) -> None:
        """The guard sizes for an increase the comparison can fail on: it must exceed the tolerance."""
        for detect, tolerance, field_name, tolerance_name in (
                (self.detect_error_increase, self.error_rate_tolerance, "detectErrorIncrease", "errorRateTolerance"),
                (self.detect_latency_increase, self.latency_tolerance, "detectLatencyIncrease", "latencyTolerance")):
            if detect <= tolerance:
                raise ReconcilerError(
                    f"canary.{field_name} {detect:g} is not above canary.{tolerance_name} {tolerance:g}: the guard "
                    "would wait for the power to detect an increase the judge tolerates",
                    fix=f"set canary.{field_name} above {tolerance:g} (e.g. {max(2 * tolerance, tolerance + 0.1):g}) "
                        f"or lower canary.{tolerance_name}")

    def pause_after(self, index: int) -> Pause | None:
        return next((p for p in self.pauses if p.after == index), None)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["steps"] = list(self.steps)
        data["pauses"] = [asdict(p) for p in self.pauses]
        data["ab_header"] = list(self.ab_header) if self.ab_header else None
        data["quantiles"] = list(self.quantiles)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Policy":
        data = dict(data)
        data["steps"] = tuple(data.get("steps", cls.steps))
        data["pauses"] = tuple(Pause(**p) for p in data.get("pauses") or ())
        data["ab_header"] = tuple(data["ab_header"]) if data.get("ab_header") else None
        if data.get("quantiles"):
            data["quantiles"] = tuple(float(q) for q in data["quantiles"])
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class StepRecord:
    """One line of the rollout report: what was seen at an analysis and what was decided, and why."""

    at: float
    revision: str | None
    step_index: int
    canary_weight: int
    decision: str  # start | restart | advance | hold | inconclusive | promote | rollback | pause | resume | ...
    reasons: tuple[str, ...] = ()
    stable: dict[str, Any] | None = None
    canary: dict[str, Any] | None = None
    achieved_weight: float | None = None  # the share of traffic the router really gave the canary (%)

    @property
    def stable_weight(self) -> int:
        return 100 - self.canary_weight

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["reasons"] = list(self.reasons)
        data["stable_weight"] = self.stable_weight
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "StepRecord":
        data = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        data["reasons"] = tuple(data.get("reasons") or ())
        return cls(**data)


@dataclass(frozen=True)
class RolloutState:
    model: str
    environment: str
    policy: Policy = field(default_factory=Policy)
    phase: Phase = Phase.stable
    stable_revision: str | None = None
    canary_revision: str | None = None
    stable_pool: str | None = None
    canary_pool: str | None = None
    step_index: int = -1          # -1: canary at weight 0 (initializing); else index into policy.steps
    canary_weight: int = 0
    achieved_weight: float | None = None   # what the router really achieved (replica ratios are coarse)
    failed_checks: int = 0
    inconclusive_checks: int = 0           # consecutive inconclusive analyses
    measurement_errors: int = 0            # consecutive analyses Prometheus could not answer (issue 21)
    evidence: Evidence = field(default_factory=Evidence)
    pause_reason: str | None = None        # why the rollout is paused (a person, a pause step, a gate)
    pause_until: float | None = None       # a timed pause step resumes by itself at this time
    gate_cleared: int = -1                 # the step index whose pause step is over (passes once)
    replaced_revision: str | None = None   # the stable revision the last promotion replaced (for reports)
    replaced_pool: str | None = None
    started_at: float | None = None
    progress_at: float | None = None       # last time the rollout made progress (deadline clock)
    last_analysis_at: float | None = None
    paused: bool = False
    requested: Literal["promote", "abort"] | None = None
    promoted_revision: str | None = None
    promotions: int = 0                    # how many promotions this state has recorded, ever
    outcome: str | None = None             # why the last rollout ended (promoted / rolled back because ...)
    history: tuple[StepRecord, ...] = ()
    generation: int = 0                    # bumped on every change; lets writers detect lost updates

    @property
    def cross_pool(self) -> bool:
        return bool(self.stable_pool and self.canary_pool and self.stable_pool != self.canary_pool)

    def evolve(self, **changes: Any) -> "RolloutState":
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["schema"] = SCHEMA_VERSION
        data["phase"] = self.phase.value
        data["policy"] = self.policy.to_dict()
        data["history"] = [r.to_dict() for r in self.history]
        data["evidence"] = self.evidence.to_dict()
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RolloutState":
        schema = data.get("schema", SCHEMA_VERSION)
        if schema != SCHEMA_VERSION:
            raise ReconcilerError(f"rollout state has schema {schema}, this reconciler reads {SCHEMA_VERSION}",
                                  fix="upgrade the reconciler, or delete the rollout ConfigMap to start afresh")
        known = set(cls.__dataclass_fields__)
        values = {k: v for k, v in data.items() if k in known}
        values["phase"] = Phase(values.get("phase", "stable"))
        values["policy"] = Policy.from_dict(values.get("policy") or {})
        values["history"] = tuple(StepRecord.from_dict(r) for r in values.get("history") or ())
        values["evidence"] = Evidence.from_dict(values.get("evidence"))
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> "RolloutState":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ReconcilerError(f"rollout state is not valid JSON: {exc}",
                                  fix="delete the rollout ConfigMap to start afresh") from None
        return cls.from_dict(data)
