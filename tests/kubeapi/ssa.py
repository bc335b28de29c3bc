"""Server-side apply and ``metadata.managedFields``: a simplified field-ownership model.

What is faithful: managedFields entries per (manager, operation, subresource) with
``fieldsType: FieldsV1`` and ``fieldsV1`` in the real nested ``f:``/``k:``/``.`` notation; apply
conflicts with other managers (Apply *and* Update ones) when the value differs, reported like the
apiserver (``Apply failed with N conflict(s): conflict with "mgr" using apps/v1: .spec.replicas``),
``force`` taking ownership; fields the applier owned before and no longer applies are removed
unless another manager owns them; Update operations take ownership of the fields they change.

Simplified: the set of associative lists comes from a fixed table of built-in merge keys
(single-key, e.g. container ports keyed by ``containerPort`` alone) instead of OpenAPI schemas;
lists of custom resources, lists of scalars (``finalizers``) and everything else are atomic;
ownership of a map does not conflict with ownership of its sub-fields; element order of merged
lists is the live order with new elements appended.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any

from tests.kubeapi.patch import merge_key
from tests.kubeapi.values import clone

Path = tuple[str, ...]
ITEM = "."  # marks ownership of an associative-list element itself
_IGNORED_METADATA = frozenset({
    "name", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp",
    "managedFields", "selfLink", "deletionTimestamp", "deletionGracePeriodSeconds"})
_MISSING = object()


@dataclass
class ManagedEntry:
    """One ``metadata.managedFields`` element, with its field set as a set of paths."""

    manager: str
    operation: str
    api_version: str
    time: str
    fields: set[Path] = field(default_factory=set)
    subresource: str = ""

    def same_owner(self, manager: str, operation: str, subresource: str) -> bool:
        return (self.manager, self.operation, self.subresource) == (manager, operation, subresource)

    def to_dict(self) -> dict:
        out = {"manager": self.manager, "operation": self.operation,
               "apiVersion": self.api_version, "time": self.time, "fieldsType": "FieldsV1",
               "fieldsV1": to_fields_v1(self.fields)}
        if self.subresource:
            out["subresource"] = self.subresource
        return out

    @classmethod
    def from_dict(cls, data: dict) -> ManagedEntry:
        return cls(data["manager"], data["operation"], data.get("apiVersion", ""),
                   data.get("time", ""), from_fields_v1(data.get("fieldsV1") or {}),
                   data.get("subresource", ""))


@dataclass
class ApplyConflict(Exception):
    """Fields owned by other managers whose values the apply would change."""

    conflicts: list[tuple[str, str, Path]]  # (manager, apiVersion, path)

    def message(self) -> str:
        n = len(self.conflicts)
        plural = "s" if n > 1 else ""
        by_manager: dict[tuple[str, str], list[str]] = {}
        for manager, api_version, path in self.conflicts:
            by_manager.setdefault((manager, api_version), []).append(render_path(path))
        parts = []
        for (manager, api_version), paths in by_manager.items():
            if len(paths) == 1 and n == 1:
                parts.append(f'conflict with "{manager}" using {api_version}: {paths[0]}')
            else:
                listing = "".join(f"\n- {p}" for p in paths)
                parts.append(f'conflict{"s" if len(paths) > 1 else ""} with "{manager}" '
                             f"using {api_version}:{listing}")
        return f"Apply failed with {n} conflict{plural}: " + "\n".join(parts)

    def causes(self) -> list[dict]:
        return [{"reason": "FieldManagerConflict", "field": render_path(path),
                 "message": f'conflict with "{manager}" using {api_version}'}
                for manager, api_version, path in self.conflicts]


def render_path(path: Path) -> str:
    """``('f:spec', 'k:{"name":"c"}', 'f:image')`` -> ``.spec.containers[name="c"].image``."""
    out = []
    for element in path:
        if element.startswith("f:"):
            out.append("." + element[2:])
        elif element.startswith("k:"):
            key = json.loads(element[2:])
            out.append("[" + ",".join(f"{k}={json.dumps(v)}" for k, v in key.items()) + "]")
    return "".join(out)


def _item_element(key: str, item: dict) -> str:
    return "k:" + json.dumps({key: item[key]}, separators=(",", ":"))


def leaf_values(obj: Any, builtin: bool, prefix: Path = ()) -> dict[Path, Any]:
    """Every owned path of ``obj`` mapped to its value (list-element markers map to True)."""
    out: dict[Path, Any] = {}
    if isinstance(obj, dict) and obj:
        for key, value in obj.items():
            if not prefix and key in ("apiVersion", "kind"):
                continue
            if prefix == ("f:metadata",) and key in _IGNORED_METADATA:
                continue
            out.update(leaf_values(value, builtin, prefix + (f"f:{key}",)))
        return out
    if isinstance(obj, list) and builtin and prefix:
        key = merge_key(prefix[-1][2:], obj)
        if key is not None:
            for item in obj:
                item_prefix = prefix + (_item_element(key, item),)
                out[item_prefix + (ITEM,)] = True
                out.update(leaf_values(item, builtin, item_prefix))
            return out
    if prefix and not (prefix == ("f:metadata",) and obj == {}):
        out[prefix] = obj
    return out


def to_fields_v1(paths: set[Path]) -> dict:
    tree: dict = {}
    for path in sorted(paths):
        node = tree
        for element in path:
            node = node.setdefault(element, {})
    return tree


def from_fields_v1(tree: dict, prefix: Path = ()) -> set[Path]:
    paths: set[Path] = set()
    for element, child in tree.items():
        if child:
            paths |= from_fields_v1(child, prefix + (element,))
        else:
            paths.add(prefix + (element,))
    return paths


def _child(node: Any, element: str) -> Any:
    if element.startswith("f:") and isinstance(node, dict):
        return node.get(element[2:], _MISSING)
    if element.startswith("k:") and isinstance(node, list):
        key = json.loads(element[2:])
        return next((i for i in node if isinstance(i, dict)
                     and all(i.get(k) == v for k, v in key.items())), _MISSING)
    return _MISSING


def value_at(obj: Any, path: Path) -> Any:
    node = obj
    for element in path:
        if element == ITEM:
            return True if node is not _MISSING else _MISSING
        node = _child(node, element)
        if node is _MISSING:
            return _MISSING
    return node


def _is_element_key(path: Path) -> bool:
    """Whether ``path`` is the key field of an associative-list element (``k:{"name":..}/f:name``)."""
    return (len(path) >= 2 and path[-2].startswith("k:") and path[-1].startswith("f:")
            and path[-1][2:] in json.loads(path[-2][2:]))


def remove_path(obj: dict, path: Path) -> None:
    """Delete the field (or list element, for a ``.`` path) and prune maps it leaves empty."""
    target = path[:-1] if path[-1] == ITEM else path
    chain = [obj]
    for element in target[:-1]:
        node = _child(chain[-1], element)
        if node is _MISSING:
            return
        chain.append(node)
    parent, last = chain[-1], target[-1]
    if last.startswith("f:") and isinstance(parent, dict):
        parent.pop(last[2:], None)
    elif last.startswith("k:") and isinstance(parent, list):
        item = _child(parent, last)
        if item is not _MISSING:
            parent.remove(item)
    for depth in range(len(chain) - 1, 1, -1):  # never prune top-level fields or metadata
        node = chain[depth]
        if node or not isinstance(node, dict):
            break
        holder, element = chain[depth - 1], target[depth - 1]
        if isinstance(holder, dict):
            holder.pop(element[2:], None)


def merge_applied(live: Any, applied: Any, builtin: bool, field_name: str = "") -> Any:
    """Overlay an applied configuration: maps merge, keyed lists merge by key, the rest replace.

    ``applied`` is consumed: its values end up in the result without being copied.
    """
    if isinstance(live, dict) and isinstance(applied, dict):
        result = dict(live)
        for key, value in applied.items():
            result[key] = merge_applied(live.get(key), value, builtin, key)
        return result
    if builtin and isinstance(live, list) and isinstance(applied, list):
        key = merge_key(field_name, live + applied)
        if key is not None:
            result = list(live)
            for item in applied:
                index = next((n for n, cur in enumerate(result) if cur[key] == item[key]), None)
                if index is None:
                    result.append(item)
                else:
                    result[index] = merge_applied(result[index], item, builtin)
            return result
    return applied


def apply(live: dict, applied: dict, entries: list[ManagedEntry], manager: str, force: bool,
          api_version: str, now: str, builtin: bool) -> tuple[dict, list[ManagedEntry]]:
    """Server-side apply ``applied`` by ``manager`` onto ``live``; returns (object, entries).

    ``live`` is not modified; ``applied`` is consumed (shared with the result).

    Raises :class:`ApplyConflict` when another manager owns a field the apply changes and
    ``force`` is false.
    """
    entries = [copy.copy(e) for e in entries]
    for entry in entries:
        entry.fields = set(entry.fields)
    applied_values = leaf_values(applied, builtin)
    mine = next((e for e in entries if e.same_owner(manager, "Apply", "")), None)
    others = [e for e in entries if e is not mine and not e.subresource]
    conflicts = []
    for entry in others:
        for path in sorted(entry.fields & applied_values.keys()):
            if path[-1] != ITEM and value_at(live, path) != applied_values[path]:
                conflicts.append((entry.manager, entry.api_version, path))
                if force:
                    entry.fields.discard(path)
    if conflicts and not force:
        raise ApplyConflict(conflicts)
    others_owned = set().union(*(e.fields for e in others)) if others else set()
    result = clone(live)
    previous = mine.fields if mine else set()
    # whole list elements first (their fields go with them), then the deepest fields first
    for path in sorted(previous - applied_values.keys() - others_owned,
                       key=lambda p: (p[-1] != ITEM, -len(p))):
        if path[-1] == ITEM:
            element = path[:-1]
            if any(p[:len(element)] == element for p in others_owned):
                continue
        elif _is_element_key(path):
            continue  # an element keeps the field that identifies it
        remove_path(result, path)
    result = merge_applied(result, applied, builtin)
    if mine is None:
        mine = ManagedEntry(manager, "Apply", api_version, now)
        entries.append(mine)
    if mine.fields != set(applied_values):
        mine.fields, mine.time = set(applied_values), now
    mine.api_version = api_version
    return result, [e for e in entries if e.fields]


def record_update(old: dict | None, new: dict, entries: list[ManagedEntry], manager: str,
                  api_version: str, now: str, builtin: bool,
                  subresource: str = "") -> list[ManagedEntry]:
    """Give ``manager`` (operation Update) the fields a non-apply write changed."""
    old_values = leaf_values(old or {}, builtin)
    new_values = leaf_values(new, builtin)
    changed = {p for p, v in new_values.items() if old_values.get(p, _MISSING) != v}
    removed = old_values.keys() - new_values.keys()
    result = []
    for entry in entries:
        fields = entry.fields - changed - removed
        if fields:
            result.append(ManagedEntry(entry.manager, entry.operation, entry.api_version,
                                       entry.time, fields, entry.subresource))
    if changed:
        mine = next((e for e in result if e.same_owner(manager, "Update", subresource)), None)
        if mine is None:
            mine = ManagedEntry(manager, "Update", api_version, now, set(), subresource)
            result.append(mine)
        mine.fields |= changed
        mine.time, mine.api_version = now, api_version
    return result
