"""The writes of one sync pass, and their server-side dry runs (`Writer`).

Every object is applied as the reconciler's field manager with force, except the cluster-scoped objects
several environments may share (reconciler.sync.shared). Used by the executor (reconciler.sync.engine)
and by the drift comparison (reconciler.sync.server_diff), which dry-runs each object exactly as the
sync would apply it.
"""

from __future__ import annotations

from reconciler.cluster.protocol import Cluster
from reconciler.errors import Conflict, Invalid, KubeError
from reconciler.results import ObjectRef
from reconciler.sync.planner import PlannedAction
from reconciler.sync.shared import (declaring_environments, describe, environment_conflict, environment_manager,
                                    is_shared, release_body)


class Writer:
    """The writes of one pass: every object as the reconciler's field manager with force, except the
    cluster-scoped objects several environments may share (reconciler.sync.shared): those as this
    environment's own manager, without force unless its dry run met only non-environment managers."""

    def __init__(self, kube: Cluster, field_manager: str, environment: str, namespace: str) -> None:
        self.kube, self.field_manager = kube, field_manager
        self.environment, self.namespace = environment, namespace
        self.shared_manager = environment_manager(field_manager, environment, namespace)
        self.forced: set[ObjectRef] = set()  # shared objects whose fields a non-environment manager took

    def manager(self, ref: ObjectRef) -> str:
        return self.shared_manager if is_shared(ref) else self.field_manager

    def _conflict(self, exc: Conflict, ref: ObjectRef) -> KubeError | None:
        return environment_conflict(exc, ref, self.field_manager, self.environment, self.namespace)

    def validate(self, obj: dict, ref: ObjectRef) -> dict:
        """The server-side dry run of one write: the object the server would store."""
        if not is_shared(ref):
            return self.kube.apply(obj, field_manager=self.field_manager, dry_run=True)
        try:
            return self.kube.apply(obj, field_manager=self.shared_manager, force=False, dry_run=True)
        except Conflict as exc:
            clash = self._conflict(exc, ref)
            if clash is not None:
                raise clash from None
            self.forced.add(ref)
            return self.kube.apply(obj, field_manager=self.shared_manager, force=True, dry_run=True)

    def apply(self, a: PlannedAction) -> None:
        assert a.obj is not None, "a write always carries its desired object"
        manager = self.manager(a.ref)
        if a.prepare:
            self.kube.patch(a.ref, list(a.prepare), type="json", field_manager=manager)
        try:
            self.kube.apply(a.obj, field_manager=manager, force=not is_shared(a.ref) or a.ref in self.forced)
        except Conflict as exc:  # another environment applied it differently since the dry run
            clash = self._conflict(exc, a.ref)
            raise clash or exc from None

    def prune(self, a: PlannedAction, live: dict | None) -> str:
        """Delete an object that left git, or, for a shared one another environment still declares,
        end only this environment's ownership. Returns what was done."""
        me = f"{self.environment}@{self.namespace}"
        # release first when another environment declares it, or when the listing did not show it (its
        # labels were edited): the server's answer says who still declares it
        if is_shared(a.ref) and (live is None or declaring_environments(live, self.field_manager) - {me}):
            try:
                after = self.kube.apply(release_body(a.ref), field_manager=self.shared_manager, force=False)
            except Invalid:  # without this environment's fields it would be invalid: nobody else declares it
                after = None
            others = declaring_environments(after, self.field_manager) - {me}
            if others:
                return f"released, not deleted: still declared by {describe(others)} (a shared object)"
        self.kube.delete(a.ref)
        return a.reason
