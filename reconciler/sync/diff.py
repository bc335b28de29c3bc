"""Diff: the content hash the reconciler records per object, and a quick look at whether live values differ.

Pure functions over plain dicts; used by the planner (is an object unchanged?). What is *drift* is decided
in one place, reconciler.sync.server_diff (a server-side dry run compared with the live object): `drift`
here only tells it which objects are worth a dry run (`server_diff.may_have_drifted`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from reconciler import labels
from reconciler.render.content_hash import content_hash


def object_hash(obj: dict) -> str:
    """The rendered content hash (the annotation the renderer sets), computed when it is missing."""
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    if annotations.get(labels.CONTENT_HASH):
        return annotations[labels.CONTENT_HASH]

    return content_hash(obj)


def live_hash(live: dict) -> str | None:
    return ((live.get("metadata") or {}).get("annotations") or {}).get(labels.CONTENT_HASH)


_IGNORED_META = {"annotations", "labels"}


def drift(desired: Any, live: Any, path: str = "", ignore: frozenset[str] = frozenset()) -> list[str]:
    """Fields we apply whose live value differs: every field of ``desired`` must be in ``live`` with
    the same value (live may have more: server defaults, other managers' fields). Lists of objects
    with a ``name`` are matched by name (containers, ports, env), other lists by position.
    Returns one readable line per difference; ``status`` and server-owned metadata are not compared.
    It over-reports (a value the server stores in another spelling than QUIRKS know): not a drift report, only
    the cheap gate before the server's dry run decides (reconciler.sync.server_diff.may_have_drifted)."""
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
    if desired != live and not _same_scalar(desired, live, path):
        return [f"{path}: cluster has {_short(live)}, git has {_short(desired)}"]
    return []


@dataclass(frozen=True)
class Quirk:
    """One way the API server stores a value differently from how git spells it (as fluxcd/pkg
    ``ssa/normalize`` keeps them): where it applies (a regex on the drift path) and when two spellings
    are the same value."""

    name: str
    applies: re.Pattern[str]
    same: Callable[[Any, Any], bool]
    why: str


def _same_quantity(a: Any, b: Any) -> bool:
    from kubernetes.utils import parse_quantity  # the client's own resource.Quantity parser

    try:
        return bool(parse_quantity(a) == parse_quantity(b))
    except (ValueError, TypeError, ArithmeticError):
        return False


_QUANTITY_PATH = re.compile(
    r"(^|\.|\])(resources\.(requests|limits)|overhead|hard|capacity|allocatable"
    r"|default|defaultRequest|max|min|maxLimitRequestRatio)\.[^.\[\]]+$|\.sizeLimit$")

QUIRKS: tuple[Quirk, ...] = (
    Quirk("quantity", _QUANTITY_PATH, _same_quantity,
          "resource.Quantity is stored canonically: 1000m -> 1, 0.5 -> 500m, 1024Mi -> 1Gi, 2048Ki -> 2Mi"),
    Quirk("int-or-string", re.compile(r""), lambda a, b: str(a) == str(b),
          "IntOrString and stringly numbers come back in the server's type: targetPort 3000 vs \"3000\""),
)


def _same_scalar(a: Any, b: Any, path: str = "") -> bool:
    """Equal, or the same value in another spelling by one of the QUIRKS."""
    return any(q.applies.search(path) and q.same(a, b) for q in QUIRKS)


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


# -- items another manager re-keyed ------------------------------------------------------------------
# Server-side apply merges some lists by a key other than the items' (unique) `name`: Service ports by
# (port, protocol), container ports by (containerPort, protocol). When another manager changes the key of
# the item we own (`kubectl edit` of port 80 -> 8080), re-applying ours adds a second item with the same
# name and the server refuses it (422 Duplicate value). So before such an apply, the foreign item is
# replaced by ours with a JSON patch (guarded by a `test` of its name).
LIST_MERGE_KEYS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("containerPort", ("containerPort", "protocol")),
    ("port", ("port", "protocol")),
)


def _merge_key(item: dict) -> tuple | None:
    for marker, fields in LIST_MERGE_KEYS:
        if marker in item:
            return tuple(item.get(f, "TCP" if f == "protocol" else None) for f in fields)
    return None


def _pointer(parts: list[str | int]) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def rekeyed_items(desired: Any, live: Any, at: list[str | int] | None = None) -> list[dict]:
    """JSON-patch operations replacing live list items that carry the name of a desired item under a
    different merge key (see LIST_MERGE_KEYS); [] when there are none. Pure."""
    at = at or []
    ops: list[dict] = []
    if isinstance(desired, dict) and isinstance(live, dict):
        for key, value in desired.items():
            if key in live and not (not at and key in ("metadata", "status")):
                ops.extend(rekeyed_items(value, live[key], [*at, key]))
    elif isinstance(desired, list) and isinstance(live, list):
        if not all(isinstance(d, dict) and "name" in d for d in desired):
            return ops
        for d in desired:
            for i, x in enumerate(live):
                if not isinstance(x, dict) or x.get("name") != d["name"]:
                    continue
                key = _merge_key(d)
                if key is not None and _merge_key(x) != key:
                    ops.append({"op": "test", "path": _pointer([*at, i, "name"]), "value": d["name"]})
                    ops.append({"op": "replace", "path": _pointer([*at, i]), "value": d})
                else:
                    ops.extend(rekeyed_items(d, x, [*at, i]))
    return ops
