"""Cluster-scoped objects several environments declare (reconciler/sync/shared.py), on the real API server.

Two environments sync to one cluster, each with its namespace and inventory, and both declare the same
PriorityClass (as staging and prod do with `priorityClasses:`). Before: both applied it as one field
manager with force, so an environment that stopped declaring it deleted it from under the other, and
each pass of one environment rewrote the other's `gitops.ml/environment` label.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable

import pytest

from reconciler import labels
from reconciler.errors import Conflict, NotFound
from reconciler.render.environment import ENVIRONMENT_GROUP, with_content_hash
from reconciler.results import Action, ObjectRef
from reconciler.sync.engine import sync_environment
from reconciler.sync.inventory import load_inventory
from reconciler.sync.planner import SyncOptions
from reconciler.sync.shared import (conflicts_by_manager, declaring_environments, environment_conflict,
                                    environment_manager, is_shared)


MANAGER = labels.MANAGER


def priority_class(name: str, value: int = 1000, description: str = "model serving pods") -> dict:
    return with_content_hash({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                              "metadata": {"name": name, "labels": {labels.MANAGED_BY: labels.MANAGER}},
                              "value": value, "description": description})


def service(model: str, ns: str, env: str) -> dict:
    return with_content_hash({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": model, "namespace": ns,
                     "labels": {labels.MANAGED_BY: labels.MANAGER, labels.MODEL: model, labels.ENVIRONMENT: env}},
        "spec": {"selector": {labels.MODEL: model}, "ports": [{"name": "http", "port": 80, "targetPort": 3000}]}})


class Env:
    """One environment of the shared cluster: its name, namespace and what git renders for it."""

    def __init__(self, kube, name: str, ns: str, shared: list[dict]) -> None:
        self.kube, self.name, self.ns, self.shared = kube, name, ns, shared

    @property
    def manager(self) -> str:
        return environment_manager(MANAGER, self.name, self.ns)

    def desired(self) -> dict[str, list[dict]]:
        out = {"model-a": [service("model-a", self.ns, self.name)]}
        if self.shared:
            out[ENVIRONMENT_GROUP] = list(self.shared)
        return out

    def sync(self, **options):
        return sync_environment(self.kube, self.name, self.ns, self.desired(), options=SyncOptions(**options))


@pytest.fixture
def two_envs(kube, new_namespace: Callable[..., str]):
    name = f"serving-{uuid.uuid4().hex[:8]}"  # cluster-scoped: unique per test on the shared server
    shared = [priority_class(name)]
    yield name, Env(kube, "alpha", new_namespace("alpha"), shared), Env(kube, "beta", new_namespace("beta"), shared)
    try:
        kube.delete(ObjectRef("scheduling.k8s.io/v1", "PriorityClass", None, name))
    except NotFound:
        pass


def writes(envtest, mark: int) -> list[str]:
    return [f"{e.verb} {e.resource}/{e.name}" for e in envtest.audit.since(mark, user="admin") if e.write]


def managers(kube, name: str) -> dict[str, str]:
    live = kube.get(ObjectRef("scheduling.k8s.io/v1", "PriorityClass", None, name))
    assert live is not None
    return {m["manager"]: m["operation"] for m in live["metadata"]["managedFields"]}


def test_two_environments_share_a_cluster_scoped_object_and_the_last_one_deletes_it(envtest, kube, two_envs):
    name, alpha, beta = two_envs
    ref = ObjectRef("scheduling.k8s.io/v1", "PriorityClass", None, name)
    for env in (alpha, beta):
        result = env.sync()
        assert result.ok, json.dumps(result.as_dict(), indent=1)
    # both environments are on record as declaring it, each as its own field manager
    assert {m: op for m, op in managers(kube, name).items() if m.startswith(MANAGER)} == {
        alpha.manager: "Apply", beta.manager: "Apply"}
    assert declaring_environments(kube.get(ref), MANAGER) == {f"alpha@{alpha.ns}", f"beta@{beta.ns}"}
    assert labels.ENVIRONMENT not in kube.get(ref)["metadata"]["labels"]

    # passes in turn write nothing: neither environment rewrites what the other applied
    mark = envtest.audit.mark()
    for env in (alpha, beta, alpha, beta):
        assert env.sync().summary().as_dict() == {"unchanged": 2}
    assert writes(envtest, mark) == []

    # beta stops declaring it: beta only releases its ownership, alpha's pods can still name it
    beta.shared = []
    result = beta.sync()
    assert result.ok, result.as_dict()
    (released,) = [r for r in result.objects if r.ref == ref]
    assert released.action is Action.pruned and "released, not deleted" in released.message
    assert "environment alpha@" in released.message
    assert kube.get(ref) is not None and kube.get(ref)["value"] == 1000
    assert alpha.manager in managers(kube, name) and beta.manager not in managers(kube, name)
    assert ref not in load_inventory(kube, "beta", beta.ns).entries
    mark = envtest.audit.mark()
    assert alpha.sync().summary().as_dict() == {"unchanged": 2}
    assert beta.sync().summary().as_dict() == {"unchanged": 1}
    assert writes(envtest, mark) == []

    # the last environment that declares it deletes it
    alpha.shared = []
    result = alpha.sync()
    assert result.ok, result.as_dict()
    (deleted,) = [r for r in result.objects if r.ref == ref]
    assert deleted.action is Action.pruned and "released" not in deleted.message
    assert kube.get(ref) is None


def test_environments_that_declare_it_differently_conflict_and_neither_overwrites(envtest, kube, two_envs):
    name, alpha, beta = two_envs
    ref = ObjectRef("scheduling.k8s.io/v1", "PriorityClass", None, name)
    assert alpha.sync().ok
    beta.shared = [priority_class(name, value=2000)]
    for _ in range(2):  # the same answer on every pass, and no write to the object
        mark = envtest.audit.mark()
        result = beta.sync()
        errors = result.model_errors[ENVIRONMENT_GROUP]
        text = "\n".join(errors)
        assert f"environment alpha@{alpha.ns}" in text and ".value" in text and "declares it differently" in text
        assert "fix:" in text and f"--field-manager='{MANAGER}/alpha@{alpha.ns}'" in text
        # one bad object skips only its group: beta's model is synced
        assert result.summary().as_dict().get("skipped") == 1
        assert kube.get(ObjectRef("v1", "Service", beta.ns, "model-a")) is not None
        assert not [w for w in writes(envtest, mark) if "priorityclasses" in w]
        assert kube.get(ref)["value"] == 1000
    assert beta.manager not in managers(kube, name)
    # `reconciler diff` / `status` dry-run it as the sync applies it: they show the same refusal
    from reconciler.sync.server_diff import diff_objects

    diffs = {d.ref: d for d in diff_objects(kube, beta.desired(), {}, field_manager=MANAGER,
                                            environment="beta", namespace=beta.ns)}
    assert diffs[ref].action == "error" and "declares it differently" in diffs[ref].error
    diffs = {d.ref: d for d in diff_objects(kube, alpha.desired(), {}, field_manager=MANAGER,
                                            environment="alpha", namespace=alpha.ns)}
    assert diffs[ref].action == "update" and diffs[ref].changes == []


def test_a_field_another_tool_took_is_taken_back_by_self_heal(envtest, kube, two_envs):
    """A conflict with a manager that is not an environment (kubectl, an operator) is forced, as for any
    object: only environments are protected from each other."""
    name, alpha, beta = two_envs
    ref = ObjectRef("scheduling.k8s.io/v1", "PriorityClass", None, name)
    assert alpha.sync().ok and beta.sync().ok
    kube.apply({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": name},
                "value": 1000, "description": "edited by hand"}, field_manager="kubectl-edit", force=True)
    drifted = alpha.sync()
    assert drifted.summary().as_dict() == {"unchanged": 2}
    assert any("description" in r.message for r in drifted.objects if r.ref == ref)
    healed = alpha.sync(self_heal=True)
    assert healed.ok and healed.summary().as_dict() == {"configured": 1, "unchanged": 1}, healed.as_dict()
    assert kube.get(ref)["description"] == "model serving pods"
    assert beta.sync().summary().as_dict() == {"unchanged": 2}


def test_a_shared_object_the_listing_misses_is_still_only_released(envtest, kube, two_envs):
    """Someone removed its managed-by label, so the pass's labelled listing does not show it: the
    environment that stops declaring it releases it anyway, and the server's answer shows who remains."""
    name, alpha, beta = two_envs
    ref = ObjectRef("scheduling.k8s.io/v1", "PriorityClass", None, name)
    assert alpha.sync().ok and beta.sync().ok
    kube.patch(ref, [{"op": "remove", "path": "/metadata/labels/app.kubernetes.io~1managed-by"}], type="json",
               field_manager="kubectl-edit")
    beta.shared = []
    result = beta.sync()
    assert result.ok, json.dumps(result.as_dict(), indent=1)
    assert kube.get(ref) is not None
    assert alpha.manager in managers(kube, name) and beta.manager not in managers(kube, name)


