"""Which models a change touches, and what a plan knows about the others without reading them.

A model whose folder is the same at two revisions, in a change that leaves everything outside
models/ alone (but inert files), renders the same at both: the same objects, or the same error.
The full plan reports its error; so must the incremental plan, which does not read it. So every
state rendered from a commit records, per model, the environments it failed in
(reconciler.desired.outcomes.record_outcomes, keyed by the folder's git tree id and a digest of the rest of the repository: render.cache's
`outcome_key`), and a plan reads again only the untouched models that failed at its base or were
never recorded (`untouched_with_errors`). Cost: one `ls-tree` of models/, one of the rest, and a
small file per untouched model; with nothing recorded, every model is read and rendered once.

The base's hydrated output answers too, with no cache at all: `hydrate` writes an environment's
`rendered/<env>` branch only when every model of it validated, and its hydrator.metadata names the
source commit and the renderer. An environment whose branch (local, or fetched from origin) was
rendered from the base by this renderer had no failing model there (`clean_environments`), so a
fresh runner with no cache plans as fast as a warm one when the base was hydrated.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from reconciler.catalog.load import MODELS_DIR
from reconciler.desired.outcomes import inert, shared_digest
from reconciler.render.cache import RenderCache, outcome_key, outcome_set_key, renderer_id
from reconciler.render.hydrate import BRANCH_PREFIX, METADATA
from reconciler.source import branches
from reconciler.source import git as source


def touched_models(paths: Iterable[str]) -> set[str] | None:
    """The models a change can affect through their own folder; None when it may affect every model
    (environments/, the pools file, images.lock.json, shared code, anything not known to be inert).

    Limit: a model whose code imports another model's folder is not found from that folder's change.
    """
    found: set[str] = set()
    for path in paths:
        parts = path.split("/")
        if parts[0] == MODELS_DIR:
            if len(parts) > 2:
                found.add(parts[1])
            continue  # a file directly under models/ belongs to no model
        if inert(path):
            continue
        return None
    return found


def clean_environments(root: Path, base: str, envs: Iterable[str], prefix: str = BRANCH_PREFIX,
                       fetch: bool = False) -> set[str]:
    """The environments whose hydrated branch (`<prefix><env>`, local or origin's) was rendered from
    `base` by this renderer: none of their models failed at `base` (hydrate writes nothing of an
    environment with an error). A branch of another commit or renderer, or none, proves nothing.

    fetch=True: for an environment neither ref shows clean, fetch origin's branch first (a fresh CI runner
    checks out one commit, without `rendered/*`), once, best-effort (branches.fetch_remote_branches)."""
    envs = list(envs)
    clean = _clean(root, base, envs, prefix)
    if fetch and set(envs) - clean and branches.fetch_remote_branches(root, [f"{prefix}{e}" for e in set(envs) - clean]):
        clean = _clean(root, base, envs, prefix)
    return clean


def _clean(root: Path, base: str, envs: list[str], prefix: str) -> set[str]:
    sha = source.resolve_sha(root, base)
    clean = set()
    for env in envs:
        for ref in (f"refs/heads/{prefix}{env}", f"refs/remotes/origin/{prefix}{env}"):
            text = source.show_file(root, ref, f"{env}/{METADATA}")
            try:
                data = json.loads(text) if text else {}
            except ValueError:
                continue
            if isinstance(data, dict) and data.get("drySha") == sha and data.get("environment") == env \
                    and data.get("renderer") == renderer_id():
                clean.add(env)
                break
    return clean


def untouched_with_errors(root: Path, base: str, scope: set[str], envs: list[str], cache: RenderCache,
                          notes: list[str] | None = None) -> set[str]:
    """Of the models a change does not touch (same folder at both revisions, same everything else), those
    that failed at `base` in one of `envs`, or whose outcome there was never recorded: an incremental
    plan reads them too, so that it reports their errors as a full plan does. Pure reads: one
    `ls-tree` of models/ and of the rest, one small file per model; none for an environment the base's
    hydrated branch shows clean (`clean_environments`)."""
    trees = source.folder_trees(root, base, MODELS_DIR)
    untouched = set(trees) - scope
    if not untouched:
        return set()
    clean = clean_environments(root, base, envs, fetch=True)
    envs = [env for env in envs if env not in clean]
    if not envs:
        return set()
    shared = shared_digest(root, base)
    found, unknown = set(), 0
    set_key = outcome_set_key(trees, shared)
    every = cache.outcome_set(set_key)  # one file, once a plan has read every model's outcome at this base
    read: dict[str, dict[str, str | None]] = {}
    for name in sorted(untouched):
        recorded = every[name] if every is not None and name in every else cache.outcome(outcome_key(trees[name], shared))
        read[name] = recorded
        unknown += not recorded
        if any(env not in recorded or recorded[env] is not None for env in envs):
            found.add(name)
    if every is None and not unknown:  # all recorded: keep them as one set, with the changed models' own
        read.update({name: cache.outcome(outcome_key(trees[name], shared)) for name in sorted(set(trees) & scope)})
        if all(read.values()):
            cache.put_outcome_set(set_key, read)
    if notes is not None and unknown:
        notes.append(f"no hydrated base for {', '.join(envs)} at {source.resolve_sha(root, base)[:12]} (no `{BRANCH_PREFIX}<env>` branch of that "
                     f"commit here or on origin, and no render cache): this plan read {unknown} untouched model(s) "
                     f"to check them. Fix: hydrate main on every merge (`reconciler hydrate --branch-prefix "
                     f"{BRANCH_PREFIX}` and push the branches, as .github/workflows/main.yaml does), or keep "
                     f"RECONCILER_CACHE between runs")
    return found
