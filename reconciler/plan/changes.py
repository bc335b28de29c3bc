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
from reconciler.plan import cost
from reconciler.field_diff import FieldChange, field_changes
from reconciler.plan.review import ModelReview, metric_rows
from reconciler.render.content_hash import without_content_hash
from reconciler.render.server_rules import immutable_changes
from reconciler.results import Action, ObjectRef, ObjectResult, Summary

POOLS_FILE = "environments/pools.yaml"


@dataclass(frozen=True)
class Replacement:
    """An object pruned and another of the same kind created for the same model (a pool move renames
    the Deployment): shown as the fields that differ between the two, not as two whole objects."""

    old: ObjectRef
    new: ObjectRef
    changes: tuple[FieldChange, ...]

    def as_dict(self) -> dict[str, object]:
        return {"old": str(self.old), "new": str(self.new),
                "changes": [{"path": c.path, "before": c.live, "after": c.desired} for c in self.changes]}


@dataclass
class ModelPlan:
    model: str
    reasons: list[str] = field(default_factory=list)
    objects: list[ObjectResult] = field(default_factory=list)
    error: str | None = None
    review: ModelReview | None = None
    replacements: list[Replacement] = field(default_factory=list)

    @property
    def summary(self) -> Summary:
        return Summary.of(self.objects)

    @property
    def changed(self) -> bool:
        return self.summary.changed

    @property
    def noteworthy(self) -> bool:
        """A row of the plan: objects change, the model has errors, or its cost, policy, pools or metrics change."""
        return self.changed or self.error is not None or (self.review is not None and self.review.noteworthy)

    def as_dict(self) -> dict[str, object]:
        data: dict[str, object] = {"model": self.model, "reasons": self.reasons, "changed": self.changed,
                                   "summary": self.summary.as_dict(), "error": self.error,
                                   "objects": [o.as_dict() for o in self.objects],
                                   "replacements": [r.as_dict() for r in self.replacements]}
        if self.review is not None:
            r = self.review
            data["review"] = {"monthlyUSD": {"before": list(r.before.monthly), "after": list(r.after.monthly),
                                             "delta": list(r.cost_delta)},
                              "per1000USD": {"after": dict(r.after.per_1000), "basis": r.after.per_1000_basis},
                              "move": r.move, "policy": [list(row) for row in r.policy],
                              "metrics": [[m.name, m.before, m.after] for m in r.metrics]}
        return data


@dataclass
class EnvironmentPlan:
    environment: str
    models: dict[str, ModelPlan] = field(default_factory=dict)
    error: str | None = None
    changes: list[str] = field(default_factory=list)  # field-level changes of environment.yaml / pools.yaml
    budget_error: str | None = None  # the change exceeds the environment's budget or quotas
    total: tuple[cost.Footprint, cost.Footprint] | None = None  # every model of the environment, before and after

    @property
    def changed_models(self) -> list[str]:
        return sorted(name for name, m in self.models.items() if m.changed or m.error)

    @property
    def summary(self) -> Summary:
        return Summary.of(r for model in self.models.values() for r in model.objects)

    @property
    def cost_delta(self) -> tuple[float, float]:
        """Monthly cost change of the environment at min and max replicas."""
        if self.total is not None:
            return cost.delta(*self.total)
        deltas = [m.review.cost_delta for m in self.models.values() if m.review is not None]
        return (round(sum(d[0] for d in deltas), 2), round(sum(d[1] for d in deltas), 2))

    @property
    def model_summary(self) -> dict[str, int]:
        """Models added, changed and removed (by their objects), and with errors."""
        counts = {"added": 0, "changed": 0, "removed": 0, "errors": 0}
        for mp in self.models.values():
            actions = {r.action for r in mp.objects}
            if mp.error:
                counts["errors"] += 1
            elif actions and actions <= {Action.created}:
                counts["added"] += 1
            elif actions and actions <= {Action.pruned}:
                counts["removed"] += 1
            else:
                counts["changed"] += 1
        return counts

    @property
    def ok(self) -> bool:
        return self.error is None and self.budget_error is None and not any(m.error for m in self.models.values())

    def as_dict(self) -> dict[str, object]:
        return {"environment": self.environment, "error": self.error, "budgetError": self.budget_error,
                "changedModels": self.changed_models, "summary": self.summary.as_dict(),
                "models_summary": self.model_summary, "changes": self.changes,
                "monthlyUSDDelta": list(self.cost_delta),
                "models": {name: m.as_dict() for name, m in sorted(self.models.items())}}


