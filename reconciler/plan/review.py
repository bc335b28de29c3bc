"""What a reviewer needs beyond manifest diffs, per model and environment, as data. Pure.

A `ModelView` is what one revision says about a model in one environment, read from the specs (no
render): its pools, replicas and cost, its effective canary policy and SLOs, its evaluation
metrics, and its spec as dotted fields. `review(before, after)` compares two views:

- field-level reasons: `serving.replicas 2 -> 3`, `accelerator.prod gpu -> inferentia`;
- the accelerator move, in words: `gpu-a10g (gpu) -> inf2 (inferentia), by a cross-pool canary`;
- canary policy and SLO rows (before, after), shown even when no manifest changes;
- metric rows with values;
- the monthly cost at both revisions (a range for autoscaled models).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from reconciler.plan import cost
from reconciler.catalog.effective import EffectiveCanary, effective_canary, effective_serving, effective_slo
from reconciler.catalog.load import ENVIRONMENT_FILE, ENVIRONMENTS_DIR
from reconciler.catalog.pools import Pool
from reconciler.catalog.specs import EnvironmentSpec, ModelSpec

Value = object


def flatten(data: object, prefix: str = "") -> dict[str, Value]:
    """{'serving': {'replicas': 2}} -> {'serving.replicas': 2}; lists stay values."""
    if isinstance(data, Mapping) and (data or not prefix):
        result: dict[str, Value] = {}
        for key, value in data.items():
            result.update(flatten(value, f"{prefix}{key}."))
        return result
    return {prefix.rstrip("."): data}


def _fmt(value: Value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_fmt(v)}" for k, v in sorted(value.items())) + "}"
    return str(value)


def field_changes(before: Mapping[str, Value], after: Mapping[str, Value]) -> list[str]:
    """'serving.replicas 2 -> 3' for every dotted field that differs (added: '- -> x')."""
    def show(value: Value) -> str:
        return "unset" if value is None else _fmt(value)

    return [f"{key} {show(before.get(key))} -> {show(after.get(key))}"
            for key in sorted(set(before) | set(after)) if before.get(key) != after.get(key)]


def _concerns(key: str, environment: str) -> bool:
    """Whether a dotted model.yaml field applies to the environment (`accelerator.prod` only to prod)."""
    parts = key.split(".")
    return not (parts[0] == "accelerator" and len(parts) > 1 and parts[1] not in (environment, "default"))


def policy_fields(canary: EffectiveCanary, slo_p95: float | None, slo_error_rate: float | None) -> dict[str, Value]:
    """The canary policy and SLOs as the rows of a before/after table."""
    rows: dict[str, Value] = {
        "canary.enabled": canary.enabled,
        "canary.steps": list(canary.steps),
        "canary.interval": f"{canary.interval_seconds}s",
        "canary.failureThreshold": canary.failure_threshold,
        "canary.progressDeadline": f"{canary.progress_deadline_seconds}s",
        "canary.maxErrorRate": canary.max_error_rate,
        "canary.maxP95LatencyMs": canary.max_p95_latency_ms,
        "canary.judge": canary.judge,
        "canary.router": canary.router,
        "slo.p95LatencyMs": slo_p95,
        "slo.errorRate": slo_error_rate,
    }
    rows.update({f"canary.queries.{k}": v for k, v in sorted(canary.queries.items())})
    return rows


@dataclass(frozen=True)
class ModelView:
    pools: tuple[tuple[str, str], ...]  # (pool, kind) in placement order
    footprint: cost.Footprint
    policy: dict[str, Value]
    spec: dict[str, Value]  # model.yaml as dotted fields, only those that apply to the environment
    metrics: dict[str, Value] = field(default_factory=dict)
    canary: bool = False  # a change of this model rolls out by canary in this environment


def model_view(spec: ModelSpec, env: EnvironmentSpec, pools: list[Pool],
               metrics: Mapping[str, Value] | None = None) -> ModelView:
    canary = effective_canary(spec, env)
    slo = effective_slo(spec, env)
    dumped = spec.model_dump(by_alias=True, exclude_none=True, mode="json")
    return ModelView(
        pools=tuple((p.name, p.kind.value) for p in pools),
        footprint=cost.footprint(pools, effective_serving(spec, env), slo.p95_latency_ms),
        policy=policy_fields(canary, slo.p95_latency_ms, slo.error_rate),
        spec={k: v for k, v in flatten(dumped).items() if v not in ({}, [], "") and _concerns(k, env.name)},
        metrics=dict(metrics or {}),
        canary=canary.enabled,
    )


@dataclass(frozen=True)
class MetricRow:
    name: str
    before: Value
    after: Value

    def __str__(self) -> str:
        if self.before is None:
            return f"{self.name} new: {self.after}"
        if self.after is None:
            return f"{self.name} removed"
        if isinstance(self.before, (int, float)) and isinstance(self.after, (int, float)):
            return f"{self.name} {self.before} -> {self.after} ({self.after - self.before:+.4g})"
        return f"{self.name} {_fmt(self.before)} -> {_fmt(self.after)}"


def metric_rows(old: Mapping[str, Value] | None, new: Mapping[str, Value] | None) -> list[MetricRow]:
    """Numeric evaluation metrics that differ (the seed and non-numeric fields are not metrics)."""
    old, new = old or {}, new or {}
    rows = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b) if v is not None)
        if a != b and numeric and key != "seed":
            rows.append(MetricRow(key, a, b))
    return rows


@dataclass(frozen=True)
class ModelReview:
    before: cost.Footprint
    after: cost.Footprint
    reasons: list[str] = field(default_factory=list)  # field-level spec changes
    move: str | None = None
    policy: list[tuple[str, Value, Value]] = field(default_factory=list)
    metrics: list[MetricRow] = field(default_factory=list)

    @property
    def cost_delta(self) -> tuple[float, float]:
        return cost.delta(self.before, self.after)

    @property
    def noteworthy(self) -> bool:
        """Something a reviewer must see even if no manifest changes."""
        return bool(self.policy or self.metrics or self.move or self.cost_delta != (0.0, 0.0))


def _pools_text(pools: tuple[tuple[str, str], ...]) -> str:
    return " + ".join(f"{name} ({kind})" for name, kind in pools) or "nothing"


def review(before: ModelView | None, after: ModelView | None) -> ModelReview:
    """Compare what two revisions say about one model in one environment."""
    old_fp = before.footprint if before else cost.NOTHING
    new_fp = after.footprint if after else cost.NOTHING
    if before is None or after is None:  # first deployment or removal: the objects tell the story
        return ModelReview(old_fp, new_fp)
    move = None
    if before.pools != after.pools:
        how = ("by a cross-pool canary" if after.canary else
               "by replacing its pods (no canary in this environment)")
        move = f"{_pools_text(before.pools)} -> {_pools_text(after.pools)}, {how}"
    policy = [(k, before.policy.get(k), after.policy.get(k))
              for k in sorted(set(before.policy) | set(after.policy)) if before.policy.get(k) != after.policy.get(k)]
    if not before.canary and not after.canary:  # no canary either way: its settings do nothing here
        policy = [row for row in policy if not row[0].startswith("canary.")]
    return ModelReview(old_fp, new_fp, reasons=field_changes(before.spec, after.spec), move=move, policy=policy,
                       metrics=metric_rows(before.metrics, after.metrics))


def environment_changes(before: EnvironmentSpec | None, after: EnvironmentSpec | None) -> list[str]:
    """Field-level changes of environment.yaml, e.g. 'scale.replicasFactor 2.0 -> 3.0'."""
    if before is None or after is None:
        return []
    return field_changes(flatten(before.model_dump(by_alias=True, exclude_none=True, mode="json")),
                         flatten(after.model_dump(by_alias=True, exclude_none=True, mode="json")))


def pool_changes(before: Mapping[str, Pool], after: Mapping[str, Pool], names: set[str]) -> list[str]:
    """Field-level changes of the named pools in pools.yaml, e.g. 'inf2.hourlyPrice 0.758 -> 0.8'."""
    def dump(pools: Mapping[str, Pool]) -> dict[str, Value]:
        return flatten({n: pools[n].model_dump(by_alias=True, exclude_none=True, mode="json")
                        for n in sorted(names) if n in pools})
    return field_changes(dump(before), dump(after))



def spec_reasons(name: str, path_reasons: list[str], model_review: ModelReview | None, hash_changes: str | None,
             env_changes: list[str], pools_changed: list[str], env: str) -> list[str]:
    """Why a model is in the plan, at field level where the change is in a spec."""
    spec_file = f"models/{name}/model.yaml"
    reasons = [r for r in path_reasons if not r.startswith((f"{spec_file} ", f"{ENVIRONMENTS_DIR}/{env}/{ENVIRONMENT_FILE} ",
                                                            f"{ENVIRONMENTS_DIR}/pools.yaml "))]
    if model_review is not None:
        reasons = [f"model.yaml: {c}" for c in model_review.reasons] + reasons
        if model_review.move:
            reasons.append(f"moves {model_review.move}")
        if model_review.metrics:
            reasons.append("evaluation: " + ", ".join(str(m) for m in model_review.metrics))
    elif any(r.startswith(f"{spec_file} ") for r in path_reasons):
        reasons.insert(0, f"{spec_file} changed")
    reasons += [f"environment.yaml: {c}" for c in env_changes]
    reasons += [f"pools.yaml: {c}" for c in pools_changed]
    if hash_changes:
        reasons.append(f"model content hash changed: {hash_changes}")
    return reasons


def reviews_keeping_errors(env: str, old_views: dict[str, ModelView], new_views: dict[str, ModelView],
                           errors: set[str], before_raw: Mapping[str, dict], after_raw: Mapping[str, dict]
                           ) -> dict[str, ModelReview]:
    """Per model, `review(before, after)`; a model with errors is not applied, so what runs stays and
    so does its cost (its after-view is its before-view), and its reasons are its model.yaml fields as
    written (it has no valid spec to compare). `new_views` is updated to match: the environment's
    totals count a kept model at its running cost."""
    for name in errors:
        if name in old_views:
            new_views[name] = old_views[name]
        else:
            new_views.pop(name, None)
    reviews = {n: review(old_views.get(n), new_views.get(n)) for n in set(old_views) | set(new_views)}
    for name in errors:
        if name in reviews and name in before_raw and name in after_raw:
            changed = [c for c in field_changes(flatten(before_raw[name]), flatten(after_raw[name]))
                       if _concerns(c.split(" ", 1)[0], env)]
            reviews[name] = replace(reviews[name], reasons=changed)
    return reviews


fmt = _fmt
