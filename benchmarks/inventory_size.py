"""The inventory ConfigMaps' sizes at N models (3 objects each, as benchmarks/sync_bench.py syncs them), against the
1 MiB (1,048,576 bytes) the API server accepts for a ConfigMap's data + binaryData. Pure: no cluster.

    .venv/bin/python benchmarks/inventory_size.py [--models 10000]

Before the inventory was split (reconciler/sync/inventory.py), the 10,000-model sync on envtest failed with
HTTP 422 "Too long: may not be more than 1048576 bytes"; this prints the one-ConfigMap size it would have had too.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reconciler.results import ObjectRef
from reconciler.sync.inventory import Inventory, InventoryEntry

LIMIT = 1024 * 1024


def size(cm: dict) -> int:
    """What the API server counts: the data values' bytes and binaryData's decoded bytes."""
    return sum(len(v.encode()) for v in cm.get("data", {}).values()) + \
        sum(len(base64.b64decode(v)) for v in cm.get("binaryData", {}).values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=10000)
    args = parser.parse_args()
    inv = Inventory("prod", "models-prod")
    for i in range(args.models):
        model = f"model-{i:04d}"
        for api, kind in (("v1", "Service"), ("apps/v1", "Deployment"), ("autoscaling/v2", "HorizontalPodAutoscaler")):
            ref = ObjectRef(api, kind, "models-prod", f"{model}-cpu-general")
            digest = "sha256:" + hashlib.sha256(f"{ref}".encode()).hexdigest()
            inv.entries[ref] = InventoryEntry(ref, model, digest)
    single = len(base64.b64decode(inv.encode_entries()))
    maps = inv.to_configmaps()
    print(f"{args.models} models, {len(inv.entries)} entries: as one ConfigMap {single:,} bytes of entries "
          f"({'over' if single > LIMIT else 'within'} the {LIMIT:,}-byte limit)")
    print(f"split: {len(maps)} ConfigMap(s), largest {max(size(m) for m in maps):,} bytes, "
          f"entries per ConfigMap {[len(part) for part in inv.shards()]}")

if __name__ == "__main__":
    main()
