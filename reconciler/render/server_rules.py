"""The API server's own rules, offline: what a kube-apiserver refuses that the OpenAPI schemas do not say.

The schemas (reconciler.render.schemas) check types and fields; the server's validation code also checks
names, labels and annotations (k8s.io/apimachinery/pkg/api/validation, pkg/apis/*/validation): a
Service name longer than 63 characters passes every schema and gets 422 at apply. These checks run
at render, so `render` and the PR's `plan` refuse what `sync` would be refused, as a model error with
the limit and the fix.

Each rule mirrors the server's (tests/test_server_rules.py puts a corpus of names and labels through
these functions and through the real API server's dry run, and requires the same verdict):

* metadata.name per kind: a DNS-1035 label for Services (63, starts with a letter; servers with
  KEP-5311's RelaxedServiceNameValidation, beta and on by default from 1.36, take a DNS-1123 label:
  the offline check keeps the stricter rule by default, which every server accepts), a DNS-1123 label
  for Namespaces (63), a DNS-1123 subdomain (253) for every other kind, custom resources included;
  Jobs 63 (the server labels their Pods with the Job's name), CronJobs 52 (their Jobs get 11 more).
* metadata.namespace: a DNS-1123 label.
* labels everywhere the server reads them (metadata, a pod template's, label selectors, a Service's
  selector): qualified-name keys (an optional DNS-1123 subdomain prefix of 253, '/', a name of 63),
  values of at most 63 characters, alphanumeric at both ends, '-', '_' and '.' inside.
* annotations: qualified-name keys, 256 KiB of keys and values in all.
* a Deployment's selector must match its pod template's labels; container and volume names are
  DNS-1123 labels, unique in the pod; container port names IANA service names (15, a letter, no '--'),
  unique in their container; a Service's port names and (port, protocol) pairs are unique.
* annotations' total is counted in bytes of UTF-8, as the server does.

Immutable fields of objects that already exist: `immutable_changes(old, new)` for the plan, which
has the base revision's objects (the hydrated base).
"""

from __future__ import annotations

import json
import re
from typing import Any

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
IANA_SVC_NAME = re.compile(r"^[-a-z0-9]+$")
LABEL_MAX, SUBDOMAIN_MAX, IANA_MAX = 63, 253, 15
ANNOTATIONS_MAX = 256 * 1024

