"""Offline schema validation of Kubernetes objects, strict (unknown fields are errors).

The schemas are those the `kubernetes-validate` package ships. Its `validate()` re-reads and
re-parses the 1.4 MB definitions file and rebuilds the `$ref` registry on every call (about 20 ms
an object). Here one validator per (apiVersion, kind) is compiled once and reused, and every
error of an object is reported, not only the first.

Two validators of the same schemas: `jsonschema-rs` (compiled, Rust: about 7 µs an object against
about 360 µs for the pure-Python `jsonschema`) answers "valid or not" for every object; only an
object it finds invalid is validated again with `jsonschema`, whose messages the errors quote (so
they read the same as before the fast path existed). Neither asserts `format` (both treat it as an
annotation under draft 2020-12, as the API server's own schemas do not enforce int32/int64 here).
tests/test_schemas_fast.py checks that the two agree on valid and mutated objects.

Both libraries (and `referencing`, `attrs`, `rpds` behind jsonschema: about a sixth of a plan command's start-up)
are imported on the first validation, not with this module: a plan that renders nothing validates nothing.
"""

from __future__ import annotations

import difflib
import functools
import json
import re
from importlib import resources
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import jsonschema
    from referencing import Resource

KUBERNETES_VERSION = "1.33"
SCHEMA_DIR = f"kubernetes-json-schema/v{KUBERNETES_VERSION}.0-local-strict"


@functools.lru_cache(maxsize=1)
def _definitions_json() -> dict:
    return json.loads(resources.files("kubernetes_validate").joinpath(SCHEMA_DIR, "_definitions.json").read_text())


@functools.lru_cache(maxsize=1)
def _definitions() -> Resource:
    from referencing import Resource

    return Resource.from_contents(_definitions_json())


def _group_version(api_version: str) -> str:
    # rbac.authorization.k8s.io/v1 -> rbac-v1; apps/v1 -> apps-v1; v1 -> v1
    return re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)


@functools.lru_cache(maxsize=None)
def schema(api_version: str, kind: str) -> dict | None:
    """The JSON schema of a built-in kind, or None for kinds without one (custom resources)."""
    path = resources.files("kubernetes_validate").joinpath(SCHEMA_DIR, f"{kind.lower()}-{_group_version(api_version)}.json")
    return json.loads(path.read_text()) if path.is_file() else None


@functools.lru_cache(maxsize=None)
def validator(api_version: str, kind: str) -> jsonschema.Draft202012Validator | None:
    """The pure-Python validator of a built-in kind (its messages are the ones reported), or None."""
    import jsonschema
    from referencing import Registry, Resource

    found = schema(api_version, kind)
    if found is None:
        return None
    registry = _definitions() @ (Resource.from_contents(found) @ Registry())
    return jsonschema.Draft202012Validator(found, registry=registry)


@functools.lru_cache(maxsize=None)
def fast_validator(api_version: str, kind: str) -> Any:
    """The compiled (jsonschema-rs) validator of a built-in kind, or None (no schema)."""
    import jsonschema_rs

    found = schema(api_version, kind)
    if found is None:
        return None
    definitions = _definitions_json()
    registry = jsonschema_rs.Registry([(definitions["$id"], definitions)])
    return jsonschema_rs.Draft202012Validator(found, registry=registry, validate_formats=False,
                                              base_uri=found.get("$id"))


def is_valid(obj: dict) -> bool | None:
    """The compiled validator's verdict on one object; None when it cannot tell (no schema, or a
    value it cannot read, such as a YAML timestamp): the caller asks `jsonschema`."""
    check = fast_validator(str(obj.get("apiVersion", "")), str(obj.get("kind", "")))
    if check is None:
        return None
    try:
        return bool(check.is_valid(obj))
    except Exception:  # a Python value outside JSON (datetime, a huge int): the slow path decides
        return None


# API groups served by every Kubernetes API server: a kind there without a schema is a typo (kind:
# Deploymnet), never a custom resource, so it is an error at render time instead of at sync.
# Exact names: gateway.networking.k8s.io or monitoring.coreos.com are custom resources.
BUILTIN_GROUPS = frozenset({"", "apps", "batch", "autoscaling", "networking.k8s.io", "policy",
                            "rbac.authorization.k8s.io", "storage.k8s.io", "scheduling.k8s.io",
                            "coordination.k8s.io", "discovery.k8s.io", "node.k8s.io"})


@functools.lru_cache(maxsize=None)
def known_kinds(api_version: str) -> tuple[str, ...]:
    """Kinds with a schema in one built-in group/version, for the error message (lower-cased file names)."""
    suffix = f"-{_group_version(api_version)}.json"
    folder = resources.files("kubernetes_validate").joinpath(SCHEMA_DIR)
    return tuple(sorted(f.name[:-len(suffix)] for f in folder.iterdir()
                        if f.name.endswith(suffix) and "-" not in f.name[:-len(suffix)]))


def slow_problems(check: jsonschema.Draft202012Validator, obj: dict) -> list[str]:
    """Every schema error of one object, by the pure-Python validator, as 'at path: message'."""
    found = []
    for error in sorted(check.iter_errors(obj), key=lambda e: [str(p) for p in e.absolute_path]):
        path = ".".join(str(p) for p in error.absolute_path) or "(root)"
        found.append(f"at {path}: {error.message}")
    return found


def _fast_problems(obj: dict) -> list[str]:
    """The compiled validator's own messages: only when it finds an object invalid that `jsonschema`
    accepts (the two disagree; never seen in tests), so that its verdict is not lost."""
    check = fast_validator(str(obj.get("apiVersion", "")), str(obj.get("kind", "")))
    found = []
    for error in check.iter_errors(obj):
        path = ".".join(str(p) for p in error.instance_path) or "(root)"
        found.append(f"at {path}: {error.message}")
    return sorted(found)


def problems(obj: dict) -> list[str] | None:
    """Every schema error of one object as 'path: message', or None when its kind has no schema
    (a custom resource; an unknown kind of a built-in API group is an error)."""
    api_version, kind = str(obj.get("apiVersion", "")), str(obj.get("kind", ""))
    if schema(api_version, kind) is None:
        group = api_version.rpartition("/")[0] if "/" in api_version else ""
        if group in BUILTIN_GROUPS:
            close = difflib.get_close_matches(kind.lower(), known_kinds(api_version), n=1)
            hint = f" (did you mean {close[0]!r}, case aside?)" if close else ""
            return [f"kind {kind!r} does not exist in the built-in API {api_version!r}{hint}: "
                    "Kubernetes would refuse it"]
        return None
    verdict = is_valid(obj)
    if verdict is True:
        return []
    check = validator(api_version, kind)
    assert check is not None
    found = slow_problems(check, obj)
    if not found and verdict is False:
        return _fast_problems(obj)
    return found
