"""The inventory: what the reconciler owns in one environment, recorded in the cluster.

One ConfigMap ``reconciler-inventory-<env>`` in the environment's namespace lists every object the
reconciler applied (apiVersion, kind, namespace, name), the model it belongs to, and the content
hash it had when last applied. Prune deletes only inventory entries that left git; a no-op pass
compares rendered hashes with these and writes nothing.

The entry list is stored gzip-compressed in ``binaryData`` (1,000 models x 3 pools would not fit
the 1 MiB ConfigMap limit as plain text); ``data`` carries a readable summary (object count per
model) for ``kubectl describe``. The encoding is deterministic, so an unchanged inventory encodes
to the same bytes and is not rewritten.

Past ``SHARD_ENTRIES`` entries the list is split by model over more ConfigMaps: ``reconciler-inventory-<env>``
holds shard 0 and the count of shards (``data.shards``), ``reconciler-inventory-<env>-<i>`` the others. A
content hash is 64 hex characters that gzip cannot shrink below ~33 bytes, so 30,000 objects (10,000 models x
3) are ~1.2 MB: over the 1 MiB a ConfigMap may hold (measured: HTTP 422 "Too long" at 10,000 models). A model's
entries always sit in the same shard (crc32 of its name), so a one-model change rewrites one ConfigMap.
"""

from __future__ import annotations

import base64
import gzip
import json
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from reconciler.cluster.protocol import Cluster
from reconciler import labels
from reconciler.errors import KubeError
from reconciler.results import ObjectRef

FORMAT_VERSION = "1"
ENTRIES_KEY = "entries.json.gz"
PENDING = ""  # hash of an object whose apply is in flight or failed: owned, state unknown
SHARD_ENTRIES = 8000  # entries per ConfigMap at most, on average (~330 KB gzipped: a third of the 1 MiB limit)


def inventory_name(environment: str, shard: int = 0) -> str:
    return f"reconciler-inventory-{environment}" + (f"-{shard}" if shard else "")


def shard_count(entries: int) -> int:
    """How many ConfigMaps hold `entries` entries: a power of two, so that a model moves only when it doubles."""
    count = 1
    while entries > count * SHARD_ENTRIES:
        count *= 2
    return count


def shard_of(model: str | None, shards: int) -> int:
    return zlib.crc32((model or "").encode()) % shards if shards > 1 else 0


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
    stored: tuple[str, ...] = ()  # the entries blob of each ConfigMap as read (or last written): what a save compares

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
        return Inventory(self.environment, self.namespace, dict(self.entries), self.resource_version, self.stored)

    def same_entries(self, other: "Inventory") -> bool:
        return self.entries == other.entries

    # -- encoding ------------------------------------------------------------------------------

    def encode_entries(self, entries: list[InventoryEntry] | None = None) -> str:
        rows = sorted((e.as_dict() for e in (self.entries.values() if entries is None else entries)),
                      key=lambda d: (d["namespace"] or "", d["apiVersion"], d["kind"], d["name"]))
        raw = json.dumps(rows, separators=(",", ":"), sort_keys=True).encode()
        return base64.b64encode(gzip.compress(raw, compresslevel=6, mtime=0)).decode()

    def shards(self) -> list[list[InventoryEntry]]:
        """The entries of each ConfigMap, by model (shard_of); one list below SHARD_ENTRIES entries."""
        count = shard_count(len(self.entries))
        split: list[list[InventoryEntry]] = [[] for _ in range(count)]
        for entry in self.entries.values():
            split[shard_of(entry.model, count)].append(entry)
        return split

    def to_configmap(self) -> dict:
        """The first (or only) ConfigMap: what `to_configmaps` gives first."""
        return self.to_configmaps()[0]

    def to_configmaps(self) -> list[dict]:
        """One ConfigMap per shard; the first, `reconciler-inventory-<env>`, names how many there are."""
        split = self.shards()
        maps = []
        for i, entries in enumerate(split):
            per_model = Counter(e.model or "" for e in entries)
            data = {"format": FORMAT_VERSION, "count": str(len(self.entries) if i == 0 else len(entries)),
                    "models": "\n".join(f"{m or '-'} {n}" for m, n in sorted(per_model.items()))}
            if len(split) > 1:
                data["shards"] = str(len(split))
                data["shard"] = str(i)
            maps.append({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": inventory_name(self.environment, i),
                    "namespace": self.namespace,
                    "labels": {labels.MANAGED_BY: labels.MANAGER, labels.ENVIRONMENT: self.environment,
                               f"{labels.DOMAIN}/role": "inventory"},
                },
                "data": data,
                "binaryData": {ENTRIES_KEY: self.encode_entries(entries)},
            })
        return maps

    @classmethod
    def from_configmap(cls, environment: str, namespace: str, cm: dict, more: Sequence[dict] = ()) -> "Inventory":
        """From the first ConfigMap, and the other shards' (`more`, in order) when it names any."""
        entries: dict[ObjectRef, InventoryEntry] = {}
        for i, part in enumerate([cm, *more]):
            cls._read_shard(environment, namespace, i, part, entries)
        return cls(environment, namespace, entries, (cm.get("metadata") or {}).get("resourceVersion"),
                   tuple(str((part.get("binaryData") or {}).get(ENTRIES_KEY) or "") for part in [cm, *more]))

    @staticmethod
    def shards_named(cm: dict) -> int:
        """How many ConfigMaps the first one says the inventory spans (1 for an inventory of one)."""
        try:
            return max(1, int((cm.get("data") or {}).get("shards", "1")))
        except ValueError:
            return 1

    @staticmethod
    def _read_shard(environment: str, namespace: str, shard: int, cm: dict,
                    entries: dict[ObjectRef, InventoryEntry]) -> None:
        blob = (cm.get("binaryData") or {}).get(ENTRIES_KEY)
        if blob:
            try:
                rows = json.loads(gzip.decompress(base64.b64decode(blob)))
            except (ValueError, OSError, EOFError) as exc:
                raise KubeError(f"ConfigMap {namespace}/{inventory_name(environment, shard)} holds a corrupt inventory: {exc}",
                                reason="CorruptInventory",
                                fix="delete the ConfigMap only after checking what the reconciler owns "
                                    "(kubectl get all -l app.kubernetes.io/managed-by=model-gitops-reconciler); "
                                    "the next sync re-creates it from git") from None
            for row in rows:
                entry = InventoryEntry.from_dict(row)
                entries[entry.ref] = entry


