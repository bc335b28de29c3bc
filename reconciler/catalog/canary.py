"""The canary block of model.yaml and of an environment's defaults: how a new version is moved in
(weight steps, manual gates, the judge, the traffic router and its options, A/B header, mirroring).
reconciler.catalog.effective merges the two layers; reconciler.traffic holds the routers it names."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from reconciler.catalog.fields import Strict, duration_seconds
from reconciler.errors import ReconcilerError
from reconciler.traffic import ROUTERS, names as router_names, router_kind


class ABHeader(Strict):
    """Requests carrying this header with this value always reach the canary (A/B routing)."""

    name: str = Field(..., min_length=1, pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
    value: str


class PauseStep(Strict):
    """A manual gate in the step list: ``{pause: {}}`` waits for `reconciler rollout resume`,
    ``{pause: {duration: 10m}}`` waits that long."""

    class Spec(Strict):
        duration: str | None = None

        @field_validator("duration")
        @classmethod
        def _duration(cls, value: str | None) -> str | None:
            if value is not None:
                duration_seconds(value)
            return value

    pause: Spec


class CanaryPolicy(Strict):
    """How a new version is moved in: weight steps, how long each is watched, when to give up."""

    enabled: bool | None = None
    steps: list[int | PauseStep] | None = None
    interval: str | None = None
    failure_threshold: int | None = Field(None, alias="failureThreshold", ge=1)
    progress_deadline: str | None = Field(None, alias="progressDeadline")
    max_error_rate: float | None = Field(None, alias="maxErrorRate", ge=0, le=1)
    max_p95_latency_ms: float | None = Field(None, alias="maxP95LatencyMs", gt=0)
    judge: Literal["threshold", "mann-whitney"] | None = None
    router: str | None = Field(None, description="the traffic router: a name of the router registry (reconciler.traffic)")
    router_options: dict[str, Any] | None = Field(None, alias="routerOptions", description=(
        "the router's own options, e.g. {gateway: models, gatewayNamespace: gateways} for gateway-api"))
    queries: dict[str, str] | None = None
    latency_buckets: list[float] | None = Field(None, alias="latencyBuckets", description=(
        "the upper bounds (seconds) of the request-duration histogram the canary reads: the service exports them "
        "(default: BentoML's defaults, finer bounds and every latency threshold). With a custom "
        "queries.latency_buckets, the bounds of that histogram. Every latency threshold must be one of them"))
    min_requests: int | None = Field(None, alias="minRequests", ge=1, description=(
        "canary requests a step needs before the next weight (default 200); how many the rollout needs in all "
        "comes from detectErrorIncrease, detectLatencyIncrease and power"))
    inconclusive_limit: int | None = Field(None, alias="inconclusiveLimit", ge=1)
    on_inconclusive: Literal["pause", "rollback"] | None = Field(None, alias="onInconclusive")
    cost_policy: Literal["promote", "rollback", "confirm"] | None = Field(None, alias="costPolicy", description=(
        "a cross-pool canary that meets the SLO but costs more per 1,000 inferences (default confirm)"))
    error_rate_tolerance: float | None = Field(None, alias="errorRateTolerance", ge=0)
    latency_tolerance: float | None = Field(None, alias="latencyTolerance", ge=0)
    detect_error_increase: float | None = Field(None, alias="detectErrorIncrease", gt=0, description=(
        "the relative error-rate increase the minimum-sample guard sizes a step for (default 1.0: 2x stable)"))
    detect_latency_increase: float | None = Field(None, alias="detectLatencyIncrease", gt=0, description=(
        "the relative p95 increase the guard sizes a step for (default 0.3: +30 %)"))
    power: float | None = Field(None, gt=0.5, lt=1, description=(
        "the chance a step's analysis catches those increases before it may pass (default 0.95)"))
    warmup: str | None = Field(None, description=(
        "after each canary weight increase, this long is not judged (new pods warm up; Argo Rollouts' "
        "initialDelay). Default from the model's probes: 3 readiness periods, or a tenth of its startup budget "
        "(serving.startup, else its pool kind's) if longer: 15s on CPU, 60s on GPU/Inferentia with the template"))
    quantiles: list[float] | None = Field(None, description=(
        "latency quantiles compared with stable, e.g. [0.95, 0.99] to judge the tail too (default [0.95])"))
    measurement_error_limit: int | None = Field(None, alias="measurementErrorLimit", ge=1, description=(
        "analyses in a row without metrics (Prometheus down) before onMeasurementError (default 3)"))
    on_measurement_error: Literal["pause", "rollback"] | None = Field(None, alias="onMeasurementError")
    ab_header: ABHeader | None = Field(None, alias="abHeader")
    mirror_percent: int | None = Field(None, alias="mirrorPercent", ge=1, le=100)
    confirm_webhook: str | None = Field(None, alias="confirmWebhook", pattern=r"^https?://")
    route_domain: str | None = Field(None, alias="routeDomain", pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
                                     description="HTTPRoute/VirtualService hostname <model>.<namespace>.<routeDomain> "
                                                 "(default: the in-cluster <model>.<namespace>.svc.cluster.local)")

    @field_validator("steps")
    @classmethod
    def _steps(cls, steps: list[int | PauseStep] | None) -> list[int | PauseStep] | None:
        if steps is None:
            return None
        weights = [s for s in steps if isinstance(s, int)]
        if not weights or any(not 0 < s <= 100 for s in weights) or weights != sorted(set(weights)):
            raise ValueError("steps must be increasing traffic percentages between 1 and 100, e.g. [10, 25, 50, 100] "
                             "(a {pause: {}} entry may sit between two of them)")
        if not isinstance(steps[0], int) or not isinstance(steps[-1], int):
            raise ValueError("a pause step goes between two weights, e.g. [10, {pause: {}}, 50, 100]")
        return steps

    @field_validator("latency_buckets")
    @classmethod
    def _buckets(cls, values: list[float] | None) -> list[float] | None:
        if values is not None and (not values or any(not 0 < v < float("inf") for v in values)
                                   or values != sorted(set(values))):
            raise ValueError("latencyBuckets are increasing bucket bounds in seconds, e.g. [0.05, 0.1, 0.2, 0.5, 1]")
        return values

    @field_validator("quantiles")
    @classmethod
    def _quantiles(cls, values: list[float] | None) -> list[float] | None:
        if values is not None and (not values or any(not 0.5 <= q < 1 for q in values)):
            raise ValueError("quantiles are shares between 0.5 and 1, e.g. [0.95, 0.99]")
        return values

    @field_validator("interval", "progress_deadline", "warmup")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None:
            duration_seconds(value)
        return value

    @field_validator("router")
    @classmethod
    def _router(cls, value: str | None) -> str | None:
        if value is not None and value not in ROUTERS:
            raise ValueError(f"unknown router {value!r}: use one of {', '.join(router_names())}")
        return value

    @model_validator(mode="after")
    def _router_options(self) -> "CanaryPolicy":
        if self.router_options is None:
            return self
        if self.router is None:
            raise ValueError("routerOptions needs router beside it (the options are that router's)")
        try:
            router_kind(self.router).parse_options(self.router_options)
        except ReconcilerError as exc:
            raise ValueError(f"{exc.message} ({exc.fix})") from None
        return self
