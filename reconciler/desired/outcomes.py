"""What a desired state rendered from a commit records for later plans: per model, the environments it
failed in (`record_outcomes`), keyed by the model folder's git tree id and a digest of the rest of the
repository (render.cache's `outcome_key`). The incremental plan reads them for the models its change does
not touch (reconciler.plan.outcomes).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

from reconciler.catalog.load import MODELS_DIR, Catalog
from reconciler.render.cache import RenderCache, outcome_key
from reconciler.render.environment import EnvironmentRender
from reconciler.render.kustomize import KustomizeTimeout
from reconciler.source import git as source

INERT_PATHS = (".github/",)  # prefixes no render reads
INERT_SUFFIXES = (".md", ".rst")


def inert(path: str) -> bool:
    """A path no render reads (workflows, prose)."""
    return path.startswith(INERT_PATHS) or path.endswith(INERT_SUFFIXES)


def shared_digest(root: Path, rev: str) -> str:
    """Digest of what every model's render may read outside models/: the revision's files there, less
    the inert ones (plan.outcomes.touched_models' rule). Equal at two revisions whose change touches only models."""
    files = [f for f in source.files_outside(root, rev, MODELS_DIR) if not inert(f[0])]
    return hashlib.sha256(json.dumps(files, separators=(",", ":")).encode()).hexdigest()


def record_outcomes(root: Path, rev: str, catalog: Catalog, renders: Mapping[str, EnvironmentRender],
                    cache: RenderCache) -> None:
    """Record, per model of a catalog loaded and rendered from a commit (a desired state's catalog and renders), the environments it failed in
    (or that it rendered): what a later incremental plan reads for models its change does not touch.
    A model whose outcome is not known in every environment rendered (a timeout) is not recorded."""
    if not renders:
        return
    trees = source.folder_trees(root, rev, MODELS_DIR)
    shared = shared_digest(root, rev)
    for name in sorted(set(catalog.models) | set(catalog.errors)):
        if name not in trees:
            continue
        errors: dict[str, str | None] = {}
        for env, render in renders.items():
            exc = render.errors.get(name)
            if isinstance(exc, KustomizeTimeout):
                break
            errors[env] = None if exc is None else str(exc)
        else:
            cache.put_outcome(outcome_key(trees[name], shared), errors)
