"""Patches must match: kustomize's patch target selectors, evaluated against the generated objects.

kustomize applies a `patches[].target` patch to every object its selector matches, and silently
does nothing when it matches none: a typo (`kind: Deploymnet`) drops the patch with exit 0 and
sync then applies objects without it. Pure functions: the selector semantics are kustomize's
(`types.Selector`): group, version, kind, name and namespace are anchored regular expressions,
labelSelector and annotationSelector are Kubernetes label selectors.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SELECTOR_FIELDS = ("group", "version", "kind", "name", "namespace", "labelSelector", "annotationSelector")
IDENTITY_FIELDS = ("group", "version", "kind")  # what a partial render (some models only) can still check


@dataclass(frozen=True)
class BadSelector(Exception):
    field: str
    message: str


def _regex(selector: dict, key: str) -> re.Pattern | None:
    value = selector.get(key)
    if value in (None, ""):
        return None
    try:
        return re.compile(f"^(?:{value})$")
    except re.error as exc:
        raise BadSelector(key, f"{value!r} is not a regular expression: {exc}") from None


def _split_terms(text: str) -> list[str]:
    terms, depth, current = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            terms.append(current.strip())
            current = ""
        else:
            current += ch
    if current.strip():
        terms.append(current.strip())
    return terms


_SET = re.compile(r"^(?P<key>[^\s!=()]+)\s+(?P<op>in|notin)\s*\((?P<values>[^()]*)\)$")
_EQ = re.compile(r"^(?P<key>[^\s!=()]+)\s*(?P<op>==|=|!=)\s*(?P<value>[^\s!=()]*)$")
_EXISTS = re.compile(r"^(?P<neg>!?)\s*(?P<key>[^\s!=(),]+)$")


def label_selector_matches(text: str, labels: dict | None, field: str = "labelSelector") -> bool:
    """A Kubernetes label selector (`a=b,c!=d,e in (x,y),!f`) against a label map."""
    labels = {str(k): str(v) for k, v in (labels or {}).items()}
    for term in _split_terms(text):
        if m := _SET.match(term):
            values = {v.strip() for v in m["values"].split(",") if v.strip()}
            present = m["key"] in labels and labels[m["key"]] in values
            if present != (m["op"] == "in"):
                return False
        elif m := _EQ.match(term):
            equal = labels.get(m["key"]) == m["value"]
            if equal != (m["op"] != "!="):
                return False
        elif m := _EXISTS.match(term):
            if (m["key"] in labels) == bool(m["neg"]):
                return False
        else:
            raise BadSelector(field, f"{term!r} is not a label selector term (e.g. app=web, tier in (a,b), !canary)")
    return True


def matches(selector: dict, obj: dict, *, namespaces: tuple[str, ...] = (), identity_only: bool = False) -> bool:
    """Whether a kustomize target selector selects `obj`.

    `namespaces`: namespaces the object will also be in after kustomize (the environment's).
    `identity_only`: compare only group/version/kind (names and labels of other models are unknown).
    """
    api_version = str(obj.get("apiVersion", ""))
    group, _, version = api_version.rpartition("/")
    meta = obj.get("metadata") or {}
    values = {"group": group, "version": version, "kind": str(obj.get("kind", "")), "name": str(meta.get("name", ""))}
    for key in ("group", "version", "kind", "name"):
        if identity_only and key not in IDENTITY_FIELDS:
            continue
        pattern = _regex(selector, key)
        if pattern is not None and not pattern.match(values[key]):
            return False
    if identity_only:
        return True
    pattern = _regex(selector, "namespace")
    if pattern is not None and not any(pattern.match(ns) for ns in {str(meta.get("namespace", "")), *namespaces}):
        return False
    if selector.get("labelSelector") and not label_selector_matches(str(selector["labelSelector"]), meta.get("labels")):
        return False
    if selector.get("annotationSelector") and not label_selector_matches(
            str(selector["annotationSelector"]), meta.get("annotations"), "annotationSelector"):
        return False
    return True


def unknown_fields(selector: dict) -> list[str]:
    return sorted(str(k) for k in selector if k not in SELECTOR_FIELDS)
