"""The status of an environment in its cluster: the ConfigMap ``reconciler-state-<env>`` that `reconciler run`
and `reconciler sync` write after each pass, and `status`, `history`, `rollback` and `/metrics` read.

As kustomize-controller's status: the last applied revision (what runs) and the last failure after it, which
never replaces the applied revision; a pass that completes clears it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from reconciler import labels
from reconciler.cluster.protocol import Cluster
from reconciler.errors import KubeError, ReconcilerError
from reconciler.results import ObjectRef
from reconciler.run import history

log = logging.getLogger("reconciler.run.record")

STATE_PREFIX = "reconciler-state-"

# `reconciler reconcile ENV` sets this annotation on the state ConfigMap (as `flux reconcile` sets
# reconcile.fluxcd.io/requestedAt); the loop reconciles at once and records the value it handled.
REQUEST_ANNOTATION = f"{labels.DOMAIN}/reconcile-requested-at"
REQUEST_MANAGER = "reconciler-cli"  # its own field manager: the loop's apply of the state data never drops it
# `reconciler suspend ENV` (as `flux suspend`): `run` and `sync` leave a suspended environment alone until
# `reconciler resume ENV`. The annotation's value says when, by whom and why; it is written by its own field
# manager, so the loop's apply of the state data never drops it.
SUSPEND_ANNOTATION = f"{labels.DOMAIN}/suspended"
SUSPEND_MANAGER = "reconciler-suspend"


@dataclass(frozen=True)
class Failure:
    """A pass that failed for the whole environment (unrenderable, refused, API down): nothing was applied."""

    commit: str
    error: str
    time: str
    stage: str = ""  # the stage of the pass that failed (reconciler.run.reconcile.Stage); "" in records before it

    def describe(self) -> str:
        """The failure as people read it: "render: <error>"."""
        return f"{self.stage}: {self.error}" if self.stage else self.error


@dataclass(frozen=True)
class Record:
    """The environment's status in the cluster: the last applied commit and the last failure after it.

    As kustomize-controller's lastAppliedRevision + Ready=False condition: a failure never replaces the
    applied commit (what runs), and a pass that completes clears it.
    """

    commit: str  # the last applied commit ("" when none was ever applied)
    ok: bool
    time: str = ""
    summary: str = ""
    failure: Failure | None = None
    pinned_head: str = ""  # set by `reconciler rollback`: `run` stays at `commit` until a commit newer than this
    requested: str = ""  # the on-demand request annotation's value (`reconciler reconcile ENV`)
    handled: str = ""  # the last request value a pass handled
    policy: str = ""  # how `run` syncs it (sync_policy of its options), as its last pass recorded; "" never by `run`

    @property
    def on_demand(self) -> bool:
        return bool(self.requested) and self.requested != self.handled

    @classmethod
    def of(cls, cm: dict | None) -> "Record | None":
        data = (cm or {}).get("data") or {}
        failure = (Failure(data["lastFailedCommit"], data.get("lastError", ""), data.get("lastErrorTime", ""),
                           data.get("lastFailedStage", ""))
                   if data.get("lastFailedCommit") else None)
        if not data.get("commit") and failure is None:
            return None
        annotations = ((cm or {}).get("metadata") or {}).get("annotations") or {}
        return cls(data.get("commit", ""), data.get("ok") == "true", data.get("time", ""), data.get("summary", ""),
                   failure, data.get("pinnedHead", ""), annotations.get(REQUEST_ANNOTATION, ""),
                   data.get("handledRequest", ""), data.get("syncPolicy", ""))


def state_ref(environment: str, namespace: str) -> ObjectRef:

    return ObjectRef("v1", "ConfigMap", namespace, f"{STATE_PREFIX}{environment}")


def load_record(kube: Cluster, environment: str, namespace: str) -> Record | None:
    return Record.of(kube.get(state_ref(environment, namespace)))


def save_record(kube: Cluster, environment: str, namespace: str, record: Record) -> None:
    ref = state_ref(environment, namespace)
    failure = record.failure
    kube.apply({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": ref.name, "namespace": namespace,
                             "labels": {labels.MANAGED_BY: labels.MANAGER, labels.ENVIRONMENT: environment,
                                        f"{labels.DOMAIN}/role": "state"}},
                "data": {"commit": record.commit, "ok": "true" if record.ok else "false",
                         "time": record.time, "summary": record.summary,
                         "lastFailedCommit": failure.commit if failure else "",
                         "lastError": failure.error[:4000] if failure else "",
                         "lastErrorTime": failure.time if failure else "",
                         "lastFailedStage": failure.stage if failure else "",
                         "pinnedHead": record.pinned_head, "handledRequest": record.handled,
                         "syncPolicy": record.policy}})


def sync_policy(options: Any) -> str:
    """How `reconciler run` syncs with these SyncOptions, as `argocd app get` shows a sync policy. Pure."""
    return (f"automated (prune: {'on' if options.prune else 'off'}, "
            f"self-heal: {'on' if options.self_heal else 'off'})")


def suspended(cm: dict | None) -> str | None:
    """When, by whom and why the environment was suspended (`reconciler suspend`), or None. Pure."""
    value = (((cm or {}).get("metadata") or {}).get("annotations") or {}).get(SUSPEND_ANNOTATION)
    return str(value) if value else None


def suspension(kube: Cluster, environment: str, namespace: str) -> str | None:
    """The environment's suspension note, read from its state ConfigMap; None when it is not suspended or
    the state cannot be read here (no right to read the state namespace: only `run` is bound by it)."""
    try:
        return suspended(kube.get(state_ref(environment, namespace)))
    except KubeError as exc:
        if exc.status in (401, 403):
            return None
        raise


def set_suspended(kube: Cluster, environment: str, namespace: str, note: str | None) -> None:
    """Suspend (`note`: when, who, why) or resume (None) the environment, in its state ConfigMap.

    The annotation is the suspend manager's alone: a server-side apply of a ConfigMap holding only it
    creates the ConfigMap when no pass has recorded one yet, and resuming applies it without the
    annotation, which removes it (nothing else is that manager's)."""
    ref = state_ref(environment, namespace)
    meta: dict[str, Any] = {"name": ref.name, "namespace": namespace,
                            "labels": {labels.MANAGED_BY: labels.MANAGER, labels.ENVIRONMENT: environment,
                                       f"{labels.DOMAIN}/role": "state"}}
    if note is not None:
        meta["annotations"] = {SUSPEND_ANNOTATION: note}
    try:
        kube.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta}, field_manager=SUSPEND_MANAGER)
    except KubeError as exc:
        if exc.status != 404:
            raise
        raise ReconcilerError(f"the state namespace {namespace} does not exist", fix=f"create it (kubectl create "
                              f"namespace {namespace}), or pass --state-namespace (the namespace of `reconciler run`)"
                              ) from None


def request_reconcile(kube: Cluster, environment: str, namespace: str, when: str) -> None:
    """Ask the running reconciler to reconcile `environment` now (`reconciler reconcile ENV`)."""
    try:
        kube.patch(state_ref(environment, namespace), {"metadata": {"annotations": {REQUEST_ANNOTATION: when}}},
                   field_manager=REQUEST_MANAGER)
    except KubeError as exc:
        if exc.status != 404:
            raise
        raise ReconcilerError(f"{environment} has no reconciler state in namespace {namespace}: no `reconciler run` "
                              "has reconciled it there yet", fix="pass --state-namespace (the namespace of "
                              "`reconciler run`), or start the reconciler for this environment") from None


def record_history(kube: Cluster, environment: str, namespace: str, record: Record,
                   action: str) -> history.Revision | None:
    """Append the pass to `reconciler history ENV` (best effort: history is a report, never a blocker)."""
    try:
        return history.append(kube, environment, namespace, commit=record.commit, time=record.time, action=action,
                              ok=record.ok, summary=record.summary)
    except KubeError as exc:
        log.warning("%s: could not append to the history: %s", environment, exc)
        return None
