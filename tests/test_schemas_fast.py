"""The compiled validator (jsonschema-rs) and the pure-Python one (jsonschema) agree, and errors read as before."""

from __future__ import annotations

import copy
import datetime
import random

import pytest

from reconciler.catalog.load import load_catalog
from reconciler.errors import ValidationError
from reconciler.render import schemas
from reconciler.render.environment import render_environment, validate_objects, with_content_hash
from tests.envtest import UPSTREAM_CRDS


@pytest.fixture(scope="module")
def rendered(tmp_path_factory, example_dvc_storage):
    from tests.conftest import copy_template

    root = copy_template(tmp_path_factory.mktemp("schemas") / "repo")
    catalog = load_catalog(root)
    images = {m: f"registry.test/{m}:0123456789ab" for m in catalog.models}
    objects = []
    for env in sorted(catalog.environments):
        result = render_environment(catalog, env, images=images, validate=False)
        assert result.errors == {}
        objects.extend(result.objects())
    return objects


# the groups of the custom resources a render may hold (KEDA, prometheus-operator, Gateway API, Istio): no
# built-in schema validates them; the real API server does, with the upstream CRDs tests/envtest.py installs
CUSTOM_GROUPS = frozenset(name.split("_")[0] for name in UPSTREAM_CRDS)


def _paths(node, prefix=()):
    """Every (path, value) of a JSON-like tree."""
    yield prefix, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*prefix, i))


def _set(obj, path, value):
    for p in path[:-1]:
        obj = obj[p]
    obj[path[-1]] = value


def _mutations(obj, rng):
    """Objects one edit away from a valid one: wrong types, unknown fields, removed fields, nulls."""
    paths = [p for p, _ in _paths(obj) if p and p not in (("apiVersion",), ("kind",))]  # those pick the schema
    for _ in range(12):
        path = rng.choice(paths)
        out = copy.deepcopy(obj)
        edit = rng.choice(["type", "unknown", "remove", "null", "list", "bool"])
        parent = out
        for p in path[:-1]:
            parent = parent[p]
        if edit == "type":
            value = parent[path[-1]]
            _set(out, path, 7 if isinstance(value, str) else "seven")
        elif edit == "unknown" and isinstance(parent, dict):
            parent["bogusField"] = 1
        elif edit == "remove" and isinstance(parent, dict):
            del parent[path[-1]]
        elif edit == "null":
            _set(out, path, None)
        elif edit == "list":
            _set(out, path, [1, "x"])
        else:
            _set(out, path, True)
        yield out


def test_the_two_validators_agree_on_rendered_and_mutated_objects(rendered):
    rng = random.Random(13)
    kinds = {(o["apiVersion"], o["kind"]) for o in rendered}
    assert {"Deployment", "Service"} <= {k for _, k in kinds}
    checked = invalid = 0
    for obj in rendered:
        if obj["apiVersion"].split("/")[0] in CUSTOM_GROUPS:  # a custom resource: its CRD checks it on envtest
            continue
        slow = schemas.validator(obj["apiVersion"], obj["kind"])
        assert slow is not None and schemas.fast_validator(obj["apiVersion"], obj["kind"]) is not None
        for candidate in [obj, *_mutations(obj, rng)]:
            verdict = schemas.is_valid(candidate)
            messages = schemas.slow_problems(slow, candidate)
            assert verdict is (not messages), (candidate, messages)
            checked += 1
            invalid += bool(messages)
    assert checked > 100 and invalid > checked // 3  # the mutations do produce invalid objects


def test_an_invalid_object_reports_every_jsonschema_message(rendered):
    deployment = copy.deepcopy(next(o for o in rendered if o["kind"] == "Deployment"))
    deployment["spec"]["replicas"] = "two"
    deployment["spec"]["template"]["spec"]["bogus"] = 1
    assert schemas.is_valid(deployment) is False
    assert schemas.problems(deployment) == [
        "at spec.replicas: 'two' is not of type 'integer', 'null'",
        "at spec.template.spec: Additional properties are not allowed ('bogus' was unexpected)",
    ]
    with pytest.raises(ValidationError) as info:
        validate_objects([with_content_hash(deployment)], "m")
    name = deployment["metadata"]["name"]
    assert info.value.errors == [f"Deployment/{name} at spec.replicas: 'two' is not of type 'integer', 'null'",
                                   f"Deployment/{name} at spec.template.spec: Additional properties are not allowed "
                                   "('bogus' was unexpected)"]


def test_a_value_outside_json_goes_to_the_python_validator(rendered):
    service = copy.deepcopy(next(o for o in rendered if o["kind"] == "Service"))
    service["metadata"]["labels"]["when"] = datetime.date(2026, 12, 2)  # what an unquoted date in YAML becomes
    assert schemas.is_valid(service) is None
    assert schemas.problems(service) == schemas.slow_problems(schemas.validator("v1", "Service"), service)
    assert schemas.problems(service)  # a date is not a string


def test_custom_resources_and_unknown_built_in_kinds(rendered):
    assert schemas.problems({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute"}) is None
    (message,) = schemas.problems({"apiVersion": "apps/v1", "kind": "Deploymnet"})
    assert "did you mean 'deployment'" in message
