"""How two revisions differ: the plan of merging one onto the other, from their desired states.

`plan_revisions` loads both revisions' desired states (reconciler.desired.state: source -> catalog -> model
hashes -> images -> render), renders only what can differ, and hands both renders to the pure
`plan_environment` (reconciler.plan.changes), with the reviewer's reasons (review), cost and budget.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterable
from pathlib import Path

from reconciler.catalog.image_inputs import changed as inputs_changed
from reconciler.catalog.image_lock import ImageStore, digests_of, images_file, model_versions, resolve_images
from reconciler.catalog.effective import batching_problem
from reconciler.catalog.load import (ENVIRONMENT_FILE, ENVIRONMENTS_DIR, MODEL_FILE, Catalog, placements,
                                     promotion_order, unscraped_metrics)
from reconciler.desired.outcomes import record_outcomes
from reconciler.desired.state import DesiredState, desired_at, environments_of, open_state, render_state
from reconciler.errors import ReconcilerError
from reconciler.plan import cost
from reconciler.plan.changes import EnvironmentPlan, Plan, plan_environment, short_revision, triggers
from reconciler.plan.outcomes import touched_models, untouched_with_errors
from reconciler.plan.review import (ModelView, environment_changes, model_view, pool_changes, review,
                                    reviews_keeping_errors, spec_reasons as _reasons)
from reconciler.plan.trace import untraced
from reconciler.plan.weights import artifact_errors
from reconciler.render.cache import NO_CACHE, RenderCache, default_folder
from reconciler.render.environment import render_keys
from reconciler.render.secrets import plan_secrets, redacted
from reconciler.source import git as source
from reconciler.source.hashing import changed_models, describe

EMPTY = "empty"  # a base revision with nothing deployed


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


def planned_objects(state: DesiredState, env: str) -> dict[str, list[dict]]:
    """The objects a plan compares: the rendered ones, and each SOPS Secret as a redacted stand-in
    (its keys and digests of their ciphertext: a plan shows which keys changed, never a value)."""

    objects = state.objects_by_model(env)
    render = state.renders.get(env)
    if render is None:
        return objects
    for name, model in render.models.items():
        if model.secrets and name in objects:
            objects[name] = [*objects[name], *(redacted(s, render.environment) for s in model.secrets)]
    return objects


def secret_changes(before: DesiredState, after: DesiredState, env: str) -> dict[str, list[str]]:
    """Per model, which keys of its SOPS Secrets changed (reconciler.render.secrets.plan_secrets)."""
    return secret_plan(before, after, env)[0]


def secret_plan(before: DesiredState, after: DesiredState, env: str) -> tuple[dict[str, list[str]], dict[str, str]]:
    """What sync will do with each model's SOPS Secrets: (key changes, errors) per model; see plan_secrets."""

    return plan_secrets(before.renders.get(env), after.renders.get(env))


def plan_environment_between(env: str, before: DesiredState, after: DesiredState, paths: set[str],
                             first: bool, complete: bool = True,
                             missing: dict[str, ReconcilerError] | None = None) -> EnvironmentPlan:
    """One environment's plan from two desired states (rendered for at least the models that differ).

    `complete`: both states hold every model, so the environment's totals (and budget) are known.
    `missing`: models whose DVC-tracked weights are not in the remote, or not the declared architecture
    (`weights.artifact_errors`): model errors.
    """
    names = set(after.catalog.models) | set(after.catalog.errors)
    path_reasons = triggers(paths, env, names) if not first else {n: ["first deployment"] for n in names}
    if not first:  # a new model's folder is not news file by file: the model is
        for name in names - set(before.catalog.models) - set(before.catalog.errors):
            path_reasons[name] = ["new model"]
    errors = after.errors_by_model(env)
    for name, exc in (missing or {}).items():
        if name in after.objects_by_model(env):
            errors.setdefault(name, str(exc))
    old_views, new_views = model_views(before, env), model_views(after, env)
    reviews = reviews_keeping_errors(env, old_views, new_views, set(errors) | set(after.catalog.errors),
                                     before.raw_specs, after.raw_specs)
    env_changes = environment_changes(before.catalog.environments.get(env), after.catalog.environments.get(env))
    hash_changes = {n: describe(c) for n, c in changed_models(before.hashes, after.hashes).items()
                    if n in before.hashes and n in after.hashes}  # new models are listed by their paths
    reasons = {}
    for name in sorted(set(path_reasons) | set(reviews) | set(hash_changes)):
        used = {p for views in (old_views, new_views) if name in views for p, _ in views[name].pools}
        pools_changed = pool_changes(before.catalog.pools, after.catalog.pools, used) if not first else []
        reasons[name] = _reasons(name, path_reasons.get(name, []), reviews.get(name), hash_changes.get(name),
                                 env_changes if not first else [], pools_changed, env)
    if not first:
        for name, lines in image_reasons(before, after, new_views).items():
            reasons.setdefault(name, []).extend(lines)
    secret_lines, secret_errors = secret_plan(before, after, env)
    for name, lines in secret_lines.items():
        reasons.setdefault(name, []).extend(lines)
    for name, message in secret_errors.items():  # sync would refuse this model's Secrets: so does the plan
        errors.setdefault(name, message)
    result = plan_environment(env, planned_objects(after, env), planned_objects(before, env), reasons,
                              errors, reviews=reviews,
                              labels=(short_revision(before.revision), short_revision(after.revision)))
    result.changes = [f"environment.yaml: {c}" for c in env_changes]
    spec = after.catalog.environments.get(env)
    if spec is not None and spec.budget is not None and complete:  # a budget: the plan reads every model
        result.total = (cost.total(v.footprint for v in old_views.values()),
                        cost.total(v.footprint for v in new_views.values()))
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

