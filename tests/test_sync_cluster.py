"""Sync scenarios through the real official client: against the API stand-in by default, or against a
real cluster when RECONCILER_E2E_KUBECONFIG names a kubeconfig (the kind workflow sets it).

On a real cluster each test works in its own namespace, counts writes on the client side (the server
keeps no counters we can read) and skips what needs fault injection.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from reconciler import labels
from reconciler.sync.inventory import load_inventory
from reconciler.cluster.kube import KubeClient, RetryPolicy
from reconciler.results import Action, ObjectRef
from reconciler.sync.engine import sync_environment
from reconciler.sync.planner import SyncOptions

E2E_KUBECONFIG = os.environ.get("RECONCILER_E2E_KUBECONFIG")
FAST = RetryPolicy(attempts=6, initial=0.01, cap=0.05, max_retry_after=0.05)


class CountingKube(KubeClient):
    """Counts the writes this client sends (dry runs apart): the write count on a real cluster."""

    writes = 0

    def request(self, method: str, path: str, *, query=None, **kwargs: Any):  # type: ignore[override]
        if method in ("POST", "PUT", "PATCH", "DELETE") and ("dryRun", "All") not in (query or []):
            self.writes += 1
        return super().request(method, path, query=query, **kwargs)


@dataclass
class Cluster:
    kube: CountingKube
    namespace: str
    env: str
    server: Any = None  # the stand-in, None on a real cluster
    kubeconfig: str | None = None

    @property
    def real(self) -> bool:
        return self.server is None

    def new_client(self, cls: type[KubeClient] = CountingKube) -> KubeClient:
        """A fresh client (a restarted process)."""
        if self.real:
            return cls.from_kubeconfig(self.kubeconfig, retry=FAST)
        return cls.from_kubeconfig(self.kubeconfig, retry=FAST, sleep=lambda s: None)

    def writes(self) -> int:
        return self.kube.writes if self.real else self.server.stats.snapshot()["writes"]

    def reset_counts(self) -> None:
        self.kube.writes = 0
        if not self.real:
            self.server.stats.reset()

    def need_standin(self) -> None:
        if self.real:
            pytest.skip("needs the stand-in's fault injection / counters")

    def names(self, kind: str, api_version: str = "v1") -> set[str]:
        return {o["metadata"]["name"] for o in self.kube.list(api_version, kind, self.namespace)
                if (o["metadata"].get("labels") or {}).get(labels.MANAGED_BY) == labels.MANAGER}


@pytest.fixture
def cluster(request) -> Iterator[Cluster]:
    suffix = uuid.uuid4().hex[:6]
    if E2E_KUBECONFIG:
        kube = CountingKube.from_kubeconfig(E2E_KUBECONFIG, retry=FAST)
        c = Cluster(kube, f"sync-{suffix}", f"e2e{suffix}", kubeconfig=E2E_KUBECONFIG)
        yield c
        kube.delete(ObjectRef("v1", "Namespace", None, c.namespace))
        return
    make = request.getfixturevalue("kube_api_factory")
    api = make()
    kube = CountingKube.from_kubeconfig(api.kubeconfig_path, retry=FAST, sleep=lambda s: None)
    yield Cluster(kube, f"models-{suffix}", "dev", server=api.server, kubeconfig=str(api.kubeconfig_path))


def hashed(obj: dict) -> dict:
    from reconciler.render.environment import with_content_hash

    return with_content_hash(obj)


def model_objects(model: str, ns: str, env: str, image: str = "registry/m:1", replicas: int = 1) -> list[dict]:
    common = {labels.MANAGED_BY: labels.MANAGER, labels.MODEL: model, labels.ENVIRONMENT: env}
    sel = {labels.MODEL: model}
    return [
        hashed({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": model, "namespace": ns, "labels": dict(common)},
                "spec": {"selector": sel, "ports": [{"name": "http", "port": 80, "targetPort": 3000}]}}),
        hashed({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": f"{model}-cpu", "namespace": ns, "labels": dict(common)},
                "spec": {"replicas": replicas, "selector": {"matchLabels": sel},
                         "template": {"metadata": {"labels": {**common, **sel}},
                                      "spec": {"containers": [{"name": "bento", "image": image}]}}}}),
    ]


def desired(c: Cluster, models: dict[str, str]) -> dict[str, list[dict]]:
    return {m: model_objects(m, c.namespace, c.env, image) for m, image in models.items()}


def sync(c: Cluster, want: dict[str, list[dict]], kube: KubeClient | None = None, **options: Any):
    return sync_environment(kube or c.kube, c.env, c.namespace, want,
                            options=SyncOptions(concurrency=4, **options))


def counts(result) -> dict[str, int]:
    return result.summary().as_dict()


THREE = {"iris": "r/iris:1", "digits": "r/digits:1", "wine": "r/wine:1"}


def test_first_apply_then_noop_pass_writes_nothing(cluster):
    c = cluster
    first = sync(c, desired(c, THREE))
    assert first.ok, first.as_dict()
    assert counts(first) == {"created": 6}
    assert c.names("Deployment", "apps/v1") == {"iris-cpu", "digits-cpu", "wine-cpu"}
    inv = load_inventory(c.kube, c.env, c.namespace)
    assert len(inv.entries) == 6 and all(e.hash.startswith("sha256:") for e in inv.entries.values())

    c.reset_counts()
    again = sync(c, desired(c, THREE))
    assert counts(again) == {"unchanged": 6}
    assert c.writes() == 0
    if not c.real:
        stats = c.server.stats.snapshot()
        assert stats["dry_runs"] == 0 and stats["reads"] > 0


def test_one_model_changed_only_its_objects_are_written(cluster):
    c = cluster
    sync(c, desired(c, THREE))
    c.reset_counts()
    result = sync(c, desired(c, {**THREE, "digits": "r/digits:2"}))
    assert result.ok
    changed = [(r.ref.name, r.action) for r in result.objects if r.action is not Action.unchanged]
    assert changed == [("digits-cpu", Action.configured)]
    assert c.writes() == 2  # the Deployment and the inventory record
    live = c.kube.get(ObjectRef("apps/v1", "Deployment", c.namespace, "digits-cpu"))
    assert live["spec"]["template"]["spec"]["containers"][0]["image"] == "r/digits:2"


def test_model_deleted_from_git_only_its_objects_are_pruned(cluster):
    c = cluster
    sync(c, desired(c, THREE))
    # an object with our labels that we never applied: not ours to prune
    foreign = model_objects("stranger", c.namespace, c.env)[0]
    c.kube.apply(foreign, field_manager="kubectl")
    c.reset_counts()
    result = sync(c, desired(c, {k: v for k, v in THREE.items() if k != "wine"}))
    pruned = sorted((r.ref.kind, r.ref.name) for r in result.objects if r.action is Action.pruned)
    assert pruned == [("Deployment", "wine-cpu"), ("Service", "wine")]
    assert c.names("Service") == {"iris", "digits", "stranger"}
    assert c.writes() == 3  # two deletes and the inventory
    assert len(load_inventory(c.kube, c.env, c.namespace).entries) == 4


def test_schema_invalid_model_is_skipped_with_all_errors_others_applied(cluster):
    c = cluster
    want = desired(c, THREE)
    bad = want["digits"][1]
    bad["spec"]["template"]["spec"]["containers"][0].pop("image")
    bad["spec"]["selector"] = {"matchLabels": {"other": "x"}}  # does not match the template: a second error
    hashed(bad)
    result = sync(c, want)
    assert not result.ok
    errors = result.model_errors["digits"]
    assert any("image" in e for e in errors) and any("selector" in e for e in errors)
    assert {r.ref.name: r.action for r in result.objects if r.model == "digits"} == {
        "digits": Action.skipped, "digits-cpu": Action.skipped}
    assert c.names("Deployment", "apps/v1") == {"iris-cpu", "wine-cpu"}
    assert "digits" not in c.names("Service")  # nothing of the invalid model was applied
    assert result.by_model()["iris"].as_dict() == {"created": 2}


def test_api_faults_mid_sync_converge_without_duplicates(cluster):
    from tests.kubeapi.instrumentation import Fault

    c = cluster
    c.need_standin()
    c.server.inject(Fault(path="deployments/digits-cpu", method="PATCH", status=500, count=2))
    c.server.inject(Fault(path="services/wine", method="PATCH", status=429, retry_after=1, count=1))
    c.server.inject(Fault(path="deployments/iris-cpu", method="PATCH", delay=0.5, count=1))
    kube = c.new_client()
    kube.request_timeout = 0.25
    result = sync(c, desired(c, THREE), kube=kube)
    assert result.ok, result.as_dict()
    assert counts(result) == {"created": 6}
    assert kube.stats.retries >= 4
    assert len(c.server.objects("Deployment", c.namespace)) == 3
    assert len([s for s in c.server.objects("Service", c.namespace)]) == 3
    assert counts(sync(c, desired(c, THREE))) == {"unchanged": 6}


def test_retries_exhausted_fail_the_pass_and_the_next_pass_converges(cluster):
    from tests.kubeapi.instrumentation import Fault

    c = cluster
    c.need_standin()
    c.server.inject(Fault(path="deployments", method="PATCH", status=503, count=100))
    result = sync(c, desired(c, THREE))
    assert result.failed and "503" in (result.error or "") + str(result.as_dict())
    c.server.faults.clear()
    assert sync(c, desired(c, THREE)).ok
    assert c.names("Deployment", "apps/v1") == {"iris-cpu", "digits-cpu", "wine-cpu"}


class Crash(BaseException):
    """The process dying: not an error anything catches."""


def crashing_after(n: int):
    class Crashing(CountingKube):
        applied = 0

        def apply(self, obj, field_manager=labels.MANAGER, force=True, dry_run=False):
            if not dry_run and obj["kind"] != "ConfigMap":
                if Crashing.applied >= n:
                    raise Crash()
                Crashing.applied += 1
            return super().apply(obj, field_manager, force, dry_run)

    return Crashing


def test_killed_mid_sync_restart_converges_and_nothing_leaks(cluster):
    c = cluster
    kube = c.new_client(crashing_after(3))
    with pytest.raises(Crash):
        sync_environment(kube, c.env, c.namespace, desired(c, THREE), options=SyncOptions(concurrency=1))
    assert 1 <= len(c.names("Service")) <= 3
    # while it was down, one model left git: what the dead pass created of it must still be pruned
    restarted = c.new_client()
    result = sync_environment(restarted, c.env, c.namespace, desired(c, {k: v for k, v in THREE.items() if k != "iris"}),
                              options=SyncOptions(concurrency=1))
    assert result.ok, result.as_dict()
    assert c.names("Service") == {"digits", "wine"}
    assert c.names("Deployment", "apps/v1") == {"digits-cpu", "wine-cpu"}
    inv = load_inventory(restarted, c.env, c.namespace)
    assert {r.name for r in inv.entries} == {"digits", "wine", "digits-cpu", "wine-cpu"}
    assert counts(sync(c, desired(c, {k: v for k, v in THREE.items() if k != "iris"}))) == {"unchanged": 4}


def test_empty_render_prunes_nothing_without_allow(cluster):
    c = cluster
    sync(c, desired(c, THREE))
    result = sync(c, {})
    assert not any(r.action is Action.pruned for r in result.objects)
    assert len(c.names("Service")) == 3
    result = sync(c, {}, allow_empty_prune=True)
    assert sum(r.action is Action.pruned for r in result.objects) == 6
    assert c.names("Service") == set()


def test_dry_run_writes_nothing_and_reports_the_plan(cluster):
    c = cluster
    sync(c, desired(c, THREE))
    c.reset_counts()
    result = sync(c, desired(c, {"iris": "r/iris:9", "digits": "r/digits:1"}), dry_run=True)
    assert c.writes() == 0
    acts = {(r.ref.name, r.action) for r in result.objects if r.action is not Action.unchanged}
    assert acts == {("iris-cpu", Action.configured), ("wine", Action.pruned), ("wine-cpu", Action.pruned)}


def test_drift_reported_and_self_healed(cluster):
    c = cluster
    sync(c, desired(c, THREE))
    ref = ObjectRef("apps/v1", "Deployment", c.namespace, "iris-cpu")
    c.kube.patch(ref, {"spec": {"template": {"spec": {"containers": [{"name": "bento", "image": "evil:1"}]}}}},
                 type="strategic", field_manager="kubectl-edit")
    reported = sync(c, desired(c, THREE))
    (drifted,) = [r for r in reported.objects if "drifted" in r.message]
    assert drifted.ref == ref and drifted.action is Action.unchanged
    healed = sync(c, desired(c, THREE), self_heal=True)
    assert [(r.ref.name, r.action) for r in healed.objects if r.action.writes] == [("iris-cpu", Action.configured)]
    assert c.kube.get(ref)["spec"]["template"]["spec"]["containers"][0]["image"] == "r/iris:1"


def test_unhealthy_model_is_reported_not_hidden(cluster):
    c = cluster
    c.need_standin()
    c.server.set_rollout_behaviour("failed", name="digits-cpu")
    result = sync(c, desired(c, THREE), wait=True, timeout=0.5)
    assert result.health["iris"].status.value == "healthy"
    assert result.health["digits"].status.value in ("degraded", "progressing")
    assert not result.ok
    assert result.as_dict()["models"]["digits"]["health"]["objects"]