@dataclass
class Plan:
    base: str
    head: str
    environments: dict[str, EnvironmentPlan] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)  # promotion order (dev -> staging -> prod)
    notes: list[str] = field(default_factory=list)  # what the plan could not check, said once
    warnings: list[str] = field(default_factory=list)  # what a changed model's spec allows but will not do well
    # how the plan was made (not what it found: left out of as_dict, so an incremental plan equals --full)
    hints: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(e.ok for e in self.environments.values())

    def ordered(self) -> list[EnvironmentPlan]:
        """Environments in promotion order; any not in `order` after them, by name."""
        names = [n for n in self.order if n in self.environments]
        names += sorted(set(self.environments) - set(names))
        return [self.environments[n] for n in names]

    def as_dict(self) -> dict[str, object]:
        return {"base": self.base, "head": self.head, "ok": self.ok, "order": [e.environment for e in self.ordered()],
                "notes": self.notes, "warnings": self.warnings,
                "environments": {n: e.as_dict() for n, e in sorted(self.environments.items())}}


def short_revision(rev: str) -> str:
    """A revision as people read it: 12 characters of a sha, or 'worktree' / 'empty'."""
    return rev if rev in ("worktree", "empty") else rev[:12]


def _text(obj: dict | None) -> list[str]:
    if obj is None:
        return []
    return yaml.safe_dump(without_content_hash(obj), sort_keys=True).splitlines(keepends=True)


def object_diff(live: dict | None, desired: dict | None, ref: ObjectRef,
                labels: tuple[str, str] = ("live", "desired")) -> str:
    """A unified diff of two versions of an object; `labels` name the two sides (revisions in a plan)."""
    return "".join(difflib.unified_diff(_text(live), _text(desired), fromfile=f"{labels[0]}/{ref}",
                                        tofile=f"{labels[1]}/{ref}"))


def _hash(obj: dict) -> str | None:
    return (obj.get("metadata", {}).get("annotations") or {}).get(L.CONTENT_HASH)


def plan_objects(desired: Iterable[dict], live: Iterable[dict], model: str | None = None,
                 labels: tuple[str, str] = ("live", "desired")) -> list[ObjectResult]:
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
        diff = "" if action is Action.unchanged else object_diff(old, new, ref, labels)
        results.append(ObjectResult(ref, action, model=model, diff=diff))
    return results


def immutable_error(model: str, desired: Iterable[dict], live: Iterable[dict]) -> str | None:
    """The model's error when its objects change fields the API server keeps immutable on objects that
    already exist (a Deployment's selector...): sync would get 422 for them. None otherwise. Pure."""
    live_by = {ObjectRef.of(o): o for o in live}
    found = [f"{ref.kind}/{ref.name} {problem}" for new in desired
             if (ref := ObjectRef.of(new)) in live_by for problem in immutable_changes(live_by[ref], new)]
    if not found:
        return None
    return (f"model {model!r}: rendered objects change immutable fields of objects that already exist "
            "(the API server would refuse them)" + "".join(f"\n  - {f}" for f in found) +
            "\n  fix: keep the field as it was, or give the object a new name (a new object; the old one is pruned)")


def _comparable(obj: dict) -> dict:
    out = without_content_hash(obj)
    meta = dict(out.get("metadata") or {})
    meta.pop("name", None)  # the names differ by construction: the pair says both
    return {**out, "metadata": meta}


