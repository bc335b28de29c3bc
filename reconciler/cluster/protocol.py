"""The seam to the cluster: what sync, rollout, inventory, health and the loop may call.

`KubeClient` (the real client) and `reconciler.run.lease.LeaderGuard` satisfy it; so must any
stand-in a test passes instead. mypy checks the real ones (tests/test_static.py) through the
`_satisfies_cluster` functions beside them.
"""

from __future__ import annotations

import builtins
from typing import Literal, Protocol

from reconciler import labels
from reconciler.results import ObjectRef

PatchType = Literal["merge", "json", "strategic"]


class Cluster(Protocol):
    """Reads and writes of Kubernetes objects, errors raised as reconciler.errors.KubeError subclasses."""

    def get(self, ref: ObjectRef) -> dict | None:
        """The live object, or None when it does not exist."""
        ...

    def list(self, api_version: str, kind: str, namespace: str | None = None,
             label_selector: str | None = None) -> builtins.list[dict]: ...

    def apply(self, obj: dict, field_manager: str = labels.MANAGER, force: bool = True,
              dry_run: bool = False) -> dict:
        """Server-side apply; returns the object the server holds (or would hold, on a dry run)."""
        ...

    def patch(self, ref: ObjectRef, patch: dict | builtins.list, type: PatchType = "merge",
              field_manager: str | None = labels.MANAGER, dry_run: bool = False) -> dict: ...

    def create(self, obj: dict, field_manager: str = labels.MANAGER) -> dict: ...

    def replace(self, obj: dict, field_manager: str = labels.MANAGER) -> dict:
        """Update with optimistic concurrency (metadata.resourceVersion): a Conflict when it moved."""
        ...

    def delete(self, ref: ObjectRef, propagation_policy: str = "Background", dry_run: bool = False) -> bool:
        """True when something was deleted, False when it was already gone."""
        ...

    def wait_for_kind(self, api_version: str, kind: str, timeout: float) -> bool:
        """Whether the server serves `kind` in `api_version`, waiting up to `timeout` seconds for it (a CRD
        just applied is Established before discovery lists it)."""
        ...

