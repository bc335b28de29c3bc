"""Offline schema validation of Kubernetes objects, strict (unknown fields are errors).

The schemas are those the `kubernetes-validate` package ships. Its `validate()` re-reads and
re-parses the 1.4 MB definitions file and rebuilds the `$ref` registry on every call (about 20 ms
an object). Here one validator per (apiVersion, kind) is compiled once and reused, and every
error of an object is reported, not only the first.
"""

from __future__ import annotations

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


def problems(obj: dict) -> list[str] | None:
    """Every schema error of one object as 'path: message', or None when its kind has no schema."""
    check = validator(str(obj.get("apiVersion", "")), str(obj.get("kind", "")))
    if check is None:
        return None
    found = []
    for error in sorted(check.iter_errors(obj), key=lambda e: [str(p) for p in e.absolute_path]):
        path = ".".join(str(p) for p in error.absolute_path) or "(root)"
        found.append(f"at {path}: {error.message}")
    return found
