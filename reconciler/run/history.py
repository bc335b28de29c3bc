"""Sync history of one environment (`reconciler history ENV`), kept in the cluster beside the state.

A ConfigMap ``reconciler-history-<env>`` in the state namespace holds the last ``MAX_ENTRIES``
syncs, newest last, each with a numeric id (as `argocd app history` shows), the commit, when, by
which action (``sync``, ``rollback``) and how it ended. `reconciler rollback ENV --to ID|REV` takes
either an id from it or a git revision. Appending is pure (`appended`); `load`/`append` do I/O.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from reconciler import labels
from reconciler.cluster.protocol import Cluster
from reconciler.errors import ReconcilerError
from reconciler.results import ObjectRef

HISTORY_PREFIX = "reconciler-history-"
HISTORY_KEY = "history.json"
MAX_ENTRIES = 50


@dataclass(frozen=True)
class Revision:
    id: int
    commit: str
    time: str
    action: str  # sync | rollback
    ok: bool
    summary: str = ""

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Revision":
        return cls(int(d["id"]), str(d["commit"]), str(d.get("time", "")), str(d.get("action", "sync")),
                   bool(d.get("ok", False)), str(d.get("summary", "")))


def history_ref(environment: str, namespace: str) -> ObjectRef:
    return ObjectRef("v1", "ConfigMap", namespace, f"{HISTORY_PREFIX}{environment}")


def appended(entries: list[Revision], *, commit: str, time: str, action: str, ok: bool, summary: str,
             limit: int = MAX_ENTRIES) -> list[Revision]:
    """The history with one more entry (ids keep counting up), trimmed to the newest `limit`. Pure."""
    next_id = (entries[-1].id + 1) if entries else 1
    return [*entries, Revision(next_id, commit, time, action, ok, summary)][-limit:]


def parse(cm: dict | None) -> list[Revision]:
    text = ((cm or {}).get("data") or {}).get(HISTORY_KEY)
    if not text:
        return []
    try:
        return [Revision.from_dict(d) for d in json.loads(text)]
    except (ValueError, KeyError, TypeError):
        return []  # unreadable bookkeeping: start a new history rather than block syncs


def load(kube: Cluster, environment: str, namespace: str) -> list[Revision]:
    return parse(kube.get(history_ref(environment, namespace)))


def append(kube: Cluster, environment: str, namespace: str, **entry: Any) -> Revision:
    """Record one sync (read, add, server-side apply); returns the new entry."""
    ref = history_ref(environment, namespace)
    entries = appended(load(kube, environment, namespace), **entry)
    kube.apply({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": ref.name, "namespace": namespace,
                             "labels": {labels.MANAGED_BY: labels.MANAGER, labels.ENVIRONMENT: environment,
                                        f"{labels.DOMAIN}/role": "history"}},
                "data": {HISTORY_KEY: json.dumps([asdict(e) for e in entries], sort_keys=True)}})
    return entries[-1]


def resolve_target(entries: list[Revision], target: str) -> str | None:
    """A history id ("3") to its commit; None when `target` is not an id of this history (a git revision)."""
    if target.isdigit() and len(target) < 7:
        for entry in entries:
            if entry.id == int(target):
                return entry.commit
        raise ReconcilerError(f"no history entry {target} (ids: {', '.join(str(e.id) for e in entries) or 'none'})",
                        fix="pick an id from `reconciler history ENV`, or pass a git revision")
    return None