def test_staging_and_prod_render_the_same_priority_class(template_repo):
    """Nothing in the rendered PriorityClass names its environment, so two environments that declare the
    same class render the same object and share it instead of fighting over a label."""
    from reconciler.desired.state import desired_at

    state = desired_at(template_repo, None, ["staging", "prod"])
    found = {env: [o for o in state.objects_by_model(env)[ENVIRONMENT_GROUP] if o["kind"] == "PriorityClass"]
             for env in ("staging", "prod")}
    assert found["staging"] and found["staging"] == found["prod"]


# -- the pure parts ------------------------------------------------------------------------------------------

def conflict(*managers_fields: tuple[str, str]) -> Conflict:
    causes = [{"reason": "FieldManagerConflict", "message": f'conflict with "{m}"', "field": f}
              for m, f in managers_fields]
    return Conflict("apply: HTTP 409 Conflict", status=409, reason="Conflict",
                    payload={"kind": "Status", "details": {"causes": causes}})


def test_conflicts_name_other_environments_only():
    ref = ObjectRef("scheduling.k8s.io/v1", "PriorityClass", None, "pc")
    exc = conflict((f"{MANAGER}/prod@models-prod", ".value"), ("kubectl-edit", ".description"))
    assert conflicts_by_manager(exc) == {f"{MANAGER}/prod@models-prod": [".value"], "kubectl-edit": [".description"]}
    clash = environment_conflict(exc, ref, MANAGER, "staging", "models-staging")
    assert clash is not None and "environment prod@models-prod: .value" in clash.message
    assert not clash.retryable
    # only non-environment managers in the way, or our own manager, or not a conflict: not an environment clash
    assert environment_conflict(conflict(("kubectl-edit", ".value")), ref, MANAGER, "staging", "models-staging") is None
    assert environment_conflict(conflict((f"{MANAGER}/staging@models-staging", ".value")), ref, MANAGER,
                                "staging", "models-staging") is None
    assert environment_conflict(conflict((MANAGER, ".value")), ref, MANAGER, "staging", "models-staging") is None


def test_declaring_environments_read_applied_managers_only():
    live = {"metadata": {"managedFields": [
        {"manager": f"{MANAGER}/a@ns-a", "operation": "Apply", "fieldsV1": {"f:value": {}}},
        {"manager": f"{MANAGER}/b@ns-b", "operation": "Update", "fieldsV1": {"f:value": {}}},
        {"manager": MANAGER, "operation": "Apply", "fieldsV1": {"f:value": {}}},
        {"manager": "kubectl", "operation": "Apply", "fieldsV1": {"f:value": {}}}]}}
    assert declaring_environments(live, MANAGER) == {"a@ns-a"}
    assert declaring_environments(None, MANAGER) == set()
    assert is_shared(ObjectRef("scheduling.k8s.io/v1", "PriorityClass", None, "x"))
    assert not is_shared(ObjectRef("v1", "Namespace", None, "x"))
    assert not is_shared(ObjectRef("v1", "Service", "ns", "x"))
