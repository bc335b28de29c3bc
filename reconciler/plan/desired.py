"""Desired state: what git says each environment should run, and how two revisions differ.

This is the top of the reconcile pipeline, reading top to bottom:
source (a revision's tree) -> catalog (validated specs) -> model hashes -> images -> render.
`plan_revisions` runs it for two revisions and hands both renders to the pure `plan`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from reconciler.source import guard
from reconciler.build.images import resolve_images
from reconciler.catalog.load import ENVIRONMENT_FILE, ENVIRONMENTS_DIR, Catalog, load_catalog, placements, promotion_order
from reconciler.errors import LimitError, ReconcilerError
from reconciler.plan import cost
from reconciler.plan.changes import EnvironmentPlan, Plan, plan_environment, short_revision, triggers
from reconciler.plan.review import ModelReview, ModelView, environment_changes, model_view, pool_changes, review
from reconciler.render.environment import EnvironmentRender, render_environment
from reconciler.source import git as source
from reconciler.source.hashing import ModelHash, changed_models, describe, model_hashes


METRICS_FILE = "metrics.json"
EMPTY = "empty"  # a base revision with nothing deployed


@dataclass
class DesiredState:
    revision: str  # a commit sha, or "worktree"
    catalog: Catalog
    hashes: dict[str, ModelHash]
    renders: dict[str, EnvironmentRender] = field(default_factory=dict)
    env_errors: dict[str, ReconcilerError] = field(default_factory=dict)
    metrics: dict[str, dict] = field(default_factory=dict)  # model -> its evaluation metrics.json

    def objects_by_model(self, env: str) -> dict[str, list[dict]]:
        render = self.renders.get(env)
        return {} if render is None else render.groups()

    def errors_by_model(self, env: str) -> dict[str, str]:
        render = self.renders.get(env)
        return {} if render is None else {name: str(err) for name, err in render.errors.items()}


def desired_state(catalog: Catalog, revision: str, hashes: dict[str, ModelHash],
                  environments: Iterable[str] | None = None, models: set[str] | None = None) -> DesiredState:
    """Render a loaded catalog for the given (default: all) environments."""
    state = DesiredState(revision, catalog, hashes)
    for env in sorted(environments if environments is not None else
                      set(catalog.environments) | {e for e in catalog.env_errors if e != "*"}):
        try:
            env_spec = catalog.environment(env)
            state.renders[env] = render_environment(catalog, env, models=models,
                                                    images=resolve_images(catalog, env_spec, hashes))
        except ReconcilerError as exc:
            state.env_errors[env] = exc
    return state


def desired_at(root: Path, rev: str | None, environments: Iterable[str] | None = None,
               models: set[str] | None = None) -> DesiredState:
    """source -> catalog -> hashes -> images -> render, for one revision (None: the working tree)."""
    root = Path(source.open_repo(root).working_dir)
    with source.checkout(root, rev) as tree:
        revision = "worktree" if rev is None else source.resolve(source.open_repo(root), rev)
        catalog = load_catalog(tree)
        entries = [catalog.models[m] for m in sorted(catalog.models) if models is None or m in models]
        oversized: dict[str, LimitError] = {}
        hashes = model_hashes(root, rev, entries, errors=oversized)
        for name, exc in oversized.items():  # a model over a bound is that model's error, not everyone's
            catalog.models.pop(name, None)
            catalog.errors[name] = exc
        entries = [e for e in entries if e.name not in oversized]
        state = desired_state(catalog, revision, hashes, environments, models)
        state.metrics = {e.name: read_metrics(e.path / METRICS_FILE, root=tree) for e in entries
                         if (e.path / METRICS_FILE).is_file()}
        return state


def read_metrics(path: Path, *, root: Path | None = None) -> dict:
    """A model's evaluation metrics (written by the pipeline's evaluate step); unreadable or refused by
    the read guard -> empty (the model's spec and files are checked, and reported, elsewhere)."""
    try:
        data = json.loads(guard.read_text(root if root is not None else path.parent, path))
    except (OSError, ValueError, ReconcilerError):
        return {}
    return data if isinstance(data, dict) else {}


def model_views(state: DesiredState, env: str) -> dict[str, ModelView]:
    """What the revision says about each valid model in an environment (no render)."""
    catalog = state.catalog
    spec = catalog.environments.get(env)
    if spec is None:
        return {}
    views = {}
    for name, entry in catalog.models.items():
        try:
            pools = placements(entry, spec, catalog.pools)
        except ReconcilerError:
            continue
        views[name] = model_view(entry.spec, spec, pools, state.metrics.get(name))
    return views


def _reasons(name: str, path_reasons: list[str], model_review: ModelReview | None, hash_changes: str | None,
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


def planned_objects(state: DesiredState, env: str) -> dict[str, list[dict]]:
    """The objects a plan compares: the rendered ones, and each SOPS Secret as a redacted stand-in
    (its keys and digests of their ciphertext: a plan shows which keys changed, never a value)."""
    from reconciler.render.secrets import redacted

    objects = state.objects_by_model(env)
    render = state.renders.get(env)
    if render is None:
        return objects
    for name, model in render.models.items():
        if model.secrets and name in objects:
            objects[name] = [*objects[name], *(redacted(s, render.environment) for s in model.secrets)]
    return objects


def secret_changes(before: DesiredState, after: DesiredState, env: str) -> dict[str, list[str]]:
    """Per model, which keys of its SOPS Secrets changed, compared decrypted when the environment's key is
    at hand (a re-encrypted file then changes nothing), else by ciphertext. Never a value."""
    from reconciler.errors import SecretError
    from reconciler.render.secrets import age_key, key_changes

    old, new = before.renders.get(env), after.renders.get(env)
    if new is None:
        return {}
    key: str | None = None
    try:
        if any(m.secrets for m in new.models.values()):
            key = age_key(new.environment)
    except SecretError:
        key = None
    out = {}
    for name, model in new.models.items():
        previous = old.models[name].secrets if old is not None and name in old.models else []
        lines = key_changes(previous, model.secrets, key)
        if lines:
            out[name] = lines
    return out


def plan_environment_between(env: str, before: DesiredState, after: DesiredState, paths: set[str],
                             first: bool) -> EnvironmentPlan:
    """One environment's plan from two desired states (rendered for at least the models that differ)."""
    names = set(after.catalog.models) | set(after.catalog.errors)
    path_reasons = triggers(paths, env, names) if not first else {n: ["first deployment"] for n in names}
    old_views, new_views = model_views(before, env), model_views(after, env)
    reviews = {n: review(old_views.get(n), new_views.get(n)) for n in set(old_views) | set(new_views)}
    env_changes = environment_changes(before.catalog.environments.get(env), after.catalog.environments.get(env))
    hash_changes = {n: describe(c) for n, c in changed_models(before.hashes, after.hashes).items()
                    if n in before.hashes and n in after.hashes}  # new models are listed by their paths
    reasons = {}
    for name in sorted(set(path_reasons) | set(reviews) | set(hash_changes)):
        used = {p for views in (old_views, new_views) if name in views for p, _ in views[name].pools}
        pools_changed = pool_changes(before.catalog.pools, after.catalog.pools, used) if not first else []
        reasons[name] = _reasons(name, path_reasons.get(name, []), reviews.get(name), hash_changes.get(name),
                                 env_changes if not first else [], pools_changed, env)
    for name, lines in secret_changes(before, after, env).items():
        reasons.setdefault(name, []).extend(lines)
    result = plan_environment(env, planned_objects(after, env), planned_objects(before, env), reasons,
                              after.errors_by_model(env), reviews=reviews,
                              labels=(short_revision(before.revision), short_revision(after.revision)))
    result.changes = [f"environment.yaml: {c}" for c in env_changes]
    spec = after.catalog.environments.get(env)
    if spec is not None:
        result.total = (cost.total(v.footprint for v in old_views.values()),
                        cost.total(v.footprint for v in new_views.values()))
        if spec.budget is not None:
            problems = cost.budget_problems(
                f"{ENVIRONMENTS_DIR}/{env}/{ENVIRONMENT_FILE}", spec.budget.monthly_usd, spec.budget.devices,
                *result.total, {n: (r.before, r.after) for n, r in reviews.items()})
            if problems:
                result.budget_error = (
                    f"{env}: the change exceeds the environment's budget:\n"
                    + "\n".join(f"  - {p}" for p in problems)
                    + f"\n  fix: lower the replicas, choose a cheaper pool, or raise the budget in "
                      f"{ENVIRONMENTS_DIR}/{env}/{ENVIRONMENT_FILE} (a change that itself goes through review)")
    return result


def plan_revisions(root: Path, base: str, head: str | None, environments: Iterable[str] | None = None,
                   models: set[str] | None = None, *, after: DesiredState | None = None) -> Plan:
    """What merging `head` onto `base` does to every environment (head None: the working tree).

    `base` may be EMPTY ("empty"): nothing deployed yet, so the plan is what a first sync creates.
    `after`: the head's desired state when the caller already rendered it (it is not rendered again).
    """
    after = after if after is not None else desired_at(root, head, environments, models)
    if base == EMPTY:
        before = DesiredState(EMPTY, Catalog(after.catalog.root), {})
        paths: set[str] = set()
    else:
        before = desired_at(root, base, environments, models)
        paths = source.changed_paths(root, base, head)
    plan = Plan(base=before.revision, head=after.revision)
    envs = environments if environments is not None else sorted(set(after.renders) | set(after.env_errors)
                                                                 | set(before.renders))
    for env in envs:
        if env in after.env_errors:
            plan.environments[env] = EnvironmentPlan(env, error=str(after.env_errors[env]))
            continue
        plan.environments[env] = plan_environment_between(env, before, after, paths, base == EMPTY)
    plan.order = promotion_order(set(plan.environments),
                                 {n: e.promotes_from for n, e in after.catalog.environments.items()})
    return plan
