"""reconciler.cluster.kube.KubeClient through the real official client against the API stand-in."""

from __future__ import annotations

import pytest

from reconciler.errors import KubeError
from reconciler.cluster.kube import KubeClient, RetryPolicy
from reconciler.results import ObjectRef
from tests.kubeapi.instrumentation import Fault

FAST = RetryPolicy(attempts=4, initial=0.01, cap=0.02, max_retry_after=5)


def deployment(name: str = "web", namespace: str = "default", image: str = "nginx:1", **labels: str) -> dict:
    sel = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace, "labels": {**sel, **labels}},
            "spec": {"replicas": 1, "selector": {"matchLabels": sel},
                     "template": {"metadata": {"labels": sel},
                                  "spec": {"containers": [{"name": "main", "image": image}]}}}}


@pytest.fixture
def kube(kube_api):
    sleeps: list[float] = []
    client = KubeClient.from_kubeconfig(kube_api.kubeconfig_path, retry=FAST, sleep=sleeps.append)
    client.sleeps = sleeps  # type: ignore[attr-defined]
    yield client
    client.close()


def test_from_kubeconfig_with_context_and_from_api_client(kube_api, tmp_path):
    from tests.kubeapi.server import write_kubeconfig

    path = write_kubeconfig(tmp_path / "multi", {"one": kube_api.server}, current="one")
    assert KubeClient.from_kubeconfig(path, context="one").get(ObjectRef("v1", "Namespace", None, "default"))
    with pytest.raises(KubeError, match="cannot use context .missing. of the kubeconfig at") as err:
        KubeClient.from_kubeconfig(path, context="missing")
    assert "--context" in (err.value.fix or "")
    client = KubeClient.from_api_client(kube_api.api_client)
    assert client.get(ObjectRef("v1", "Namespace", None, "kube-system"))["metadata"]["name"] == "kube-system"


def test_apply_creates_then_updates_with_field_manager(kube, kube_api):
    created = kube.apply(deployment())
    assert created["metadata"]["uid"]
    managers = {m["manager"] for m in created["metadata"]["managedFields"]}
    assert "model-gitops-reconciler" in managers
    updated = kube.apply(deployment(image="nginx:2"), field_manager="someone-else")
    assert updated["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:2"
    assert kube_api.server.get("apps/v1", "Deployment", "web", "default")["spec"]["template"]["spec"][
        "containers"][0]["image"] == "nginx:2"


def test_dry_run_apply_persists_nothing(kube, kube_api):
    before = kube_api.server.stats.snapshot()
    out = kube.apply(deployment(name="ghost"), dry_run=True)
    assert out["metadata"]["name"] == "ghost"
    assert kube.get(ObjectRef("apps/v1", "Deployment", "default", "ghost")) is None
    after = kube_api.server.stats.snapshot()
    assert after["writes"] == before["writes"] and after["dry_runs"] == before["dry_runs"] + 1


def test_invalid_object_is_a_kube_error_with_every_cause(kube):
    bad = deployment()
    bad["spec"]["template"]["spec"]["containers"][0].pop("image")
    bad["spec"].pop("selector")
    with pytest.raises(KubeError) as err:
        kube.apply(bad, dry_run=True)
    assert err.value.status == 422 and err.value.reason == "Invalid" and not err.value.retryable
    assert len(err.value.causes) >= 2
    assert any("image" in c for c in err.value.causes) and any("selector" in c for c in err.value.causes)


def test_get_list_label_selector_patch_delete(kube):
    kube.apply(deployment("a", tier="front"))
    kube.apply(deployment("b", tier="back"))
    assert kube.get(ObjectRef("apps/v1", "Deployment", "default", "nope")) is None
    front = kube.list("apps/v1", "Deployment", "default", label_selector="tier=front")
    assert [d["metadata"]["name"] for d in front] == ["a"]
    assert front[0]["kind"] == "Deployment" and front[0]["apiVersion"] == "apps/v1"
    assert len(kube.list("apps/v1", "Deployment", "default", page_size=1)) == 2  # paginated
    ref = ObjectRef("apps/v1", "Deployment", "default", "a")
    kube.patch(ref, {"metadata": {"labels": {"tier": "edge"}}})
    assert kube.get(ref)["metadata"]["labels"]["tier"] == "edge"
    kube.patch(ref, [{"op": "replace", "path": "/spec/replicas", "value": 3}], type="json")
    assert kube.get(ref)["spec"]["replicas"] == 3
    assert kube.delete(ref) is True
    assert kube.delete(ref) is False
    assert kube.get(ref) is None


def test_custom_resources_through_discovery(kube, kube_api):
    route = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
             "metadata": {"name": "r", "namespace": "default"}, "spec": {"rules": []}}
    kube.apply(route)
    assert kube.get(ObjectRef.of(route))["spec"] == {"rules": []}
    # a CRD installed after the client cached discovery is still found
    kube_api.server.register_crd("example.io", "v1", "Widget", "widgets")
    widget = {"apiVersion": "example.io/v1", "kind": "Widget", "metadata": {"name": "w", "namespace": "default"}}
    kube.apply(widget)
    assert [w["metadata"]["name"] for w in kube.list("example.io/v1", "Widget", "default")] == ["w"]
    with pytest.raises(KubeError) as err:
        kube.get(ObjectRef("example.io/v1", "Gadget", "default", "g"))
    assert err.value.reason == "NoKindMatch" and "CustomResourceDefinition" in err.value.fix


