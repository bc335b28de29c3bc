"""Hydrate `rendered/<env>` branches at the cost of what changed since each branch's source commit.

A branch this renderer wrote names its source commit (`drySha` in `<env>/hydrator.metadata`) and was
written only when every model of the environment validated there. Between that commit and the new
one, git says which paths changed; when they are model folders only (and the image lock's entries of
some models), every other model renders exactly as the branch already holds it: its files keep their
blob ids and are never read, rendered or written again (render.hydrate.hydrate_branch, through git
fast-import). A whole environment streams: each model's files are sent to git as it renders and only
their blob ids are kept (render.hydrate.EnvironmentBranch), so memory does not grow with its documents. Anything else (an environment overlay, the pools file, shared code, another renderer, a
first hydrate) renders the environment whole, as before. Either way the branch's tree equals what a
full hydrate writes: tests/test_hydrate_incremental.py checks it on random changes.

Limit (as the incremental plan's, plan.outcomes.touched_models): a model whose code imports another
model's folder is not re-rendered when only that other folder changes.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from reconciler.catalog.image_lock import IMAGES_LOCK
from reconciler.catalog.load import MODELS_DIR
from reconciler.errors import ReconcilerError
from reconciler.desired.state import desired_at
from reconciler.plan.outcomes import touched_models
from reconciler.render import hydrate as hydration
from reconciler.render.cache import RenderCache
from reconciler.source import branches
from reconciler.source import git as source


@dataclass
class BranchHydrate:
    revision: str
    results: list[hydration.HydrateResult] = field(default_factory=list)
    model_errors: dict[str, dict[str, ReconcilerError]] = field(default_factory=dict)  # env -> model -> error
    env_errors: dict[str, ReconcilerError] = field(default_factory=dict)
    scope: dict[str, str] = field(default_factory=dict)  # env -> what was rendered, in words


def _lock_models(root: Path, rev: str) -> dict[str, tuple[str, str | None]]:
    text = source.show_file(root, rev, IMAGES_LOCK)
    try:
        data = json.loads(text) if text else {}
    except ValueError:
        return {"\0unreadable": ("", None)}
    images = data.get("images", {}) if isinstance(data, dict) else {}
    commits = data.get("commits", {}) if isinstance(data, dict) else {}
    if not isinstance(images, dict) or not isinstance(commits, dict):
        return {"\0unreadable": ("", None)}
    return {str(k): (str(v), commits.get(k)) for k, v in images.items()}


def changed_models_since(root: Path, base: str, head: str) -> set[str] | None:
    """The models whose render can differ between two commits; None when any model's can (see the module doc).

    The image lock is read as what it is: an entry `<registry>/<model>:<tag>` that was added, removed or
    changed (digest or build commit) concerns that model alone."""
    paths = source.changed_paths(root, base, head)
    found: set[str] = set()
    if IMAGES_LOCK in paths:
        paths = paths - {IMAGES_LOCK}
        before, after = _lock_models(root, base), _lock_models(root, head)
        for tagged in set(before) | set(after):
            if before.get(tagged) == after.get(tagged):
                continue
            repository = tagged.rsplit(":", 1)[0]
            if "\0" in tagged or "/" not in repository:
                return None
            found.add(repository.rsplit("/", 1)[1])
    touched = touched_models(paths)
    return None if touched is None else found | touched


def _branch_models(root: Path, tip: str, env: str) -> set[str]:
    start = len(env) + 1
    return {m for m in (hydration.model_of(p[start:]) for p in branches.entries_under(root, tip, f"{env}/")) if m}


def hydrate_branches(root: Path, rev: str, environments: Iterable[str] | None, *, prefix: str = hydration.BRANCH_PREFIX,
                     layout: str = "plain", cache: RenderCache | None = None, full: bool = False) -> BranchHydrate:
    """Render and commit each environment's branch, only the changed models where the branch allows it.

    An environment with a failing model is not written (its errors are in the result), as with a full hydrate."""
    root = source.toplevel(root)
    sha = source.resolve_sha(root, rev)
    if environments is None:
        envs = sorted(source.folder_trees(root, sha, "environments"))
        envs = [e for e in envs if source.show_file(root, sha, f"environments/{e}/environment.yaml") is not None]
    else:
        envs = sorted(environments)
    present = set(source.folder_trees(root, sha, MODELS_DIR))
    whole: list[str] = []
    partial: dict[str, tuple[str, set[str], set[str]]] = {}  # env -> (since, render, removed)
    for env in envs:
        previous = None if full else hydration.previous_hydrate(root, env, prefix)
        if previous is None or previous[1].get("layout") != layout:
            whole.append(env)
            continue
        tip, meta = previous
        try:
            changed = changed_models_since(root, meta["drySha"], sha)
        except ReconcilerError:  # the source commit is not in this clone: render all
            changed = None
        if changed is None:
            whole.append(env)
            continue
        held = _branch_models(root, tip, env)
        partial[env] = (meta["drySha"], (changed & present) | (present - held), held - present)
    out = BranchHydrate(sha)
    if whole:  # each model's files go to git as it renders: memory holds blob ids, not documents
        with contextlib.ExitStack() as stack:
            streams = {env: stack.enter_context(hydration.EnvironmentBranch(root, env, prefix=prefix)) for env in whole}
            state = desired_at(root, sha, whole, cache=cache, review=False, sinks=streams)
            out.env_errors.update(state.env_errors)
            for env, render in sorted(state.renders.items()):
                out.scope[env] = f"all {len(render.streamed) + len(render.errors)} models"
                if render.errors:
                    out.model_errors[env] = dict(render.errors)
                    continue
                out.results.append(streams[env].commit(render, sha, layout=layout))
    if partial:
        wanted = set().union(*(models for _, models, _ in partial.values()))
        state = desired_at(root, sha, sorted(partial), models=wanted, cache=cache,  # none wanted: the shared objects
                           review=False)
        for env, (since, models, removed) in sorted(partial.items()):
            out.scope[env] = f"{len(models)} changed, {len(removed)} removed since {since[:12]}"
            if env in state.env_errors:
                out.env_errors[env] = state.env_errors[env]
                continue
            render = state.renders[env]
            errors = {m: e for m, e in render.errors.items() if m in models}
            if errors:
                out.model_errors[env] = errors
                continue
            render.models = {m: r for m, r in render.models.items() if m in models}
            out.results.append(hydration.hydrate_branch(root, render, sha, prefix=prefix, layout=layout,
                                                        partial=True, removed=removed))
    return out
