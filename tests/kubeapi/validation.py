"""Object validation: built-in rules with the apiserver's field paths and messages, plus plug-ins.

Simplified: only metadata (name format, label syntax), the Deployment rules listed in
:func:`_deployment` and immutability of ``spec.selector`` are checked for built-ins; custom
resources get metadata checks only (no OpenAPI schema validation). Add more rules per kind with
:meth:`Validation.add`.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from tests.kubeapi.errors import Cause
from tests.kubeapi.registry import ResourceType

Validator = Callable[[dict, dict | None], list[Cause]]
"""``(new_object, old_object_or_None) -> causes``; an empty list means valid."""

_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_SUBDOMAIN_MSG = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                  "characters, '-' or '.', and must start and end with an alphanumeric character "
                  "(e.g. 'example.com', regex used for validation is "
                  "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
_LABEL_MSG = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or "
              "'-', and must start and end with an alphanumeric character (e.g. 'my-name',  or "
              "'123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')")
_DNS_LABEL_KINDS = {("", "Namespace"), ("", "Service")}


def go_map(value: dict) -> str:
    """Render a string map the way Go's %#v does in apiserver messages."""
    body = ", ".join(f'"{k}":"{v}"' for k, v in sorted(value.items()))
    return "map[string]string{" + body + "}"


def _name_causes(rtype: ResourceType, name: str) -> list[Cause]:
    if rtype.group == "rbac.authorization.k8s.io":
        if name in (".", "..") or "/" in name or "%" in name:
            return [Cause("metadata.name", f'Invalid value: "{name}": may not contain \'/\' or \'%\'')]
        return []
    if (rtype.group, rtype.kind) in _DNS_LABEL_KINDS:
        if len(name) > 63:
            return [Cause("metadata.name", f'Invalid value: "{name}": must be no more than 63 '
                                           f"characters")]
        if not _LABEL.match(name):
            return [Cause("metadata.name", f'Invalid value: "{name}": {_LABEL_MSG}')]
        return []
    if len(name) > 253:
        return [Cause("metadata.name", f'Invalid value: "{name}": must be no more than 253 '
                                       f"characters")]
    if not _SUBDOMAIN.match(name):
        return [Cause("metadata.name", f'Invalid value: "{name}": {_SUBDOMAIN_MSG}')]
    return []


def _label_causes(labels: dict, path: str) -> list[Cause]:
    causes = []
    for key, value in labels.items():
        prefix, _, name = str(key).rpartition("/")
        if (len(name) > 63 or not _QUALIFIED_NAME.match(name)
                or (prefix and not _SUBDOMAIN.match(prefix))):
            causes.append(Cause(path, f'Invalid value: "{key}": name part must consist of '
                                      f"alphanumeric characters, '-', '_' or '.', and must start "
                                      f"and end with an alphanumeric character"))
        if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
            causes.append(Cause(path, f'Invalid value: "{value}": a valid label must be an empty '
                                      f"string or consist of alphanumeric characters, '-', '_' or "
                                      f"'.', and must start and end with an alphanumeric "
                                      f"character, and be at most 63 characters"))
    return causes


def _metadata(rtype: ResourceType, obj: dict) -> list[Cause]:
    causes = []
    if not obj.get("apiVersion"):
        causes.append(Cause("apiVersion", "Required value", "FieldValueRequired"))
    if not obj.get("kind"):
        causes.append(Cause("kind", "Required value", "FieldValueRequired"))
    meta = obj.get("metadata") or {}
    name = meta.get("name")
    if not name:
        causes.append(Cause("metadata.name", "Required value: name or generateName is required",
                            "FieldValueRequired"))
    else:
        causes += _name_causes(rtype, str(name))
    causes += _label_causes(meta.get("labels") or {}, "metadata.labels")
    return causes


def selector_matches(selector: dict, labels: dict) -> bool:
    """Whether a LabelSelector (matchLabels + matchExpressions) selects ``labels``."""
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if ((op == "In" and labels.get(key) not in values)
                or (op == "NotIn" and key in labels and labels[key] in values)
                or (op == "Exists" and key not in labels)
                or (op == "DoesNotExist" and key in labels)):
            return False
    return True


def _deployment(obj: dict, old: dict | None) -> list[Cause]:
    spec = obj.get("spec") or {}
    causes = []
    replicas = spec.get("replicas")
    if isinstance(replicas, int) and replicas < 0:
        causes.append(Cause("spec.replicas", f"Invalid value: {replicas}: must be greater than "
                                             f"or equal to 0"))
    selector = spec.get("selector")
    template_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    if not selector:
        causes.append(Cause("spec.selector", "Required value", "FieldValueRequired"))
    elif not (selector.get("matchLabels") or selector.get("matchExpressions")):
        causes.append(Cause("spec.selector", "Invalid value: v1.LabelSelector{MatchLabels:"
                                             "map[string]string(nil), MatchExpressions:[]v1."
                                             "LabelSelectorRequirement(nil)}: empty selector is "
                                             "invalid for deployment"))
    elif not selector_matches(selector, template_labels):
        causes.append(Cause("spec.template.metadata.labels",
                            f"Invalid value: {go_map(template_labels)}: `selector` does not "
                            f"match template `labels`"))
    if old is not None and selector and (old.get("spec") or {}).get("selector") != selector:
        causes.append(Cause("spec.selector", f"Invalid value: {selector}: field is immutable"))
    containers = ((spec.get("template") or {}).get("spec") or {}).get("containers") or []
    if not containers:
        causes.append(Cause("spec.template.spec.containers", "Required value",
                            "FieldValueRequired"))
    for i, container in enumerate(containers):
        for key in ("name", "image"):
            if not container.get(key):
                causes.append(Cause(f"spec.template.spec.containers[{i}].{key}",
                                    "Required value", "FieldValueRequired"))
    return causes


class Validation:
    """Built-in validation plus validators registered per (group, kind)."""

    def __init__(self) -> None:
        self._extra: dict[tuple[str, str], list[Validator]] = {}

    def add(self, group: str, kind: str, validator: Validator) -> None:
        self._extra.setdefault((group, kind), []).append(validator)

    def clear(self) -> None:
        self._extra.clear()

    def validate(self, rtype: ResourceType, obj: dict, old: dict | None) -> list[Cause]:
        causes = _metadata(rtype, obj)
        if rtype.builtin and (rtype.group, rtype.kind) == ("apps", "Deployment"):
            causes += _deployment(obj, old)
        for validator in self._extra.get((rtype.group, rtype.kind), []):
            causes += validator(obj, old)
        return causes
