"""JSON merge patch (RFC 7386), JSON patch (RFC 6902) and an approximation of strategic merge patch.

Strategic merge patch is simplified: lists whose elements carry a known merge key (see
:func:`merge_key`) are merged by that key, every other list is replaced. Directives supported:
``$patch: delete`` on list elements and maps, ``$patch: replace`` on maps, and the
``$setElementOrder/...`` / ``$retainKeys`` keys kubectl sends are accepted and ignored.
"""

from __future__ import annotations

from typing import Any

from tests.kubeapi.errors import ApiError, bad_request
from tests.kubeapi.values import clone

# Merge keys of the associative lists of the built-in types (the patchMergeKey / listMapKey of
# the real schemas, reduced to one key).
_MERGE_KEYS = {
    "containers": "name", "initContainers": "name", "ephemeralContainers": "name",
    "volumes": "name", "env": "name", "volumeMounts": "mountPath", "imagePullSecrets": "name",
    "conditions": "type", "hostAliases": "ip", "volumeDevices": "devicePath",
}


def merge_key(field_name: str, items: list) -> str | None:
    """The key identifying elements of list ``field_name``, or None if the list is atomic."""
    if not items or not all(isinstance(i, dict) for i in items):
        return None
    if field_name == "ports":
        key = "containerPort" if any("containerPort" in i for i in items) else "port"
    else:
        key = _MERGE_KEYS.get(field_name)
    if key and all(key in i for i in items):
        return key
    return None


def json_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: maps merge recursively, ``null`` deletes, everything else replaces."""
    if not isinstance(patch, dict):
        return clone(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = json_merge_patch(result.get(key), value)
    return result


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """Merge patch, except that keyed lists of built-in types merge element-wise."""
    if not isinstance(patch, dict):
        return clone(patch)
    directive = patch.get("$patch")
    if directive == "replace":
        return {k: clone(v) for k, v in patch.items() if k != "$patch"}
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$setElementOrder/") or key in ("$retainKeys", "$patch"):
            continue
        if value is None or (isinstance(value, dict) and value.get("$patch") == "delete"):
            result.pop(key, None)
        elif isinstance(value, list) and isinstance(result.get(key), list):
            result[key] = _merge_list(key, result[key], value)
        else:
            result[key] = strategic_merge_patch(result.get(key), value)
    return result


def _merge_list(field_name: str, current: list, patch: list) -> list:
    key = merge_key(field_name, current + patch)
    if key is None:
        return [clone(i) for i in patch if not (isinstance(i, dict) and "$patch" in i)]
    merged = [clone(i) for i in current]
    for item in patch:
        index = next((n for n, cur in enumerate(merged) if cur.get(key) == item.get(key)), None)
        if item.get("$patch") == "delete":
            if index is not None:
                merged.pop(index)
        elif index is None:
            merged.append(strategic_merge_patch({}, item))
        else:
            merged[index] = strategic_merge_patch(merged[index], item)
    return merged


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise bad_request(f"the server rejected our request due to an error in our request: "
                          f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _parent(doc: Any, tokens: list[str]) -> Any:
    node = doc
    for token in tokens[:-1]:
        node = node[int(token)] if isinstance(node, list) else node[token]
    return node


def _get(doc: Any, tokens: list[str]) -> Any:
    node = doc
    for token in tokens:
        node = node[int(token)] if isinstance(node, list) else node[token]
    return node


def _add(doc: Any, tokens: list[str], value: Any) -> Any:
    if not tokens:
        return value
    parent, last = _parent(doc, tokens), tokens[-1]
    if isinstance(parent, list):
        parent.insert(len(parent) if last == "-" else int(last), value)
    else:
        parent[last] = value
    return doc


def _remove(doc: Any, tokens: list[str]) -> Any:
    parent, last = _parent(doc, tokens), tokens[-1]
    if isinstance(parent, list):
        return parent.pop(int(last))
    return parent.pop(last)


def json_patch(target: Any, operations: Any) -> Any:
    """RFC 6902 add/remove/replace/move/copy/test; a failing op or test is an error, as upstream."""
    if not isinstance(operations, list):
        raise bad_request("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    doc = clone(target)
    for op in operations:
        kind, tokens = op.get("op"), _pointer(op.get("path", ""))
        try:
            if kind == "add":
                doc = _add(doc, tokens, clone(op["value"]))
            elif kind == "remove":
                _remove(doc, tokens)
            elif kind == "replace":
                _get(doc, tokens)  # the target must exist
                if tokens:
                    parent, last = _parent(doc, tokens), tokens[-1]
                    parent[int(last) if isinstance(parent, list) else last] = clone(
                        op["value"])
                else:
                    doc = clone(op["value"])
            elif kind in ("move", "copy"):
                source = _pointer(op["from"])
                value = _remove(doc, source) if kind == "move" else clone(
                    _get(doc, source))
                doc = _add(doc, tokens, value)
            elif kind == "test":
                if _get(doc, tokens) != op.get("value"):
                    raise ApiError(422, f"the server rejected our request due to an error in "
                                        f"our request: testing value {op.get('path')} failed")
            else:
                raise bad_request(f"Unexpected kind: {kind}")
        except (KeyError, IndexError, ValueError, TypeError) as exc:
            raise ApiError(422, f"the server rejected our request due to an error in our "
                                f"request: {kind} operation does not apply: doc is missing path: "
                                f"{op.get('path')}: {exc}") from exc
    return doc
