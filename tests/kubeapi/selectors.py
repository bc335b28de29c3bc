"""Label and field selectors as the apiserver parses them from list/watch/deletecollection queries.

Simplified: field selectors support only ``metadata.name`` and ``metadata.namespace`` (with ``=``,
``==`` and ``!=``), which is what every resource supports on a real server.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from tests.kubeapi.errors import bad_request

Predicate = Callable[[dict], bool]

_SET_RE = re.compile(r"^\s*([^\s!=]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")
_EQ_RE = re.compile(r"^\s*([^\s!=]+)\s*(==|!=|=)\s*([^\s,]*)\s*$")
_EXISTS_RE = re.compile(r"^\s*(!?)\s*([^\s!=(),]+)\s*$")
_FIELDS = {"metadata.name": ("name",), "metadata.namespace": ("namespace",)}


def _split_requirements(selector: str) -> list[str]:
    """Split on commas that are not inside a ``(...)`` value set."""
    parts, depth, current = [], 0, []
    for char in selector:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [p for p in parts if p.strip()]


def _requirement(text: str) -> Predicate:
    if m := _SET_RE.match(text):
        key, op, raw = m.groups()
        values = {v.strip() for v in raw.split(",") if v.strip()}
        if op == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    if m := _EQ_RE.match(text):
        key, op, value = m.groups()
        if op == "!=":
            return lambda labels: labels.get(key) != value
        return lambda labels: labels.get(key) == value
    if m := _EXISTS_RE.match(text):
        negated, key = m.groups()
        if negated:
            return lambda labels: key not in labels
        return lambda labels: key in labels
    raise bad_request(f"unable to parse requirement: {text!r}")


def label_selector(selector: str | None) -> Predicate:
    """A predicate over an object's labels; raises 400 BadRequest on a malformed selector."""
    if not selector:
        return lambda obj: True
    requirements = [_requirement(part) for part in _split_requirements(selector)]

    def matches(obj: dict) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return all(req(labels) for req in requirements)

    return matches


def field_selector(selector: str | None) -> Predicate:
    """A predicate over ``metadata.name`` / ``metadata.namespace``; other fields are a 400."""
    if not selector:
        return lambda obj: True
    checks: list[Predicate] = []
    for part in _split_requirements(selector):
        m = _EQ_RE.match(part)
        if not m or m.group(1) not in _FIELDS:
            raise bad_request(f'field label not supported: {part.split("=")[0].rstrip("!")}')
        key, op, value = m.groups()
        attr = _FIELDS[key][0]
        if op == "!=":
            checks.append(lambda o, a=attr, v=value: (o.get("metadata") or {}).get(a, "") != v)
        else:
            checks.append(lambda o, a=attr, v=value: (o.get("metadata") or {}).get(a, "") == v)
    return lambda obj: all(check(obj) for check in checks)


def selector_to_string(match_labels: dict[str, str]) -> str:
    """The string form of a matchLabels selector, as the Scale subresource reports it."""
    return ",".join(f"{k}={v}" for k, v in sorted(match_labels.items()))
