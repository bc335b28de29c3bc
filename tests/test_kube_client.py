"""reconciler.cluster.kube.KubeClient through the real official client against the real API server (envtest).

Faults the server cannot be told to make (429 with Retry-After, 5xx, a slow answer) come from the
fault-injecting proxy in front of it (tests/fault_proxy.py); a 403 is real RBAC (a ServiceAccount with no
binding).
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import yaml

from reconciler.cluster.kube import KubeClient, RetryPolicy
from reconciler.errors import KubeError
from reconciler.results import ObjectRef
from tests.fault_proxy import Fault, FaultProxy

FAST = RetryPolicy(attempts=4, initial=0.01, cap=0.02, max_retry_after=5)


def deployment(name: str = "web", namespace: str = "default", image: str = "nginx:1", **labels: str) -> dict:
    sel = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace, "labels": {**sel, **labels}},
            "spec": {"replicas": 1, "selector": {"matchLabels": sel},
                     "template": {"metadata": {"labels": sel},
                                  "spec": {"containers": [{"name": "main", "image": image}]}}}}


def recording(kubeconfig: Path, **kwargs) -> KubeClient:
    """A client whose backoff sleeps are recorded instead of slept."""
    sleeps: list[float] = []
    client = KubeClient.from_kubeconfig(kubeconfig, retry=FAST, sleep=sleeps.append, **kwargs)
    client.sleeps = sleeps  # type: ignore[attr-defined]
    return client


@pytest.fixture
def client(envtest):
    c = recording(envtest.kubeconfig)
    yield c
    c.close()


@pytest.fixture
def proxy(envtest, tmp_path):
    with FaultProxy(envtest) as p:
        p.client = recording(p.kubeconfig(tmp_path / "proxy.kubeconfig"))  # type: ignore[attr-defined]
        yield p
        p.client.close()  # type: ignore[attr-defined]


def test_from_kubeconfig_with_context_and_from_api_client(envtest, tmp_path):
    from kubernetes import config as k8s_config

    one = yaml.safe_load(envtest.kubeconfig.read_text())
    other = {"name": "other", "context": {"cluster": "nowhere", "user": one["users"][0]["name"]}}
    one["contexts"].append(other)
    one["clusters"].append({"name": "nowhere", "cluster": {"server": "https://127.0.0.1:9"}})
    one["contexts"][0]["name"] = one["current-context"] = "one"
    path = tmp_path / "multi"
    path.write_text(yaml.safe_dump(one))
    assert KubeClient.from_kubeconfig(path, context="one").get(ObjectRef("v1", "Namespace", None, "default"))
    with pytest.raises(KubeError, match="cannot use context .missing. of the kubeconfig at") as err:
        KubeClient.from_kubeconfig(path, context="missing")
    assert "--context" in (err.value.fix or "")
    api_client = k8s_config.new_client_from_config(config_file=str(path), context="one")
    c = KubeClient.from_api_client(api_client)
    assert c.get(ObjectRef("v1", "Namespace", None, "kube-system"))["metadata"]["name"] == "kube-system"
    c.close()


def test_apply_creates_then_updates_with_field_manager(client, namespace):
    created = client.apply(deployment(namespace=namespace))
    assert created["metadata"]["uid"]
    managers = {m["manager"] for m in created["metadata"]["managedFields"]}
    assert "model-gitops-reconciler" in managers
    # without force, another manager changing a field the reconciler owns is a conflict (the server's 409)
    with pytest.raises(KubeError) as conflict:
        client.apply(deployment(namespace=namespace, image="nginx:2"), field_manager="someone-else", force=False)
    assert conflict.value.status == 409 and not conflict.value.retryable
    updated = client.apply(deployment(namespace=namespace, image="nginx:2"), field_manager="someone-else")
    assert updated["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:2"
    live = client.get(ObjectRef("apps/v1", "Deployment", namespace, "web"))
    assert live["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:2"
    assert "someone-else" in {m["manager"] for m in live["metadata"]["managedFields"]}


def test_dry_run_apply_persists_nothing(client, envtest, namespace):
    mark = envtest.audit.mark()
    out = client.apply(deployment(name="ghost", namespace=namespace), dry_run=True)
    assert out["metadata"]["name"] == "ghost" and out["spec"]["template"]["spec"]["containers"][0][
        "terminationMessagePath"]  # the server defaulted it: this was the real admission chain
    assert client.get(ObjectRef("apps/v1", "Deployment", namespace, "ghost")) is None
    events = [e for e in envtest.audit.since(mark, user="admin") if e.namespace == namespace]
    assert sum(e.write for e in events) == 0 and sum(e.dry_run for e in events) == 1


def test_invalid_object_is_a_kube_error_with_every_cause(client, namespace):
    bad = deployment(namespace=namespace)
    bad["spec"]["template"]["spec"]["containers"][0].pop("image")
    bad["spec"].pop("selector")
    with pytest.raises(KubeError) as err:
        client.apply(bad, dry_run=True)
    assert err.value.status == 422 and err.value.reason == "Invalid" and not err.value.retryable
    assert len(err.value.causes) >= 2
    assert any("image" in c for c in err.value.causes) and any("selector" in c for c in err.value.causes)


def test_get_list_label_selector_patch_delete(client, namespace):
    client.apply(deployment("a", namespace, tier="front"))
    client.apply(deployment("b", namespace, tier="back"))
    assert client.get(ObjectRef("apps/v1", "Deployment", namespace, "nope")) is None
    front = client.list("apps/v1", "Deployment", namespace, label_selector="tier=front")
    assert [d["metadata"]["name"] for d in front] == ["a"]
    assert front[0]["kind"] == "Deployment" and front[0]["apiVersion"] == "apps/v1"
    requests = client.stats.requests
    assert len(client.list("apps/v1", "Deployment", namespace, page_size=1)) == 2
    assert client.stats.requests - requests == 2  # paginated: one page per item, with the continue token
    ref = ObjectRef("apps/v1", "Deployment", namespace, "a")
    client.patch(ref, {"metadata": {"labels": {"tier": "edge"}}})
    assert client.get(ref)["metadata"]["labels"]["tier"] == "edge"
    client.patch(ref, [{"op": "replace", "path": "/spec/replicas", "value": 3}], type="json")
    assert client.get(ref)["spec"]["replicas"] == 3
    client.patch(ref, {"spec": {"template": {"spec": {"containers": [{"name": "main", "image": "nginx:9"}]}}}},
                 type="strategic")  # merged by container name, not replaced
    containers = client.get(ref)["spec"]["template"]["spec"]["containers"]
    assert [(c["name"], c["image"]) for c in containers] == [("main", "nginx:9")]
    assert client.delete(ref) is True
    assert client.get(ref) is None  # no finalizers: gone at once
    assert client.delete(ref) is False


def widget_crd(group: str) -> dict:
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"widgets.{group}"},
            "spec": {"group": group, "scope": "Namespaced",
                     "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
                     "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                         "type": "object", "properties": {"spec": {"type": "object", "properties": {
                             "size": {"type": "integer"}}}}}}}]}}


def test_custom_resources_through_discovery(client, envtest, namespace, tmp_path):
    route = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
             "metadata": {"name": "r", "namespace": namespace},
             "spec": {"rules": [{"backendRefs": [{"name": "svc", "port": 80, "weight": 7}]}]}}
    client.apply(route)
    assert client.get(ObjectRef.of(route))["spec"]["rules"][0]["backendRefs"][0]["weight"] == 7
    # a CRD installed after the client cached discovery of its group is still found
    group = f"t{uuid.uuid4().hex[:8]}.example.com"
    widget = {"apiVersion": f"{group}/v1", "kind": "Widget", "metadata": {"name": "w", "namespace": namespace},
              "spec": {"size": 3}}
    with pytest.raises(KubeError) as err:
        client.get(ObjectRef.of(widget))
    assert err.value.reason == "NoKindMatch" and "CustomResourceDefinition" in err.value.fix
    crd_file = tmp_path / "widget-crd.yaml"
    crd_file.write_text(yaml.safe_dump(widget_crd(group)))
    envtest.install_crds([crd_file])
    try:
        client.apply(widget)
        assert [w["spec"]["size"] for w in client.list(f"{group}/v1", "Widget", namespace)] == [3]
        widget["spec"]["size"] = "big"  # the CRD's schema is enforced by the real server
        with pytest.raises(KubeError) as invalid:
            client.apply(widget, dry_run=True)
        assert invalid.value.status in (400, 422, 500) and "size" in invalid.value.message
        with pytest.raises(KubeError) as err:
            client.get(ObjectRef(f"{group}/v1", "Gadget", namespace, "g"))
        assert err.value.reason == "NoKindMatch"
    finally:
        client.delete(ObjectRef("apiextensions.k8s.io/v1", "CustomResourceDefinition", None, f"widgets.{group}"))


def test_429_honours_retry_after_then_succeeds(proxy, namespace):
    kube = proxy.client
    kube.apply(deployment(namespace=namespace))
    proxy.inject(Fault(path=f"{namespace}/deployments/web", method="GET", status=429, retry_after=3, count=2))
    assert kube.get(ObjectRef("apps/v1", "Deployment", namespace, "web"))["metadata"]["name"] == "web"
    assert kube.sleeps == [3.0, 3.0]  # the server's Retry-After, not the 10 ms backoff
    assert kube.stats.retries == 2


def test_5xx_backs_off_exponentially_capped_and_gives_up_bounded(proxy, namespace):
    kube = proxy.client
    proxy.inject(Fault(path=f"{namespace}/configmaps", status=503, count=10))
    with pytest.raises(KubeError) as err:
        kube.get(ObjectRef("v1", "ConfigMap", namespace, "x"))
    assert err.value.status == 503 and err.value.retryable
    assert kube.sleeps == [0.01, 0.02, 0.02]  # 4 attempts: initial, doubled, capped
    assert sum(1 for _, path, outcome in proxy.requests if outcome == 503 and "configmaps" in path) == 4


def test_timeout_is_retried(proxy, tmp_path):
    kube = KubeClient.from_kubeconfig(proxy.kubeconfig(tmp_path / "slow"), retry=FAST, request_timeout=0.3,
                                      sleep=lambda s: None)
    kube.get(ObjectRef("v1", "Namespace", None, "kube-system"))  # discovery of v1 before the fault
    proxy.inject(Fault(path="/api/v1/namespaces/default", method="GET", delay=1.0, count=1))
    assert kube.get(ObjectRef("v1", "Namespace", None, "default"))["metadata"]["name"] == "default"
    assert kube.stats.retries == 1
    kube.close()


def test_dropped_connection_is_retried(proxy, namespace):
    kube = proxy.client
    proxy.inject(Fault(path=f"/api/v1/namespaces/{namespace}", method="GET", drop=True, count=1))
    assert kube.get(ObjectRef("v1", "Namespace", None, namespace))["metadata"]["name"] == namespace
    assert kube.stats.retries == 1


def test_forbidden_is_not_retried_and_says_rbac(envtest, client, namespace, tmp_path):
    client.create({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "nobody", "namespace": namespace}})
    nobody = recording(envtest.service_account_kubeconfig("nobody", namespace, tmp_path / "nobody.kubeconfig"))
    with pytest.raises(KubeError) as err:
        nobody.get(ObjectRef("v1", "ConfigMap", namespace, "x"))
    assert err.value.status == 403 and "RBAC" in (err.value.fix or "")
    assert f"system:serviceaccount:{namespace}:nobody" in err.value.message  # the server's own words
    assert nobody.sleeps == [] and nobody.stats.retries == 0
    nobody.close()


def test_unreachable_server_is_a_kube_error():
    from kubernetes import client

    cfg = client.Configuration(host="http://127.0.0.1:9")
    cfg.retries = False
    kube = KubeClient(client.ApiClient(cfg), retry=RetryPolicy(attempts=2, initial=0, cap=0), sleep=lambda s: None)
    with pytest.raises(KubeError) as err:
        kube.get(ObjectRef("v1", "Namespace", None, "default"))
    assert err.value.status is None and err.value.reason == "ConnectionError"


def test_replace_with_stale_resource_version_conflicts(client, namespace):
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": namespace},
          "data": {"a": "1"}}
    created = client.create(cm)
    fresh = {**created, "data": {"a": "2"}}
    client.replace(fresh)
    stale = {**created, "data": {"a": "3"}}
    with pytest.raises(KubeError) as err:
        client.replace(stale)
    assert err.value.status == 409 and not err.value.retryable
    with pytest.raises(KubeError) as err:
        client.create(cm)
    assert err.value.status == 409 and err.value.reason == "AlreadyExists"
