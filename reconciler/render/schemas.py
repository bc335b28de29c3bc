"""Offline schema validation of Kubernetes objects, strict (unknown fields are errors).

The schemas are those the `kubernetes-validate` package ships. Its `validate()` re-reads and
re-parses the 1.4 MB definitions file and rebuilds the `$ref` registry on every call (about 20 ms
an object). Here one validator per (apiVersion, kind) is compiled once and reused, and every
error of an object is reported, not only the first.
"""

from __future__ import annotations

import difflib
import functools
import json
import re
from importlib import resources

import jsonschema
from referencing import Registry, Resource

KUBERNETES_VERSION = "1.33"
SCHEMA_DIR = f"kubernetes-json-schema/v{KUBERNETES_VERSION}.0-local-strict"


@functools.lru_cache(maxsize=1)
def _definitions() -> Resource:
    text = resources.files("kubernetes_validate").joinpath(SCHEMA_DIR, "_definitions.json").read_text()
    return Resource.from_contents(json.loads(text))


@functools.lru_cache(maxsize=None)
def validator(api_version: str, kind: str) -> jsonschema.Draft202012Validator | None:
    """The compiled validator of a built-in kind, or None for kinds without a schema (custom resources)."""
    # rbac.authorization.k8s.io/v1 -> rbac-v1; apps/v1 -> apps-v1; v1 -> v1
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    path = resources.files("kubernetes_validate").joinpath(SCHEMA_DIR, f"{kind.lower()}-{group_version}.json")
    if not path.is_file():
        return None
    schema = json.loads(path.read_text())
    registry = _definitions() @ (Resource.from_contents(schema) @ Registry())
    return jsonschema.Draft202012Validator(schema, registry=registry)


# API groups served by every Kubernetes API server: a kind there without a schema is a typo (kind:
# Deploymnet), never a custom resource, so it is an error at render time instead of at sync.
# Exact names: gateway.networking.k8s.io or monitoring.coreos.com are custom resources.
BUILTIN_GROUPS = frozenset({"", "apps", "batch", "autoscaling", "networking.k8s.io", "policy",
                            "rbac.authorization.k8s.io", "storage.k8s.io", "scheduling.k8s.io",
                            "coordination.k8s.io", "discovery.k8s.io", "node.k8s.io"})


@functools.lru_cache(maxsize=None)
def known_kinds(api_version: str) -> tuple[str, ...]:
    """Kinds with a schema in one built-in group/version, for the error message (lower-cased file names)."""
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    suffix = f"-{group_version}.json"
    folder = resources.files("kubernetes_validate").joinpath(SCHEMA_DIR)
    return tuple(sorted(f.name[:-len(suffix)] for f in folder.iterdir()
                        if f.name.endswith(suffix) and "-" not in f.name[:-len(suffix)]))


def problems(obj: dict) -> list[str] | None:
    """Every schema error of one object as 'path: message', or None when its kind has no schema
    (a custom resource; an unknown kind of a built-in API group is an error)."""
    api_version, kind = str(obj.get("apiVersion", "")), str(obj.get("kind", ""))
    check = validator(api_version, kind)
    if check is None:
        group = api_version.rpartition("/")[0] if "/" in api_version else ""
        if group in BUILTIN_GROUPS:
            close = difflib.get_close_matches(kind.lower(), known_kinds(api_version), n=1)
            hint = f" (did you mean {close[0]!r}, case aside?)" if close else ""
            return [f"kind {kind!r} does not exist in the built-in API {api_version!r}{hint}: "
                    "Kubernetes would refuse it"]
        return None
    found = []
    for error in sorted(check.iter_errors(obj), key=lambda e: [str(p) for p in e.absolute_path]):
        path = ".".join(str(p) for p in error.absolute_path) or "(root)"
        found.append(f"at {path}: {error.message}")
    return found