def test_429_honours_retry_after_then_succeeds(kube, kube_api):
    kube.apply(deployment())
    kube_api.server.inject(Fault(path="deployments/web", method="GET", status=429, retry_after=3, count=2))
    assert kube.get(ObjectRef("apps/v1", "Deployment", "default", "web"))["metadata"]["name"] == "web"
    assert kube.sleeps == [3.0, 3.0]  # the server's Retry-After, not the 10 ms backoff
    assert kube.stats.retries == 2


def test_5xx_backs_off_exponentially_capped_and_gives_up_bounded(kube, kube_api):
    kube_api.server.inject(Fault(path="configmaps", status=503, count=10))
    with pytest.raises(KubeError) as err:
        kube.get(ObjectRef("v1", "ConfigMap", "default", "x"))
    assert err.value.status == 503 and err.value.retryable
    assert kube.sleeps == [0.01, 0.02, 0.02]  # 4 attempts: initial, doubled, capped
    assert kube_api.server.stats.snapshot()["faults"] == 4


def test_timeout_is_retried(kube_api):
    kube = KubeClient.from_api_client(kube_api.api_client, retry=FAST, request_timeout=0.3, sleep=lambda s: None)
    kube_api.server.inject(Fault(path="namespaces/default$", method="GET", delay=1.0, count=1))
    assert kube.get(ObjectRef("v1", "Namespace", None, "default"))["metadata"]["name"] == "default"
    assert kube.stats.retries == 1


def test_non_retryable_errors_are_not_retried(kube, kube_api):
    kube_api.server.inject(Fault(path="configmaps", status=403, count=1))
    with pytest.raises(KubeError) as err:
        kube.get(ObjectRef("v1", "ConfigMap", "default", "x"))
    assert err.value.status == 403 and "RBAC" in (err.value.fix or "")
    assert kube.sleeps == []


def test_unreachable_server_is_a_kube_error():
    from kubernetes import client

    cfg = client.Configuration(host="http://127.0.0.1:9")
    cfg.retries = False
    kube = KubeClient(client.ApiClient(cfg), retry=RetryPolicy(attempts=2, initial=0, cap=0), sleep=lambda s: None)
    with pytest.raises(KubeError) as err:
        kube.get(ObjectRef("v1", "Namespace", None, "default"))
    assert err.value.status is None and err.value.reason == "ConnectionError"


def test_replace_with_stale_resource_version_conflicts(kube):
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "default"}, "data": {"a": "1"}}
    created = kube.create(cm)
    fresh = {**created, "data": {"a": "2"}}
    kube.replace(fresh)
    stale = {**created, "data": {"a": "3"}}
    with pytest.raises(KubeError) as err:
        kube.replace(stale)
    assert err.value.status == 409 and not err.value.retryable
    with pytest.raises(KubeError) as err:
        kube.create(cm)
    assert err.value.status == 409