def load_inventory(kube: Cluster, environment: str, namespace: str) -> Inventory:
    """The inventory recorded in the cluster, or an empty one when there is none yet."""
    cm = kube.get(ObjectRef("v1", "ConfigMap", namespace, inventory_name(environment)))
    if cm is None:
        return Inventory(environment, namespace)
    more = []
    for i in range(1, Inventory.shards_named(cm)):
        part = kube.get(ObjectRef("v1", "ConfigMap", namespace, inventory_name(environment, i)))
        if part is None:
            raise KubeError(f"ConfigMap {namespace}/{inventory_name(environment)} names {Inventory.shards_named(cm)} "
                            f"shards, but {inventory_name(environment, i)} is missing", reason="CorruptInventory",
                            fix="do not delete inventory ConfigMaps by hand; check what the reconciler owns (kubectl get "
                                "all -l app.kubernetes.io/managed-by=model-gitops-reconciler) before deleting them all: "
                                "the next sync re-creates them from git")
        more.append(part)
    return Inventory.from_configmap(environment, namespace, cm, more)


def save_inventory(kube: Cluster, inventory: Inventory, *, previous: Inventory | None = None) -> bool:
    """Record the inventory (server-side apply). Skipped, returning False, when ``previous`` (what was
    read from the cluster) already holds the same entries: an unchanged inventory costs no write. Of an
    inventory in shards, only the ConfigMaps whose content changed are written, and shards it no longer
    needs are deleted (the first ConfigMap, which counts them, is written last: a reader never sees a count
    of shards not yet written)."""
    if previous is not None and previous.same_entries(inventory) and (
            previous.resource_version is not None or not inventory.entries):
        return False  # unchanged (or empty and never recorded)
    maps = inventory.to_configmaps()
    blobs = tuple(m["binaryData"][ENTRIES_KEY] for m in maps)
    before = previous.stored if previous is not None and previous.resource_version is not None else ()
    for i in range(len(maps) - 1, 0, -1):
        if i >= len(before) or before[i] != blobs[i]:
            kube.apply(maps[i])
    stored = kube.apply(maps[0])
    for i in range(len(maps), len(before)):
        kube.delete(ObjectRef("v1", "ConfigMap", inventory.namespace, inventory_name(inventory.environment, i)))
    inventory.resource_version = (stored or {}).get("metadata", {}).get("resourceVersion")
    inventory.stored = blobs
    return True
