"""Plan: what a change does to each environment, as data. Pure: no git, no kustomize, no cluster.

`plan_environment(desired, live, reasons, errors)` compares the objects rendered at the head
revision with those at the base revision (or, for sync, with what the cluster has) and says, per
model and per object, created / configured / unchanged / pruned / skipped, with a YAML diff a
reviewer can read. `triggers(paths, ...)` says why a model is in the plan at all: its folder
changed, its environment's overlay changed, or its content hash changed.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import yaml

from reconciler import labels as L
from reconciler.render.environment import without_content_hash
from reconciler.results import Action, ObjectRef, ObjectResult, Summary

POOLS_FILE = "environments/pools.yaml"


@dataclass
class ModelPlan:
    model: str
    reasons: list[str] = field(default_factory=list)
    objects: list[ObjectResult] = field(default_factory=list)
    error: str | None = None

    @property
    def summary(self) -> Summary:
        summary = Summary()
        for result in self.objects:
            summary.add(result.action)
        return summary

    @property
    def changed(self) -> bool:
        return self.summary.changed

    def as_dict(self) -> dict[str, object]:
        return {"model": self.model, "reasons": self.reasons, "changed": self.changed,
                "summary": self.summary.as_dict(), "error": self.error,
                "objects": [o.as_dict() for o in self.objects]}


@dataclass
class EnvironmentPlan:
    environment: str
    models: dict[str, ModelPlan] = field(default_factory=dict)
    error: str | None = None

    @property
    def changed_models(self) -> list[str]:
        return sorted(name for name, m in self.models.items() if m.changed or m.error)

    @property
    def summary(self) -> Summary:
        summary = Summary()
        for model in self.models.values():
            for result in model.objects:
                summary.add(result.action)
        return summary

    def as_dict(self) -> dict[str, object]:
        return {"environment": self.environment, "error": self.error, "changedModels": self.changed_models,
                "summary": self.summary.as_dict(),
                "models": {name: m.as_dict() for name, m in sorted(self.models.items())}}


@dataclass
class Plan:
    base: str
    head: str
    environments: dict[str, EnvironmentPlan] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(e.error is None and not any(m.error for m in e.models.values())
                   for e in self.environments.values())

    def as_dict(self) -> dict[str, object]:
        return {"base": self.base, "head": self.head, "ok": self.ok,
                "environments": {n: e.as_dict() for n, e in sorted(self.environments.items())}}


def _text(obj: dict | None) -> list[str]:
    if obj is None:
        return []
    return yaml.safe_dump(without_content_hash(obj), sort_keys=True).splitlines(keepends=True)


def object_diff(live: dict | None, desired: dict | None, ref: ObjectRef) -> str:
    return "".join(difflib.unified_diff(_text(live), _text(desired), fromfile=f"live/{ref}", tofile=f"desired/{ref}"))


def _hash(obj: dict) -> str | None:
    return (obj.get("metadata", {}).get("annotations") or {}).get(L.CONTENT_HASH)


def plan_objects(desired: Iterable[dict], live: Iterable[dict], model: str | None = None) -> list[ObjectResult]:
    """Per-object actions between two sets of rendered objects, matched by apiVersion/kind/namespace/name."""
    desired_by = {ObjectRef.of(o): o for o in desired}
    live_by = {ObjectRef.of(o): o for o in live}
    results = []
    for ref in sorted(desired_by.keys() | live_by.keys(), key=str):
        new, old = desired_by.get(ref), live_by.get(ref)
        if old is None:
            action = Action.created
        elif new is None:
            action = Action.pruned
        elif (_hash(new) is not None and _hash(new) == _hash(old)) or without_content_hash(new) == without_content_hash(old):
            action = Action.unchanged
        else:
            action = Action.configured
        diff = "" if action is Action.unchanged else object_diff(old, new, ref)
        results.append(ObjectResult(ref, action, model=model, diff=diff))
    return results


def triggers(paths: Iterable[str], environment: str, models: Iterable[str]) -> dict[str, list[str]]:
    """Why each model of an environment is affected by a set of changed paths (path-based)."""
    models = sorted(models)
    reasons: dict[str, list[str]] = {}
    for path in sorted(paths):
        parts = path.split("/")
        if parts[0] == "models" and len(parts) > 2 and parts[1] in models:
            reasons.setdefault(parts[1], []).append(f"{path} changed")
        elif path == POOLS_FILE or path.startswith(("environments/base/", f"environments/{environment}/")):
            for model in models:
                reasons.setdefault(model, []).append(f"{path} changed (applies to every model in {environment})")
    return reasons


def metric_changes(old: Mapping[str, object] | None, new: Mapping[str, object] | None) -> list[str]:
    """Numeric evaluation metrics that differ, e.g. 'accuracy 0.9737 -> 0.9812 (+0.0075)'. Pure."""
    old, new = old or {}, new or {}
    lines = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b) if v is not None)
        if a == b or not numeric or key == "seed":
            continue
        if a is None or b is None:
            lines.append(f"{key} {'new: ' + str(b) if a is None else 'removed'}")
        else:
            lines.append(f"{key} {a} -> {b} ({b - a:+.4g})")
    return lines


def plan_environment(environment: str, desired: Mapping[str, list[dict]], live: Mapping[str, list[dict]],
                     reasons: Mapping[str, list[str]] | None = None,
                     errors: Mapping[str, str] | None = None) -> EnvironmentPlan:
    """Compare desired with live, per model.

    A model in `errors` is skipped: its live objects are reported as skipped, never pruned, so a
    broken spec cannot delete what is serving.
    """
    reasons = reasons or {}
    errors = errors or {}
    result = EnvironmentPlan(environment)
    for model in sorted(set(desired) | set(live) | set(errors) | set(reasons)):
        mp = ModelPlan(model, reasons=list(reasons.get(model, [])))
        if model in errors:
            mp.error = errors[model]
            mp.objects = [ObjectResult(ObjectRef.of(o), Action.skipped, model=model, message="model has errors")
                          for o in live.get(model, [])]
        else:
            mp.objects = plan_objects(desired.get(model, []), live.get(model, []), model)
            if model not in desired and live.get(model):
                mp.reasons.append("model removed from git")
        if mp.reasons or mp.changed or mp.error:
            result.models[model] = mp
    return result
