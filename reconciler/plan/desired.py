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

from reconciler.source import git as source
from reconciler.catalog.load import Catalog, load_catalog
from reconciler.errors import ReconcilerError
from reconciler.source.hashing import ModelHash, changed_models, describe, model_hashes
from reconciler.build.builder import resolve_images
from reconciler.plan.changes import EnvironmentPlan, Plan, metric_changes, plan_environment, triggers
from reconciler.render.environment import EnvironmentRender, render_environment


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
        return {} if render is None else {name: m.objects for name, m in render.models.items()}

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
        state = desired_state(catalog, revision, model_hashes(root, rev, entries), environments, models)
        state.metrics = {e.name: read_metrics(e.path / METRICS_FILE) for e in entries
                         if (e.path / METRICS_FILE).is_file()}
        return state


def read_metrics(path: Path) -> dict:
    """A model's evaluation metrics (written by the pipeline's evaluate step); unreadable -> empty."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


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
        names = set(after.catalog.models) | set(after.catalog.errors)
        reasons = triggers(paths, env, names) if base != EMPTY else {n: ["first deployment"] for n in names}
        for name in sorted(after.metrics):
            delta = metric_changes(before.metrics.get(name), after.metrics[name])
            if delta and name in before.metrics:
                reasons.setdefault(name, []).append("evaluation: " + ", ".join(delta))
        for name, input_changes in changed_models(before.hashes, after.hashes).items():
            if name in before.hashes and name in after.hashes:  # new models are listed by their paths
                reasons.setdefault(name, []).append(f"model content hash changed: {describe(input_changes)}")
        plan.environments[env] = plan_environment(
            env, after.objects_by_model(env), before.objects_by_model(env), reasons, after.errors_by_model(env))
    return plan