def replacements(desired: Iterable[dict], live: Iterable[dict], results: Iterable[ObjectResult]) -> list[Replacement]:
    """Pairs of (pruned, created) objects of one kind in one model's plan, with the fields that differ.
    A kind pairs only one to one (one pruned, one created), or by position of the sorted names when
    a move renames as many objects as it creates. Pure."""
    desired_by = {ObjectRef.of(o): o for o in desired}
    live_by = {ObjectRef.of(o): o for o in live}
    results = list(results)
    out = []
    for kind in sorted({r.ref.kind for r in results}):
        gone = sorted((r.ref for r in results if r.ref.kind == kind and r.action is Action.pruned), key=str)
        new = sorted((r.ref for r in results if r.ref.kind == kind and r.action is Action.created), key=str)
        if not gone or len(gone) != len(new):
            continue
        for old_ref, new_ref in zip(gone, new):
            if old_ref in live_by and new_ref in desired_by:
                out.append(Replacement(old_ref, new_ref, tuple(
                    field_changes(_comparable(live_by[old_ref]), _comparable(desired_by[new_ref])))))
    return out


def triggers(paths: Iterable[str], environment: str, models: Iterable[str]) -> dict[str, list[str]]:
    """Why each model of an environment is affected by a set of changed paths (path-based)."""
    models = sorted(models)
    reasons: dict[str, list[str]] = {}
    for path in sorted(paths):
        parts = path.split("/")
        if parts[0] == "models" and len(parts) > 2 and parts[1] in models:
            reasons.setdefault(parts[1], []).append(f"{path} changed")
        elif parts[:3] == ["environments", environment, "secrets"]:  # one model's SOPS Secrets, not everyone's
            if len(parts) > 4 and parts[3] in models:
                reasons.setdefault(parts[3], []).append(f"{path} changed (its encrypted Secrets)")
        elif path == POOLS_FILE or path.startswith(("environments/base/", f"environments/{environment}/")):
            for model in models:
                reasons.setdefault(model, []).append(f"{path} changed (applies to every model in {environment})")
    return reasons


def metric_changes(old: Mapping[str, object] | None, new: Mapping[str, object] | None) -> list[str]:
    """Numeric evaluation metrics that differ, e.g. 'accuracy 0.9737 -> 0.9812 (+0.0075)'. Pure."""
    return [str(row) for row in metric_rows(old, new)]


def plan_environment(environment: str, desired: Mapping[str, list[dict]], live: Mapping[str, list[dict]],
                     reasons: Mapping[str, list[str]] | None = None,
                     errors: Mapping[str, str] | None = None, *,
                     reviews: Mapping[str, ModelReview] | None = None,
                     labels: tuple[str, str] = ("live", "desired")) -> EnvironmentPlan:
    """Compare desired with live, per model.

    A model in `errors` is skipped: its live objects are reported as skipped, never pruned, so a
    broken spec cannot delete what is serving. Only noteworthy models are kept (see
    `ModelPlan.noteworthy`): a model whose objects, cost, policy and metrics are all unchanged has
    no row, whatever paths changed.
    """
    reasons = reasons or {}
    errors = errors or {}
    reviews = reviews or {}
    result = EnvironmentPlan(environment)
    for model in sorted(set(desired) | set(live) | set(errors) | set(reasons) | set(reviews)):
        mp = ModelPlan(model, reasons=list(reasons.get(model, [])), review=reviews.get(model))
        immutable = None if model in errors else immutable_error(model, desired.get(model, []), live.get(model, []))
        if model in errors or immutable:
            mp.error = errors.get(model) or immutable
            mp.objects = [ObjectResult(ObjectRef.of(o), Action.skipped, model=model, message="model has errors")
                          for o in live.get(model, [])]
        else:
            mp.objects = plan_objects(desired.get(model, []), live.get(model, []), model, labels)
            mp.replacements = replacements(desired.get(model, []), live.get(model, []), mp.objects)
            if model not in desired and live.get(model):
                mp.reasons.append("model removed from git")
        if mp.noteworthy:
            result.models[model] = mp
    return result
