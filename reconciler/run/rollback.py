"""`reconciler rollback ENV --to ID|REV`: sync an older commit and keep `run` from undoing it.

As `argocd app rollback` (which turns auto-sync off): the state ConfigMap records the commit the
environment was rolled back *from* (`pinnedHead`); `run` leaves the environment alone while the
branch head is that commit (or older) and syncs as usual once a newer commit arrives
(`loop.rolled_back_step`). The rollback is a history entry of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from reconciler.cluster.protocol import Cluster
from reconciler.errors import KubeError, ReconcilerError
from reconciler.results import ObjectRef
from reconciler.run import history
from reconciler.run.events import record_event
from reconciler.run.reconcile import environment_failure, reconcile_pass, record_pass
from reconciler.run.record import Record, load_record, save_record
from reconciler.source import git as source
from reconciler.sync.planner import SyncOptions


@dataclass
class RollbackResult:
    commit: str
    pinned_head: str
    result: Any  # SyncResult
    history_id: int | None = None
    error: str | None = None


def _default_sync(kube: Cluster, repo: Path, commit: str, environment: str, options: Any) -> Any:
    return reconcile_pass(kube, repo, commit, environment, options)


def rollback(kube: Cluster, repo: Path, environment: str, target: str, *, state_namespace: str, now: datetime,
             options: Any = None, sync: Callable[..., Any] = _default_sync, notify: Any = None) -> RollbackResult:
    if kube.get(ObjectRef("v1", "Namespace", None, state_namespace)) is None:
        raise ReconcilerError(f"the state namespace {state_namespace} does not exist, so a rollback could not be "
                              "recorded and `reconciler run` would undo it",
                              fix="pass --state-namespace (the namespace `reconciler run` uses), or create it")
    entries = history.load(kube, environment, state_namespace)
    top = source.toplevel(repo)
    commit = history.resolve_target(entries, target) or source.resolve_sha(top, target)
    recorded = load_record(kube, environment, state_namespace)
    if recorded is not None and recorded.pinned_head:
        pinned_head = recorded.pinned_head  # a second rollback keeps the first one's head
    elif recorded is not None and recorded.commit:
        pinned_head = recorded.commit
    else:
        pinned_head = source.head_sha(top)
    result = sync(kube, top, commit, environment, options or SyncOptions())
    error = environment_failure(result)
    if error is not None:
        return RollbackResult(commit, pinned_head, result, error=error)
    when = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    record = Record(commit, result.ok, when, str(result.summary()), pinned_head=pinned_head,
                    requested=recorded.requested if recorded else "", handled=recorded.requested if recorded else "",
                    policy=recorded.policy if recorded else "")
    try:
        save_record(kube, environment, state_namespace, record)
        entry = history.append(kube, environment, state_namespace, commit=commit, time=when, action="rollback",
                               ok=result.ok, summary=record.summary)
    except KubeError as exc:
        return RollbackResult(commit, pinned_head, result,
                              error=f"synced {commit[:12]} but could not record the rollback: {exc}")
    record_event(kube, environment, state_namespace, "RolledBack",
                 f"`reconciler rollback` synced {commit[:12]} (from {pinned_head[:12]}): {record.summary}; `run` "
                 f"waits for a commit newer than {pinned_head[:12]}", warning=not result.ok, now=now)
    if notify is not None:
        notify.event("rollback", environment, commit, f"rolled back from {pinned_head[:12]} by `reconciler rollback`")
    return RollbackResult(commit, pinned_head, result, history_id=entry.id)


def record_manual_sync(kube: Cluster, environment: str, result: Any, *, state_namespace: str, now: datetime) -> str:
    """Record a `reconciler sync` by hand where `run`, `status` and `history` read it, as `run` records its
    passes (reconcile.record_pass: an applied commit, or a failure with its stage); returns what was done.

    Only when the state namespace exists (it is the in-cluster reconciler's): a laptop sync of a
    cluster without one is not recorded, and says so. A manual sync ends a rollback pin, as a sync in
    Argo CD does, and leaves a pending `reconciler reconcile` request to `run`. A pass that failed before
    its revision resolved to a commit (a revision git does not know) has no commit to record."""
    if result.dry_run or not result.commit:
        return ""
    created = ensure_state_namespace(kube, state_namespace)
    if created.startswith("not recorded"):
        return created
    recorded = load_record(kube, environment, state_namespace)
    record, entry = record_pass(kube, environment, state_namespace, result.commit, result, recorded, now=now,
                                handles_request=False, by="`reconciler sync`")
    if environment_failure(result) is not None and record.failure is not None:
        return f"{created}recorded the failure ({record.failure.stage}) in {state_namespace}"
    return f"{created}recorded as history id {entry.id} in {state_namespace}" if entry else \
        f"{created}recorded in {state_namespace} (the history could not be written)"


def state_namespace_object(name: str) -> dict:
    """The state namespace as environments/reconciler/namespace.yaml declares it."""
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def ensure_state_namespace(kube: Cluster, name: str) -> str:
    """Create the state namespace a first sync records itself in, when it is missing.

    Returns "" when it was there, "created the state namespace NAME; " when this call created it, or a
    "not recorded: ..." sentence with the one command that creates it (no right to create namespaces,
    or a namespace being deleted). The Namespace is the one environments/reconciler ships, so applying
    that later adopts it."""
    ref = ObjectRef("v1", "Namespace", None, name)
    how = f"create it with `kubectl create namespace {name}` (or apply environments/reconciler), or pass --state-namespace"
    found = kube.get(ref)
    if found is not None:
        if (found.get("status") or {}).get("phase") == "Terminating":
            return f"not recorded: the state namespace {name} is being deleted (Terminating); {how}"
        return ""
    try:
        kube.create(state_namespace_object(name))
    except KubeError as exc:
        if exc.status == 409:  # another sync or `run` created it meanwhile
            return ""
        return (f"not recorded: the state namespace {name} does not exist and could not be created "
                f"({exc.message}); {how}")
    return f"created the state namespace {name}; "
