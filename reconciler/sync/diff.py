"""Diff: the content hash the reconciler records per object, and drift between desired and live.

Pure functions over plain dicts; used by the planner (is an object unchanged?) and the executor
(what changed in the cluster, for self-heal and the report).
"""

from __future__ import annotations

import json
from typing import Any

from reconciler import labels


def object_hash(obj: dict) -> str:
    """The rendered content hash (the annotation the renderer sets), computed when it is missing."""
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    if annotations.get(labels.CONTENT_HASH):
        return annotations[labels.CONTENT_HASH]
    from reconciler.render.environment import content_hash

    return content_hash(obj)


def live_hash(live: dict) -> str | None:
    return ((live.get("metadata") or {}).get("annotations") or {}).get(labels.CONTENT_HASH)


_IGNORED_META = {"annotations", "labels"}


def drift(desired: Any, live: Any, path: str = "", ignore: frozenset[str] = frozenset()) -> list[str]:
    """Fields we apply whose live value differs: every field of ``desired`` must be in ``live`` with
    the same value (live may have more: server defaults, other managers' fields). Lists of objects
    with a ``name`` are matched by name (containers, ports, env), other lists by position.
    Returns one readable line per difference; ``status`` and server-owned metadata are not compared."""
    if path in ignore:
        return []
    if isinstance(desired, dict):
        if not isinstance(live, dict):
            return [f"{path or '.'}: live is {_short(live)}, git has an object"]
        out: list[str] = []
        for key, value in desired.items():
            sub = f"{path}.{key}" if path else key
            if not path and key == "status":
                continue
            if path == "metadata" and key not in _IGNORED_META:
                continue
            if key not in live:
                out.append(f"{sub}: missing in the cluster (git: {_short(value)})")
                continue
            out.extend(drift(value, live[key], sub, ignore))
        return out
    if isinstance(desired, list):
        if not isinstance(live, list):
            return [f"{path}: live is {_short(live)}, git has a list"]
        if desired and all(isinstance(d, dict) and "name" in d for d in desired) \
                and all(isinstance(x, dict) for x in live):
            by_name = {x.get("name"): x for x in live}
            out = []
            if len(live) != len(desired):
                out.append(f"{path}: {len(live)} items in the cluster, {len(desired)} in git")
            for d in desired:
                if d["name"] not in by_name:
                    out.append(f"{path}[{d['name']}]: missing in the cluster")
                else:
                    out.extend(drift(d, by_name[d["name"]], f"{path}[{d['name']}]", ignore))
            return out
        if len(live) != len(desired):
            return [f"{path}: {len(live)} items in the cluster, {len(desired)} in git"]
        out = []
        for i, (d, x) in enumerate(zip(desired, live, strict=True)):
            out.extend(drift(d, x, f"{path}[{i}]", ignore))
        return out
    if desired != live and not _same_scalar(desired, live):
        return [f"{path}: cluster has {_short(live)}, git has {_short(desired)}"]
    return []


def _same_scalar(a: Any, b: Any) -> bool:
    # The API server returns int-or-string fields and quantities in its own spelling (1 vs "1").
    return str(a) == str(b)


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 60 else text[:57] + "..."
