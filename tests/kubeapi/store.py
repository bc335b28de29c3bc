"""In-memory object storage with a global resourceVersion and a bounded watch-event history.

Stored objects are never mutated in place (writes store new dicts), so readers and watch events
can share them without copying.

Simplified compared to etcd-backed storage: one process-local dict; the event history keeps the
last ``history`` events (older watch resourceVersions get 410 Gone, as after compaction).
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

GroupResource = tuple[str, str]
ObjectKey = tuple[str, str]  # (namespace or "", name)


@dataclass(frozen=True)
class WatchEvent:
    """One change, as watchers see it (``obj`` is a private copy)."""

    resource_version: int
    type: str  # ADDED | MODIFIED | DELETED
    group_resource: GroupResource
    namespace: str
    obj: dict  # shared with the store: never mutate


class Store:
    """Objects by group-resource and (namespace, name); every change bumps one global counter."""

    def __init__(self, history: int = 20000) -> None:
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self._history = history
        self.clear()

    def clear(self) -> None:
        with self.lock:
            self._data: dict[GroupResource, dict[ObjectKey, dict]] = {}
            self._rv = 0
            self._events: deque[WatchEvent] = deque(maxlen=self._history)
            self.changed.notify_all()

    @property
    def resource_version(self) -> int:
        return self._rv

    def get(self, gr: GroupResource, namespace: str, name: str) -> dict | None:
        """The stored object itself (callers must copy before mutating)."""
        return self._data.get(gr, {}).get((namespace, name))

    def list(self, gr: GroupResource, namespace: str | None = None) -> list[dict]:
        """Stored objects sorted by (namespace, name); all namespaces when ``namespace`` is None."""
        bucket = self._data.get(gr, {})
        keys = sorted(k for k in bucket if namespace is None or k[0] == namespace)
        return [bucket[k] for k in keys]

    def group_resources(self) -> list[GroupResource]:
        return [gr for gr, bucket in self._data.items() if bucket]

    def _record(self, event_type: str, gr: GroupResource, obj: dict) -> None:
        namespace = obj["metadata"].get("namespace", "")
        self._events.append(WatchEvent(self._rv, event_type, gr, namespace, obj))
        self.changed.notify_all()

    def put(self, gr: GroupResource, obj: dict) -> dict:
        """Store ``obj`` (taking ownership: it must not be mutated afterwards) under a new
        resourceVersion."""
        with self.lock:
            meta = obj["metadata"]
            key = (meta.get("namespace", ""), meta["name"])
            existed = key in self._data.get(gr, {})
            self._rv += 1
            meta["resourceVersion"] = str(self._rv)
            self._data.setdefault(gr, {})[key] = obj
            self._record("MODIFIED" if existed else "ADDED", gr, obj)
            return obj

    def delete(self, gr: GroupResource, namespace: str, name: str) -> dict | None:
        """Remove an object; the DELETED event carries the deletion's resourceVersion."""
        with self.lock:
            obj = self._data.get(gr, {}).pop((namespace, name), None)
            if obj is None:
                return None
            self._rv += 1
            obj = {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(self._rv)}}
            self._record("DELETED", gr, obj)
            return obj

    def events_after(self, resource_version: int) -> list[WatchEvent] | None:
        """Events newer than ``resource_version``; None if history no longer reaches back."""
        with self.lock:
            if self._events and resource_version < self._events[0].resource_version - 1:
                return None
            if not self._events and resource_version < self._rv:
                return None
            newer = []
            for event in reversed(self._events):
                if event.resource_version <= resource_version:
                    break
                newer.append(event)
            return newer[::-1]