def image_reasons(before: DesiredState, after: DesiredState, views: dict[str, ModelView]) -> dict[str, list[str]]:
    """Per model, the kinds it serves from whose image gets a new tag though its sources are the same: what the
    kind's build adds changed (its overlay, its compile recipe's code: reconciler.catalog.image_inputs)."""
    old, new = digests_of(before.catalog), digests_of(after.catalog)
    found: dict[str, list[str]] = {}
    for name, view in sorted(views.items()):
        was, now = before.catalog.models.get(name), after.catalog.models.get(name)
        if was is None or now is None:
            continue
        for kind in sorted({k for _, k in view.pools}):
            diff = inputs_changed(old.inputs(was.spec, kind), new.inputs(now.spec, kind))
            if diff:
                found.setdefault(name, []).append(f"{kind} image rebuilt (new tag): {', '.join(diff)} changed")
    return found


def _keys(state: DesiredState, env: str) -> dict[str, str] | None:
    try:
        spec = state.catalog.environment(env)
        lock = ImageStore.read(images_file(state.catalog.root))
        return render_keys(state.catalog, env, resolve_images(state.catalog, spec, state.hashes, store=lock),
                           versions=model_versions(state.catalog, state.hashes, spec, store=lock))
    except ReconcilerError:
        return None


def models_to_render(before: DesiredState, after: DesiredState, env: str,
                     cache: RenderCache = NO_CACHE) -> set[str] | None:
    """The models of an environment to render for a plan: those whose render can differ between two
    loaded states (a different render key, a key on one side only, errors), those with a row for
    another reason (cost, policy or metrics), whose unchanged objects the row lists, and those with
    the same key at both revisions whose successful render is not cached (it may fail: the full plan
    reports the error; a failure recorded in the cache comes back without a render). With the same
    key at both revisions, the second render is a cache hit. None: render them all (the
    environment itself fails)."""
    old, new = _keys(before, env), _keys(after, env)
    if old is None or new is None:
        return None
    names = set(before.catalog.models) | set(after.catalog.models)
    differ = {n for n in names if old.get(n) is None or new.get(n) is None or old[n] != new[n]
              or not cache.has(new[n])}
    old_views, new_views = model_views(before, env), model_views(after, env)
    noteworthy = {n for n in set(old_views) | set(new_views)
                  if review(old_views.get(n), new_views.get(n)).noteworthy}
    return differ | noteworthy | set(before.catalog.errors) | set(after.catalog.errors)


def _assemble(before: DesiredState, after: DesiredState, paths: set[str], environments: Iterable[str] | None,
              first: bool, complete: bool, root: Path | None = None, trace: bool = True) -> Plan:
    """The plan of two desired states; with `root`, changed models' DVC weights are checked in the remote.
    `trace` False: no model code runs (plan/trace.py); a changed model a recipe would trace says "not traced"."""
    plan = Plan(base=before.revision, head=after.revision)
    missing: dict[str, ReconcilerError] = {}
    why = "--no-trace" if not trace else "--no-check-artifacts" if root is None else None
    if root is not None:

        if importlib.util.find_spec("dvc") is None:
            plan.notes.append("DVC-tracked weights were not checked against the DVC remote: dvc is not installed "
                              "(pip install dvc, or the [build] extra; --no-check-artifacts silences this)")
            why = why or "dvc is not installed"
        else:
            missing = artifact_errors(root, before.hashes, after.hashes, after.catalog.models, after.catalog,
                                      trace=trace)
    if why is not None:  # the trace runs with the weights' check: without it, a traced model says so
        plan.warnings.extend(untraced(after.catalog, changed_models(before.hashes, after.hashes), why))
    envs = environments if environments is not None else sorted(set(after.renders) | set(after.env_errors)
                                                                 | set(before.renders))
    for env in envs:
        if env in after.env_errors:
            plan.environments[env] = EnvironmentPlan(env, error=str(after.env_errors[env]))
            continue
        plan.environments[env] = plan_environment_between(env, before, after, paths, first, complete, missing)
    plan.order = promotion_order(set(plan.environments),
                                 {n: e.promotes_from for n, e in after.catalog.environments.items()})
    plan.warnings.extend(_warnings(after, plan))
    return plan


