"""The content-hash annotation: a digest of an object's canonical JSON, set by render and read by sync (no-op
passes cost reads only), diff, plan and the rollout store. Below every other render module, so any may use it."""

from __future__ import annotations

import hashlib
import json

from reconciler import labels as L


def without_content_hash(obj: dict) -> dict:
    """A shallow copy of the object without the content-hash annotation (and no empty annotations)."""
    meta = dict(obj.get("metadata", {}))
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k != L.CONTENT_HASH}
    if annotations:
        meta["annotations"] = annotations
    else:
        meta.pop("annotations", None)
    return {**obj, "metadata": meta}


def content_hash(obj: dict) -> str:
    """sha256 of the object's canonical JSON, leaving out the content-hash annotation itself."""
    canonical = json.dumps(without_content_hash(obj), sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def with_content_hash(obj: dict) -> dict:
    meta = obj.setdefault("metadata", {})
    meta.setdefault("annotations", {})[L.CONTENT_HASH] = content_hash(obj)
    return obj
