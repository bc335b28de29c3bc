"""Field-level comparison of two Kubernetes objects, as paths a person reads. Pure.

`field_changes(old, new)` lists every leaf that differs; lists of named items (containers, ports, env)
are matched by name. The one comparison behind `reconciler diff`, `status` and `sync`'s drift
(reconciler.sync.server_diff, on a server-side dry run) and the plan's field diff of an object that
moves to another pool (reconciler.plan.changes).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FieldChange:
    path: str  # e.g. spec.template.spec.containers[model].resources.limits.cpu
    live: Any  # None when the field is new
    desired: Any  # None when applying git removes the field

    def __str__(self) -> str:
        return f"{self.path}: {_short(self.live)} -> {_short(self.desired)}"


_MISSING = object()


def _short(value: Any) -> str:
    if value is _MISSING or value is None:
        return "(none)"
    return json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)  # whole: a figure is never cut


def _named(items: list) -> bool:
    return bool(items) and all(isinstance(i, dict) and isinstance(i.get("name"), str) for i in items)


def field_changes(live: Any, desired: Any, path: str = "") -> list[FieldChange]:
    """Every leaf that differs between two (normalized) objects. Lists of named items (containers,
    ports, env) are matched by name, other lists compared whole. Pure."""
    if isinstance(live, dict) and isinstance(desired, dict):
        out: list[FieldChange] = []
        for key in sorted(set(live) | set(desired)):
            sub = f"{path}.{key}" if path else str(key)
            out.extend(field_changes(live.get(key, _MISSING), desired.get(key, _MISSING), sub))
        return out
    if isinstance(live, list) and isinstance(desired, list) and _named(live) and _named(desired):
        by_live, by_desired = {i["name"]: i for i in live}, {i["name"]: i for i in desired}
        out = []
        for name in sorted(set(by_live) | set(by_desired)):
            out.extend(field_changes(by_live.get(name, _MISSING), by_desired.get(name, _MISSING), f"{path}[{name}]"))
        return out
    if live == desired:
        return []
    return [FieldChange(path or ".", None if live is _MISSING else live, None if desired is _MISSING else desired)]


