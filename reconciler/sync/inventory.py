"""The inventory: what the reconciler owns in one environment, recorded in the cluster.

One ConfigMap ``reconciler-inventory-<env>`` in the environment's namespace lists every object the
reconciler applied (apiVersion, kind, namespace, name), the model it belongs to, and the content
hash it had when last applied. Prune deletes only inventory entries that left git; a no-op pass
compares rendered hashes with these and writes nothing.

The entry list is stored gzip-compressed in ``binaryData`` (1,000 models x 3 pools would not fit
the 1 MiB ConfigMap limit as plain text); ``data`` carries a readable summary (object count per
model) for ``kubectl describe``. The encoding is deterministic, so an unchanged inventory encodes
to the same bytes and is not rewritten.
"""

from __future__ import annotations

import base64
import gzip
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from reconciler.cluster.protocol import Cluster
from reconciler import labels
from reconciler.errors import KubeError
from reconciler.results import ObjectRef

FORMAT_VERSION = "1"
ENTRIES_KEY = "entries.json.gz"
PENDING = ""  # hash of an object whose apply is in flight or failed: owned, state unknown


def inventory_name(environment: str) -> str:
    return f"reconciler-inventory-{environment}"


@dataclass(frozen=True)
class InventoryEntry:
    ref: ObjectRef
    model: str | None
    hash: str = PENDING

    def as_dict(self) -> dict[str, Any]:
        return {"apiVersion": self.ref.api_version, "kind": self.ref.kind, "namespace": self.ref.namespace,
                "name": self.ref.name, "model": self.model, "hash": self.hash}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "InventoryEntry":
        return cls(ObjectRef(d["apiVersion"], d["kind"], d.get("namespace"), d["name"]), d.get("model"),
                   d.get("hash") or PENDING)


@dataclass
class Inventory:
    environment: str
    namespace: str
    entries: dict[ObjectRef, InventoryEntry] = field(default_factory=dict)
    resource_version: str | None = None  # of the ConfigMap it was read from; None: not in the cluster yet

    @property
    def name(self) -> str:
        return inventory_name(self.environment)

    def ref(self) -> ObjectRef:
        return ObjectRef("v1", "ConfigMap", self.namespace, self.name)

    def models(self) -> set[str]:
        return {e.model for e in self.entries.values() if e.model}

    def hash_of(self, ref: ObjectRef) -> str | None:
        entry = self.entries.get(ref)
        return entry.hash if entry else None

    def copy(self) -> "Inventory":
        return Inventory(self.environment, self.namespace, dict(self.entries), self.resource_version)

    def same_entries(self, other: "Inventory") -> bool:
        return self.entries == other.entries

    # -- encoding ------------------------------------------------------------------------------

    def encode_entries(self) -> str:
        rows = sorted((e.as_dict() for e in self.entries.values()),
                      key=lambda d: (d["namespace"] or "", d["apiVersion"], d["kind"], d["name"]))
        raw = json.dumps(rows, separators=(",", ":"), sort_keys=True).encode()
        return base64.b64encode(gzip.compress(raw, compresslevel=6, mtime=0)).decode()

    def to_configmap(self) -> dict:
        per_model = Counter(e.model or "" for e in self.entries.values())
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "labels": {labels.MANAGED_BY: labels.MANAGER, labels.ENVIRONMENT: self.environment,
                           f"{labels.DOMAIN}/role": "inventory"},
            },
            "data": {
                "format": FORMAT_VERSION,
                "count": str(len(self.entries)),
                "models": "\n".join(f"{m or '-'} {n}" for m, n in sorted(per_model.items())),
            },
            "binaryData": {ENTRIES_KEY: self.encode_entries()},
        }

    @classmethod
    def from_configmap(cls, environment: str, namespace: str, cm: dict) -> "Inventory":
        blob = (cm.get("binaryData") or {}).get(ENTRIES_KEY)
        entries: dict[ObjectRef, InventoryEntry] = {}
        if blob:
            try:
                rows = json.loads(gzip.decompress(base64.b64decode(blob)))
            except (ValueError, OSError, EOFError) as exc:
                raise KubeError(f"ConfigMap {namespace}/{inventory_name(environment)} holds a corrupt inventory: {exc}",
                                reason="CorruptInventory",
                                fix="delete the ConfigMap only after checking what the reconciler owns "
                                    "(kubectl get all -l app.kubernetes.io/managed-by=model-gitops-reconciler); "
                                    "the next sync re-creates it from git") from None
            for row in rows:
                entry = InventoryEntry.from_dict(row)
                entries[entry.ref] = entry
        return cls(environment, namespace, entries, (cm.get("metadata") or {}).get("resourceVersion"))


def load_inventory(kube: Cluster, environment: str, namespace: str) -> Inventory:
    """The inventory recorded in the cluster, or an empty one when there is none yet."""
    cm = kube.get(ObjectRef("v1", "ConfigMap", namespace, inventory_name(environment)))
    if cm is None:
        return Inventory(environment, namespace)
    return Inventory.from_configmap(environment, namespace, cm)


def save_inventory(kube: Cluster, inventory: Inventory, *, previous: Inventory | None = None) -> bool:
    """Record the inventory (server-side apply). Skipped, returning False, when ``previous`` (what was
    read from the cluster) already holds the same entries: an unchanged inventory costs no write."""
    if previous is not None and previous.same_entries(inventory) and (
            previous.resource_version is not None or not inventory.entries):
        return False  # unchanged (or empty and never recorded)
    stored = kube.apply(inventory.to_configmap())
    inventory.resource_version = (stored or {}).get("metadata", {}).get("resourceVersion")
    return True
