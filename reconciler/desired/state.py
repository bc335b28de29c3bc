"""The desired state of a revision: what git says each environment should run.

Reading top to bottom: source (the revision's tree) -> catalog (validated specs) -> model hashes -> images
(the commit's image lock) -> render. `desired_at` runs it for one revision; the plan compares two
(reconciler.plan.revisions), the reconcile pass applies one (reconciler.run.reconcile).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from reconciler.catalog.files import read_yaml
from reconciler.catalog.image_lock import ImageStore, images_file, model_versions, resolve_images
from reconciler.catalog.load import MODEL_FILE, MODELS_DIR, Catalog, load_catalog
from reconciler.desired.outcomes import record_outcomes
from reconciler.errors import ReconcilerError, SpecError
from reconciler.render.cache import RenderCache
from reconciler.render.environment import EnvironmentRender, ModelRender, render_environment
from reconciler.source import git as source
from reconciler.source import guard
from reconciler.source.hashing import ModelHash, model_hashes

METRICS_FILE = "metrics.json"


@dataclass
class DesiredState:
    revision: str  # a commit sha, or "worktree"
    catalog: Catalog
    hashes: dict[str, ModelHash]
    renders: dict[str, EnvironmentRender] = field(default_factory=dict)
    env_errors: dict[str, ReconcilerError] = field(default_factory=dict)
    metrics: dict[str, dict] = field(default_factory=dict)  # model -> its evaluation metrics.json
    # model -> its model.yaml as written: the plan's field-level reasons for a model that has errors
    # (it has no validated spec to compare)
    raw_specs: dict[str, dict] = field(default_factory=dict)

    def objects_by_model(self, env: str) -> dict[str, list[dict]]:
        render = self.renders.get(env)
        return {} if render is None else render.groups()

    def errors_by_model(self, env: str) -> dict[str, str]:
        render = self.renders.get(env)
        return {} if render is None else {name: str(err) for name, err in render.errors.items()}


def environments_of(catalog: Catalog, environments: Iterable[str] | None) -> list[str]:
    """The environments asked for, or (None) every environment of the catalog, those that failed to load included."""
    return sorted(environments if environments is not None else
                  set(catalog.environments) | {e for e in catalog.env_errors if e != "*"})


def render_state(state: DesiredState, environments: Iterable[str] | None = None, models: set[str] | None = None,
                 *, cache: RenderCache | None = None, only: dict[str, set[str] | None] | None = None,
                 sinks: Mapping[str, Callable[[ModelRender], None]] | None = None) -> DesiredState:
    """Render a loaded state for the given (default: all) environments; `only[env]` narrows the models there.
    `sinks[env]` takes that environment's model renders as they come, instead of the state keeping them
    (render_environment's `sink`)."""
    catalog = state.catalog
    for env in environments_of(catalog, environments):
        try:
            env_spec = catalog.environment(env)
            wanted = (only or {}).get(env, models)
            lock = ImageStore.read(images_file(catalog.root))  # the commit's image lock: digests and build commits
            state.renders[env] = render_environment(catalog, env, models=wanted, cache=cache,
                                                    images=resolve_images(catalog, env_spec, state.hashes, store=lock),
                                                    versions=model_versions(catalog, state.hashes, env_spec, store=lock),
                                                    sink=(sinks or {}).get(env))
        except ReconcilerError as exc:
            state.env_errors[env] = exc
    return state


def desired_state(catalog: Catalog, revision: str, hashes: dict[str, ModelHash],
                  environments: Iterable[str] | None = None, models: set[str] | None = None) -> DesiredState:
    """Render a loaded catalog for the given (default: all) environments."""
    return render_state(DesiredState(revision, catalog, hashes), environments, models)


def _tree_paths(root: Path, rev: str | None, models: set[str] | None) -> list[str] | None:
    """What of a revision must be written out to load the given models: everything but the other model folders."""
    if models is None or rev is None:
        return None
    top = source.top_names(root, rev)
    return [p for p in top if p != MODELS_DIR] + [f"{MODELS_DIR}/{m}" for m in sorted(models)]


def raw_specs(tree: Path, names: Iterable[str]) -> dict[str, dict]:
    """Each named model's model.yaml as written; an unreadable one is left out."""
    out = {}
    for name in sorted(names):
        try:
            data = read_yaml(tree / MODELS_DIR / name / MODEL_FILE, root=tree)
        except ReconcilerError:
            continue
        if isinstance(data, dict):
            out[name] = data
    return out


def open_state(root: Path, rev: str | None, models: set[str] | None, stack: contextlib.ExitStack, *,
               review: bool = True) -> DesiredState:
    """source -> catalog -> hashes, for one revision (None: the working tree), without rendering.

    Only the named models are read (None: all); the revision's tree is written from git's objects
    into a folder that lives as long as `stack`. `review=False` leaves out what only a plan's review
    reads (`metrics`, `raw_specs`: a file read of every model each, and neither can fail the state).
    """
    tree = stack.enter_context(source.checkout(root, rev, _tree_paths(root, rev, models)))
    revision = "worktree" if rev is None else source.resolve_sha(root, rev)
    catalog = load_catalog(tree, only=models)
    entries = [catalog.models[m] for m in sorted(catalog.models)]
    oversized: dict[str, SpecError] = {}
    hashes = model_hashes(root, rev, entries, errors=oversized)
    for name, exc in oversized.items():  # a model over a bound (or naming a path outside it) is that model's error
        catalog.models.pop(name, None)
        catalog.errors[name] = exc
    entries = [e for e in entries if e.name not in oversized]
    state = DesiredState(revision, catalog, hashes)
    if not review:
        return state
    state.metrics = {e.name: read_metrics(e.path / METRICS_FILE, root=tree) for e in entries
                     if (e.path / METRICS_FILE).is_file()}
    state.raw_specs = raw_specs(tree, set(catalog.models) | set(catalog.errors))
    return state


def desired_at(root: Path, rev: str | None, environments: Iterable[str] | None = None,
               models: set[str] | None = None, *, cache: RenderCache | None = None,
               review: bool = True, sinks: Mapping[str, Callable[[ModelRender], None]] | None = None) -> DesiredState:
    """source -> catalog -> hashes -> images -> render, for one revision (None: the working tree).
    `review=False`: without what only a plan's review reads (see open_state). With `sinks`, those
    environments' model renders go to them as they come (render_state)."""
    root = source.toplevel(root)
    with contextlib.ExitStack() as stack:
        state = render_state(open_state(root, rev, models, stack, review=review), environments, models, cache=cache,
                             sinks=sinks)
    if rev is not None and cache is not None and cache.folder is not None:
        record_outcomes(root, rev, state.catalog, state.renders, cache)
    if cache is not None and cache.writes:
        cache.prune_if_due()
    return state


def read_metrics(path: Path, *, root: Path | None = None) -> dict:
    """A model's evaluation metrics (written by the pipeline's evaluate step); unreadable or refused by
    the read guard -> empty (the model's spec and files are checked, and reported, elsewhere)."""
    try:
        data = json.loads(guard.read_text(root if root is not None else path.parent, path))
    except (OSError, ValueError, ReconcilerError):
        return {}
    return data if isinstance(data, dict) else {}