def _warnings(after: DesiredState, plan: Plan) -> list[str]:
    """What a changed model's spec allows but will not do as its author expects (catalog warnings), once each;
    and per environment with `monitoring: none`, the models in the plan (every loaded one when environment.yaml
    changed) that read scraped request metrics nothing scrapes (catalog.effective.monitoring_problem)."""
    found: list[str] = []
    for name, env in sorted(plan.environments.items()):
        spec = after.catalog.environments.get(name)
        env_file = f"{ENVIRONMENTS_DIR}/{name}/{ENVIRONMENT_FILE}"
        for model in sorted(env.models):
            entry = after.catalog.models.get(model)
            if spec is None or entry is None or env.models[model].error:
                continue
            problem = batching_problem(entry.spec, spec, f"{entry.rel}/{MODEL_FILE}", env_file)
            if problem is not None and str(problem) not in found:
                found.append(str(problem))
        if spec is not None:  # every loaded model when environment.yaml changed, else the models of the plan
            rows = None if env.changes else {m for m, p in env.models.items() if not p.error}
            problem = unscraped_metrics(after.catalog, spec, rows)
            if problem is not None:
                found.append(str(problem))
    return found


def plan_revisions(root: Path, base: str, head: str | None, environments: Iterable[str] | None = None,
                   models: set[str] | None = None, *, after: DesiredState | None = None, full: bool = False,
                   cache: RenderCache | None = None, check_artifacts: bool = True, trace: bool = True) -> Plan:
    """What merging `head` onto `base` does to every environment (head None: the working tree).

    `base` may be EMPTY ("empty"): nothing deployed yet, so the plan is what a first sync creates.
    `after`: the head's desired state when the caller already rendered it (it is not rendered again).
    `check_artifacts`: changed models whose DVC-tracked weights are not in the DVC remote are model errors.
    `trace` False: the plan runs no model code; a changed model its recipe would trace is "not traced" (a warning).

    Incremental by default: only models under the changed paths are read (all of them when a
    change may touch every model), and of those only the ones whose render key differs between
    the revisions are rendered, through the render cache (`cache`, default: the on-disk one). A
    model with the same key renders the same at both revisions, so it is unchanged without a
    render. `full=True` renders everything at both revisions with no cache: the reference the
    incremental plan is tested against (identical results, errors included). A model the change
    does not touch is read only if it failed at the base or its outcome there was never recorded
    (`record_outcomes`; `untouched_with_errors`) and the base's `rendered/<env>` branch does not show it
    clean (`clean_environments`): with neither, the plan renders the whole head once, and records it.
    """
    root = source.toplevel(root)
    # each revision resolved once, here: every stage below reads the same commits (were a branch to move during
    # the plan), and git is asked once per name rather than by each stage
    base = base if base == EMPTY else source.resolve_sha(root, base)
    head = head if head is None else source.resolve_sha(root, head)
    dvc_root = root if check_artifacts else None
    if cache is None:
        cache = NO_CACHE if full else RenderCache(default_folder())
    if base == EMPTY or after is not None or full:
        after = after if after is not None else desired_at(root, head, environments, models, cache=cache)
        if base == EMPTY:
            return _assemble(DesiredState(EMPTY, Catalog(after.catalog.root), {}), after, set(), environments,
                             True, True, dvc_root, trace)
        before = desired_at(root, base, environments, models, cache=cache)
        return _assemble(before, after, source.changed_paths(root, base, head), environments, False, models is None,
                         dvc_root, trace)
    paths = source.changed_paths(root, base, head)
    touched = touched_models(paths)
    notes: list[str] = []
    scope = models if touched is None else (touched if models is None else touched & models)
    with contextlib.ExitStack() as stack:
        new = open_state(root, head, scope, stack)
        if scope != models and any(e.budget for e in new.catalog.environments.values()):
            scope = models  # a budget is checked on the environment's total: read every model
            new = open_state(root, head, scope, stack)
        envs = environments_of(new.catalog, environments)
        if scope is not None and scope != models:  # untouched models that failed, or were never seen
            extra = untouched_with_errors(root, base, scope, envs, cache, notes)
            if models is not None:
                extra &= models
            if extra:
                scope = scope | extra
                new = open_state(root, head, scope, stack)
        old = open_state(root, base, scope, stack)
        only = {env: models_to_render(old, new, env, cache) for env in envs}
        render_state(new, environments, scope, cache=cache, only=only)
        render_state(old, environments, scope, cache=cache, only=only)
        plan = _assemble(old, new, paths, environments, False, scope is None, dvc_root, trace)
        plan.hints.extend(notes)
    if cache.folder is not None:
        record_outcomes(root, base, old.catalog, old.renders, cache)
        if head is not None:
            record_outcomes(root, head, new.catalog, new.renders, cache)
    if cache.writes:
        cache.prune_if_due()  # bounded by age and size (guard.Limits): least recently used first
    return plan