# metadata.name rule per kind: (what, pattern, max length)
_LABEL = ("a DNS-1123 label", DNS1123_LABEL, LABEL_MAX)
_SUBDOMAIN = ("a DNS-1123 subdomain", DNS1123_SUBDOMAIN, SUBDOMAIN_MAX)
NAME_RULES: dict[str, tuple[str, re.Pattern, int]] = {
    "Service": ("a DNS-1035 label", DNS1035_LABEL, LABEL_MAX),
    "Namespace": _LABEL,
    "Job": ("a DNS-1123 subdomain of at most 63 characters (its Pods are labelled with it)",
            DNS1123_SUBDOMAIN, LABEL_MAX),
    "CronJob": ("a DNS-1123 subdomain of at most 52 characters (its Jobs add 11)", DNS1123_SUBDOMAIN, 52),
}
# kinds whose names the server checks as path segments only (RBAC), not as DNS names
PATH_SEGMENT_KINDS = frozenset({"Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"})
POD_TEMPLATE_KINDS = frozenset({"Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "Job"})


def _dns(value: str, what: str, pattern: re.Pattern, limit: int) -> str | None:
    if len(value) > limit:
        return f"{value!r} is {len(value)} characters, over the {limit} of {what}"
    if not pattern.match(value):
        chars = "lowercase letters, digits, '-' and '.'" if pattern is DNS1123_SUBDOMAIN else \
            "lowercase letters, digits and '-'"
        start = "a letter" if pattern is DNS1035_LABEL else "a letter or digit"
        return f"{value!r} is not {what} ({chars}, starting with {start} and ending with a letter or digit)"
    return None


def qualified_name_problem(key: str) -> str | None:
    """The server's IsQualifiedName: [prefix/]name."""
    prefix, slash, name = key.rpartition("/")
    if slash and not prefix:
        return f"key {key!r} has an empty prefix"
    if key.count("/") > 1:
        return f"key {key!r} has more than one '/'"
    if prefix:
        if len(prefix) > SUBDOMAIN_MAX or not DNS1123_SUBDOMAIN.match(prefix):
            return f"key {key!r}: its prefix is not a DNS-1123 subdomain of at most {SUBDOMAIN_MAX} characters"
    if not name:
        return f"key {key!r} has an empty name"
    if len(name) > LABEL_MAX:
        return f"key {key!r}: its name part is {len(name)} characters, over the {LABEL_MAX} allowed"
    if not QUALIFIED_NAME.match(name):
        return f"key {key!r}: its name part must be alphanumeric at both ends, with '-', '_' or '.' inside"
    return None


def label_value_problem(value: Any) -> str | None:
    if not isinstance(value, str):
        return None  # the schema reports a non-string
    if len(value) > LABEL_MAX:
        return f"value {value!r} is {len(value)} characters, over the {LABEL_MAX} of a label value"
    if not LABEL_VALUE.match(value):
        return f"value {value!r} must be empty or alphanumeric at both ends, with '-', '_' or '.' inside"
    return None


def _labels(where: str, labels: Any) -> list[str]:
    if not isinstance(labels, dict):
        return []
    found = []
    for key, value in labels.items():
        problem = qualified_name_problem(str(key)) or label_value_problem(value)
        if problem:
            found.append(f"at {where}: label {problem}")
    return found


def _selector(where: str, selector: Any) -> list[str]:
    if not isinstance(selector, dict):
        return []
    found = _labels(f"{where}.matchLabels", selector.get("matchLabels"))
    for i, expr in enumerate(selector.get("matchExpressions") or []):
        if not isinstance(expr, dict):
            continue
        problem = qualified_name_problem(str(expr.get("key", "")))
        if problem:
            found.append(f"at {where}.matchExpressions.{i}.key: label {problem}")
        for j, value in enumerate(expr.get("values") or []):
            problem = label_value_problem(value)
            if problem:
                found.append(f"at {where}.matchExpressions.{i}.values.{j}: label {problem}")
    return found


def _metadata(where: str, meta: Any) -> list[str]:
    if not isinstance(meta, dict):
        return []
    found = _labels(f"{where}.labels", meta.get("labels"))
    annotations = meta.get("annotations")
    if isinstance(annotations, dict):
        total = 0
        for key, value in annotations.items():
            problem = qualified_name_problem(str(key).lower())
            if problem:
                found.append(f"at {where}.annotations: annotation {problem}")
            # the server counts bytes (Go's len of a string): "é" is 2 of them
            total += len(str(key).encode()) + len((str(value) if value is not None else "").encode())
        if total > ANNOTATIONS_MAX:
            found.append(f"at {where}.annotations: {total} bytes of annotations, over the {ANNOTATIONS_MAX} allowed")
    return found


def _pod_spec(where: str, spec: Any) -> list[str]:
    if not isinstance(spec, dict):
        return []
    found = []
    containers: set[str] = set()  # init and app containers share one namespace of names
    for group in ("initContainers", "containers"):
        for i, container in enumerate(spec.get(group) or []):
            if not isinstance(container, dict):
                continue
            name = container.get("name")
            if isinstance(name, str):
                problem = _dns(name, "a DNS-1123 label", DNS1123_LABEL, LABEL_MAX) or _duplicate(name, containers)
                if problem:
                    found.append(f"at {where}.{group}.{i}.name: {problem}")
            port_names: set[str] = set()
            for j, port in enumerate(container.get("ports") or []):
                port_name = port.get("name") if isinstance(port, dict) else None
                if isinstance(port_name, str) and port_name:
                    problem = iana_problem(port_name) or _duplicate(port_name, port_names)
                    if problem:
                        found.append(f"at {where}.{group}.{i}.ports.{j}.name: {problem}")
    volumes: set[str] = set()
    for i, volume in enumerate(spec.get("volumes") or []):
        name = volume.get("name") if isinstance(volume, dict) else None
        if isinstance(name, str):
            problem = _dns(name, "a DNS-1123 label", DNS1123_LABEL, LABEL_MAX) or _duplicate(name, volumes)
            if problem:
                found.append(f"at {where}.volumes.{i}.name: {problem}")
    return found


def _duplicate(value: object, seen: set) -> str | None:
    """'duplicate' when `value` was seen before (and remember it): the server refuses repeated names."""
    if value in seen:
        return f"{value!r} is a duplicate (names must be unique here)"
    seen.add(value)
    return None


def iana_problem(name: str) -> str | None:
    if len(name) > IANA_MAX:
        return f"{name!r} is {len(name)} characters, over the {IANA_MAX} of a port name"
    if not IANA_SVC_NAME.match(name) or "--" in name or name.startswith("-") or name.endswith("-") \
            or not re.search(r"[a-z]", name):
        return f"{name!r} is not a port name (lowercase letters, digits and '-', a letter, no '--')"
    return None


def name_problem(kind: str, name: str, *, relaxed_service_names: bool = False) -> str | None:
    """The server's verdict on metadata.name for this kind, or None when it accepts it."""
    if kind == "Service" and relaxed_service_names:
        return _dns(name, "a DNS-1123 label", DNS1123_LABEL, LABEL_MAX)
    if kind in PATH_SEGMENT_KINDS:
        if name in (".", "..") or "/" in name or "%" in name:
            return f"{name!r} may not be '.', '..' or contain '/' or '%'"
        return None
    what, pattern, limit = NAME_RULES.get(kind, _SUBDOMAIN)
    return _dns(name, what, pattern, limit)


def problems(obj: dict, *, relaxed_service_names: bool = False) -> list[str]:
    """What the API server would refuse in one object, as 'at <path>: <problem>'. Pure.
    ``relaxed_service_names``: the server has RelaxedServiceNameValidation (Kubernetes >= 1.36 by default)."""
    found: list[str] = []
    kind = str(obj.get("kind", ""))
    meta: dict = obj["metadata"] if isinstance(obj.get("metadata"), dict) else {}
    name = meta.get("name")
    if isinstance(name, str):
        problem = name_problem(kind, name, relaxed_service_names=relaxed_service_names)
        if problem:
            found.append(f"at metadata.name: {problem}")
    namespace = meta.get("namespace")
    if isinstance(namespace, str) and namespace:
        problem = _dns(namespace, "a DNS-1123 label", DNS1123_LABEL, LABEL_MAX)
        if problem:
            found.append(f"at metadata.namespace: {problem}")
    found += _metadata("metadata", meta)
    spec: dict = obj["spec"] if isinstance(obj.get("spec"), dict) else {}
    if kind in POD_TEMPLATE_KINDS:
        template: dict = spec["template"] if isinstance(spec.get("template"), dict) else {}
        found += _metadata("spec.template.metadata", template.get("metadata"))
        found += _pod_spec("spec.template.spec", template.get("spec"))
        found += _selector("spec.selector", spec.get("selector"))
        selector = spec["selector"].get("matchLabels") if isinstance(spec.get("selector"), dict) else None
        template_meta = template.get("metadata")
        labels = template_meta.get("labels") if isinstance(template_meta, dict) else {}
        if kind != "Job" and isinstance(selector, dict) and isinstance(labels, dict) and \
                any(labels.get(k) != v for k, v in selector.items()):
            found.append("at spec.template.metadata.labels: `selector` does not match template `labels`")
    elif kind == "Pod":
        found += _pod_spec("spec", spec)
    if kind == "Service":
        found += _labels("spec.selector", spec.get("selector"))
        names: set[str] = set()
        ports: set[tuple] = set()
        for i, port in enumerate(spec.get("ports") or []):
            if not isinstance(port, dict):
                continue
            port_name = port.get("name")
            if isinstance(port_name, str) and port_name:
                problem = _dns(port_name, "a DNS-1123 label", DNS1123_LABEL, LABEL_MAX) or _duplicate(port_name, names)
                if problem:
                    found.append(f"at spec.ports.{i}.name: {problem}")
            if isinstance(port.get("port"), int):
                problem = _duplicate((port["port"], port.get("protocol") or "TCP"), ports)
                if problem:
                    found.append(f"at spec.ports.{i}: port {port['port']}/{port.get('protocol') or 'TCP'} is a duplicate")
    if kind in ("PodDisruptionBudget", "NetworkPolicy"):
        found += _selector("spec.selector" if kind == "PodDisruptionBudget" else "spec.podSelector",
                           spec.get("selector" if kind == "PodDisruptionBudget" else "podSelector"))
    return found


# --------------------------------------------------------------------------- immutable fields

def _at(obj: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


# (kind, field path): fields the server refuses to change on an existing object
IMMUTABLE: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Deployment", ("spec", "selector")),
    ("ReplicaSet", ("spec", "selector")),
    ("DaemonSet", ("spec", "selector")),
    ("StatefulSet", ("spec", "selector")),
    ("StatefulSet", ("spec", "serviceName")),
    ("StatefulSet", ("spec", "volumeClaimTemplates")),
    ("Job", ("spec", "selector")),
    ("Job", ("spec", "template")),
    ("Service", ("spec", "clusterIP")),
    ("PersistentVolumeClaim", ("spec", "storageClassName")),
    ("PersistentVolumeClaim", ("spec", "accessModes")),
)


def immutable_changes(old: dict, new: dict) -> list[str]:
    """The immutable fields `new` changes on the existing object `old` (same kind, namespace and name),
    as 'at <path>: ...'. A field the new object leaves out is not a change (the server keeps it). Pure."""
    kind = new.get("kind")
    found = []
    for rule_kind, path in IMMUTABLE:
        if rule_kind != kind:
            continue
        before, after = _at(old, path), _at(new, path)
        if after is None or before is None or _canonical(before) == _canonical(after):
            continue
        found.append(f"at {'.'.join(path)}: field is immutable (was {_short(before)}, now {_short(after)})")
    if kind in ("ConfigMap", "Secret") and old.get("immutable") is True:
        for key in ("data", "binaryData", "stringData"):
            if key in new and _canonical(old.get(key)) != _canonical(new.get(key)):
                found.append(f"at {key}: the {kind} is immutable (immutable: true) and its {key} changed")
    return found


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _short(value: Any) -> str:
    text = _canonical(value)
    return text if len(text) <= 80 else text[:77] + "..."
