"""The Kubernetes API stand-in, exercised through the real official client (kubernetes 37.x)."""

from __future__ import annotations

import json
import threading
import time

import pytest
import urllib3
from kubernetes import client, config, dynamic, watch
from kubernetes.client.exceptions import ApiException

from tests.kubeapi import Cause, Fault, KubeApiServer
from tests.kubeapi.fixtures import KubeApi, api_client_for

APPLY = "application/apply-patch+yaml"


def deployment(name: str = "model", image: str = "repo/model:1", replicas: int | None = 2,
               labels: dict | None = None, **extra: object) -> dict:
    spec: dict = {"selector": {"matchLabels": {"app": name}},
                  "template": {"metadata": {"labels": {"app": name}},
                               "spec": {"containers": [{"name": "server", "image": image}]}}}
    if replicas is not None:
        spec["replicas"] = replicas
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "labels": labels or {"app": name}}, "spec": spec, **extra}


def configmap(name: str, labels: dict | None = None, data: dict | None = None) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "labels": labels or {}}, "data": data or {"k": "v"}}


def status_of(exc: ApiException) -> dict:
    return json.loads(exc.body)


@pytest.fixture
def core(kube_api: KubeApi) -> client.CoreV1Api:
    return client.CoreV1Api(kube_api.api_client)


@pytest.fixture
def apps(kube_api: KubeApi) -> client.AppsV1Api:
    return client.AppsV1Api(kube_api.api_client)


@pytest.fixture
def custom(kube_api: KubeApi) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(kube_api.api_client)


def apply(apps: client.AppsV1Api, body: dict, manager: str = "reconciler", force: bool = False,
          namespace: str = "default", **kwargs: object):
    return apps.patch_namespaced_deployment(body["metadata"]["name"], namespace, body,
                                            field_manager=manager, force=force,
                                            _content_type=APPLY, **kwargs)


# -- 1. discovery ---------------------------------------------------------------------------


def test_discovery_documents(kube_api: KubeApi) -> None:
    api = kube_api.api_client
    assert client.CoreApi(api).get_api_versions().versions == ["v1"]
    assert client.VersionApi(api).get_code().git_version.startswith("v1.")
    groups = {g.name: g for g in client.ApisApi(api).get_api_versions().groups}
    for group in ("apps", "autoscaling", "policy", "coordination.k8s.io",
                  "rbac.authorization.k8s.io", "apiextensions.k8s.io",
                  "gateway.networking.k8s.io", "networking.istio.io", "argoproj.io"):
        assert group in groups
    assert [v.version for v in groups["networking.istio.io"].versions] == ["v1", "v1beta1"]
    resources = {r.name: r for r in client.AppsV1Api(api).get_api_resources().resources}
    assert resources["deployments"].kind == "Deployment"
    assert resources["deployments"].namespaced is True
    assert "watch" in resources["deployments"].verbs
    assert resources["deployments/scale"].kind == "Scale"
    assert set(resources["deployments/status"].verbs) == {"get", "patch", "update"}
    core = {r.name: r for r in client.CoreV1Api(api).get_api_resources().resources}
    assert {"namespaces", "configmaps", "secrets", "services", "serviceaccounts",
            "persistentvolumeclaims", "pods", "events"} <= set(core)
    assert core["namespaces"].namespaced is False
    rbac = {r.name: r.namespaced for r in
            client.RbacAuthorizationV1Api(api).get_api_resources().resources}
    assert rbac == {"roles": True, "rolebindings": True, "clusterroles": False,
                    "clusterrolebindings": False}


def test_dynamic_client_discovers_and_applies(kube_api: KubeApi, tmp_path) -> None:
    dyn = dynamic.DynamicClient(kube_api.api_client,
                                discoverer=dynamic.discovery.LazyDiscoverer)
    deployments = dyn.resources.get(api_version="apps/v1", kind="Deployment")
    created = dyn.server_side_apply(deployments, body=deployment("dyn"), namespace="default",
                                    field_manager="reconciler")
    assert created.metadata.generation == 1
    assert dyn.get(deployments, name="dyn", namespace="default").spec.replicas == 2
    routes = dyn.resources.get(api_version="gateway.networking.k8s.io/v1", kind="HTTPRoute")
    dyn.create(routes, namespace="default", body={
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "r"}, "spec": {"rules": []}})
    assert [i.metadata.name for i in dyn.get(routes, namespace="default").items] == ["r"]
    kube_api.server.register_crd("example.com", "v1", "Model", "models")
    models = dyn.resources.get(api_version="example.com/v1", kind="Model")  # cache refresh
    assert models.namespaced is True


def test_crd_created_over_http_is_served(kube_api: KubeApi, custom) -> None:
    ext = client.ApiextensionsV1Api(kube_api.api_client)
    ext.create_custom_resource_definition({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "canaries.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
                 "names": {"kind": "Canary", "plural": "canaries", "singular": "canary"},
                 "versions": [{"name": "v1", "served": True, "storage": True,
                               "subresources": {"status": {}},
                               "schema": {"openAPIV3Schema": {"type": "object"}}}]}})
    crd = ext.read_custom_resource_definition("canaries.example.com")
    assert {c.type: c.status for c in crd.status.conditions}["Established"] == "True"
    body = {"apiVersion": "example.com/v1", "kind": "Canary", "metadata": {"name": "c1"},
            "spec": {"weight": 10}, "status": {"phase": "ignored-on-create"}}
    made = custom.create_namespaced_custom_object("example.com", "v1", "default", "canaries",
                                                  body)
    assert made["metadata"]["generation"] == 1 and "status" not in made
    listed = custom.list_namespaced_custom_object("example.com", "v1", "default", "canaries")
    assert listed["items"][0]["kind"] == "Canary"  # custom resources keep kind in lists
    ext.delete_custom_resource_definition("canaries.example.com")
    with pytest.raises(ApiException) as err:
        custom.get_namespaced_custom_object("example.com", "v1", "default", "canaries", "c1")
    assert err.value.status == 404

    with pytest.raises(ApiException) as err:
        ext.create_custom_resource_definition({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "wrong"}, "spec": {
                "group": "example.com", "scope": "Namespaced",
                "names": {"kind": "X", "plural": "xs"},
                "versions": [{"name": "v1", "served": True, "storage": True}]}})
    assert err.value.status == 422


def test_versions_of_a_custom_resource_share_storage(kube_api: KubeApi, custom) -> None:
    vs = {"apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService",
          "metadata": {"name": "m"}, "spec": {"hosts": ["m"]}}
    custom.create_namespaced_custom_object("networking.istio.io", "v1beta1", "default",
                                           "virtualservices", vs)
    got = custom.get_namespaced_custom_object("networking.istio.io", "v1", "default",
                                              "virtualservices", "m")
    assert got["apiVersion"] == "networking.istio.io/v1" and got["spec"]["hosts"] == ["m"]


# -- 2. CRUD ------------------------------------------------------------------------------------


def test_create_get_conflict_and_not_found(core) -> None:
    data, code, _headers = core.create_namespaced_config_map_with_http_info(
        "default", configmap("a"))
    assert code == 201 and data.metadata.name == "a"
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map("default", configmap("a"))
    assert err.value.status == 409
    assert status_of(err.value)["reason"] == "AlreadyExists"
    with pytest.raises(ApiException) as err:
        core.read_namespaced_config_map("missing", "default")
    status = status_of(err.value)
    assert (status["kind"], status["code"], status["reason"]) == ("Status", 404, "NotFound")
    assert status["message"] == 'configmaps "missing" not found'
    assert status["details"] == {"name": "missing", "kind": "configmaps"}


def test_list_selectors_and_cluster_wide(kube_api: KubeApi, core, apps) -> None:
    core.create_namespace({"apiVersion": "v1", "kind": "Namespace",
                           "metadata": {"name": "prod"}})
    for name, labels in (("a", {"tier": "gpu", "env": "dev"}), ("b", {"tier": "inf"}),
                         ("c", {"tier": "cpu", "env": "prod"})):
        core.create_namespaced_config_map("default", configmap(name, labels))

    def names(selector: str) -> list[str]:
        return [i.metadata.name for i in core.list_namespaced_config_map(
            "default", label_selector=selector).items]

    assert names("tier=gpu") == ["a"]
    assert names("tier==inf") == ["b"]
    assert names("tier!=gpu") == ["b", "c"]
    assert names("tier in (gpu, inf)") == ["a", "b"]
    assert names("tier notin (gpu,inf)") == ["c"]
    assert names("env") == ["a", "c"]
    assert names("!env") == ["b"]
    assert names("env,tier=cpu") == ["c"]
    assert [i.metadata.name for i in core.list_namespaced_config_map(
        "default", field_selector="metadata.name=b").items] == ["b"]
    with pytest.raises(ApiException) as err:
        core.list_namespaced_config_map("default", field_selector="spec.x=1")
    assert err.value.status == 400

    apply(apps, deployment("one"))
    apply(apps, deployment("two"), namespace="prod")
    everywhere = apps.list_deployment_for_all_namespaces()
    assert [(d.metadata.namespace, d.metadata.name) for d in everywhere.items] == [
        ("default", "one"), ("prod", "two")]
    raw = kube_api.api_client.call_api(
        "GET", kube_api.url + "/apis/apps/v1/deployments").read()
    assert "kind" not in json.loads(raw)["items"][0]  # built-in list items omit kind


def test_pagination(core) -> None:
    for n in range(5):
        core.create_namespaced_config_map("default", configmap(f"cm{n}"))
    first = core.list_namespaced_config_map("default", limit=2)
    assert [i.metadata.name for i in first.items] == ["cm0", "cm1"]
    assert first.metadata.remaining_item_count == 3
    rest = core.list_namespaced_config_map("default", limit=10, _continue=first.metadata.var_continue)
    assert [i.metadata.name for i in rest.items] == ["cm2", "cm3", "cm4"]
    assert rest.metadata.var_continue is None


def test_replace_checks_resource_version(core) -> None:
    created = core.create_namespaced_config_map("default", configmap("cfg"))
    body = configmap("cfg", data={"k": "v2"})
    body["metadata"]["resourceVersion"] = created.metadata.resource_version
    updated = core.replace_namespaced_config_map("cfg", "default", body)
    assert updated.data == {"k": "v2"}
    assert int(updated.metadata.resource_version) > int(created.metadata.resource_version)
    with pytest.raises(ApiException) as err:
        core.replace_namespaced_config_map("cfg", "default", body)  # stale resourceVersion
    assert err.value.status == 409
    assert "the object has been modified" in status_of(err.value)["message"]
    with pytest.raises(ApiException) as err:
        core.replace_namespaced_config_map("nope", "default", configmap("nope"))
    assert err.value.status == 404


def test_patch_types(kube_api: KubeApi, apps, custom) -> None:
    body = deployment("p")
    body["spec"]["template"]["spec"]["containers"].append({"name": "sidecar", "image": "s:1"})
    apps.create_namespaced_deployment("default", body)
    # strategic merge (the client's default for dict bodies): containers merge by name
    patched = apps.patch_namespaced_deployment("p", "default", {"spec": {"template": {"spec": {
        "containers": [{"name": "server", "image": "repo/model:2"}]}}}})
    assert [(c.name, c.image) for c in patched.spec.template.spec.containers] == [
        ("server", "repo/model:2"), ("sidecar", "s:1")]
    # JSON merge patch: lists are replaced
    merged = apps.patch_namespaced_deployment(
        "p", "default", {"metadata": {"labels": {"extra": "1"}}},
        _content_type="application/merge-patch+json")
    assert merged.metadata.labels == {"app": "p", "extra": "1"}
    # JSON patch
    jp = apps.patch_namespaced_deployment(
        "p", "default", [{"op": "replace", "path": "/spec/replicas", "value": 4},
                         {"op": "remove", "path": "/metadata/labels/extra"}],
        _content_type="application/json-patch+json")
    assert jp.spec.replicas == 4 and jp.metadata.labels == {"app": "p"}
    with pytest.raises(ApiException) as err:
        apps.patch_namespaced_deployment("p", "default", [{"op": "test", "path": "/spec/replicas",
                                                           "value": 9}],
                                         _content_type="application/json-patch+json")
    assert err.value.status == 422
    # custom objects default to merge patch; strategic merge is refused (415) as upstream
    route = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
             "metadata": {"name": "r"}, "spec": {"rules": [{"backendRefs": [
                 {"name": "stable", "weight": 100}]}]}}
    custom.create_namespaced_custom_object("gateway.networking.k8s.io", "v1", "default",
                                           "httproutes", route)
    out = custom.patch_namespaced_custom_object(
        "gateway.networking.k8s.io", "v1", "default", "httproutes", "r",
        {"spec": {"rules": [{"backendRefs": [{"name": "stable", "weight": 90},
                                             {"name": "canary", "weight": 10}]}]}})
    assert [b["weight"] for b in out["spec"]["rules"][0]["backendRefs"]] == [90, 10]
    with pytest.raises(ApiException) as err:
        custom.patch_namespaced_custom_object(
            "gateway.networking.k8s.io", "v1", "default", "httproutes", "r", {"spec": {}},
            _content_type="application/strategic-merge-patch+json")
    assert err.value.status == 415


def test_delete_finalizers_and_collection(kube_api: KubeApi, core, apps) -> None:
    core.create_namespaced_config_map("default", configmap("x"))
    result = core.delete_namespaced_config_map("x", "default", propagation_policy="Foreground")
    assert result["status"] == "Success" and result["details"]["name"] == "x"  # 37.x: a dict
    with pytest.raises(ApiException):
        core.read_namespaced_config_map("x", "default")

    held = configmap("held")
    held["metadata"]["finalizers"] = ["example.com/protect"]
    core.create_namespaced_config_map("default", held)
    core.delete_namespaced_config_map("held", "default")
    pending = core.read_namespaced_config_map("held", "default")
    assert pending.metadata.deletion_timestamp is not None
    core.patch_namespaced_config_map("held", "default", {"metadata": {"finalizers": None}},
                                     _content_type="application/merge-patch+json")
    with pytest.raises(ApiException) as err:
        core.read_namespaced_config_map("held", "default")
    assert err.value.status == 404

    owner = apply(apps, deployment("owner"))
    dependent = configmap("dependent")
    dependent["metadata"]["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "Deployment",
                                                 "name": "owner", "uid": owner.metadata.uid}]
    core.create_namespaced_config_map("default", dependent)
    apps.delete_namespaced_deployment("owner", "default")
    assert kube_api.server.get("v1", "ConfigMap", "dependent", "default") is None

    for name, labels in (("g1", {"group": "a"}), ("g2", {"group": "a"}), ("g3", {"group": "b"})):
        core.create_namespaced_config_map("default", configmap(name, labels))
    core.delete_collection_namespaced_config_map("default", label_selector="group=a")
    assert [c["metadata"]["name"] for c in kube_api.server.objects("ConfigMap", "default")] == [
        "g3"]


# -- 3. metadata ----------------------------------------------------------------------------


def test_server_metadata_and_generation(core, apps) -> None:
    first = apply(apps, deployment("gen"))
    assert first.metadata.uid and first.metadata.creation_timestamp is not None
    assert first.metadata.generation == 1
    relabelled = apps.patch_namespaced_deployment("gen", "default",
                                                  {"metadata": {"labels": {"x": "y"}}})
    assert relabelled.metadata.generation == 1  # metadata-only change
    assert int(relabelled.metadata.resource_version) > int(first.metadata.resource_version)
    status_only = apps.patch_namespaced_deployment_status(
        "gen", "default", {"status": {"replicas": 7}})
    assert status_only.metadata.generation == 1 and status_only.status.replicas == 7
    respec = apps.patch_namespaced_deployment("gen", "default", {"spec": {"replicas": 3}})
    assert respec.metadata.generation == 2
    assert respec.metadata.uid == first.metadata.uid
    # a namespace must exist, and names are DNS-1123
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map("ghost", configmap("a"))
    assert err.value.status == 404
    assert status_of(err.value)["message"] == 'namespaces "ghost" not found'
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map("default", configmap("Bad_Name"))
    assert err.value.status == 422
    assert status_of(err.value)["details"]["causes"][0]["field"] == "metadata.name"


# -- 4. server-side apply -----------------------------------------------------------------------


def test_apply_creates_records_managed_fields_and_requires_manager(apps) -> None:
    data, code, _ = apps.patch_namespaced_deployment_with_http_info(
        "ssa", "default", deployment("ssa"), field_manager="reconciler",
        _content_type=APPLY)
    assert code == 201
    entry = next(m for m in data.metadata.managed_fields if m.manager == "reconciler")
    assert (entry.operation, entry.fields_type) == ("Apply", "FieldsV1")
    assert entry.fields_v1["f:spec"]["f:replicas"] == {}
    assert entry.fields_v1["f:spec"]["f:template"]["f:spec"]["f:containers"][
        'k:{"name":"server"}']["f:image"] == {}
    assert "f:strategy" not in entry.fields_v1["f:spec"]  # defaulted fields are unowned
    with pytest.raises(ApiException) as err:
        apps.patch_namespaced_deployment("ssa", "default", deployment("ssa"),
                                         _content_type=APPLY)
    assert err.value.status == 400


def test_apply_conflicts_and_force(apps) -> None:
    apply(apps, deployment("c", replicas=2))
    apply(apps, {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "c"},
                 "spec": {"replicas": 2}}, manager="autoscaler")  # same value: shared
    with pytest.raises(ApiException) as err:
        apply(apps, {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "c"},
                     "spec": {"replicas": 5}}, manager="autoscaler")
    status = status_of(err.value)
    assert status["code"] == 409 and status["reason"] == "Conflict"
    assert status["message"] == ('Apply failed with 1 conflict: conflict with "reconciler" '
                                 'using apps/v1: .spec.replicas')
    assert status["details"]["causes"][0]["field"] == ".spec.replicas"
    forced = apply(apps, {"apiVersion": "apps/v1", "kind": "Deployment",
                          "metadata": {"name": "c"}, "spec": {"replicas": 5}},
                   manager="autoscaler", force=True)
    assert forced.spec.replicas == 5
    owners = {m.manager: m.fields_v1 for m in forced.metadata.managed_fields}
    assert "f:replicas" not in owners["reconciler"]["f:spec"]
    # the reconciler no longer owns replicas: re-applying its manifest now conflicts
    with pytest.raises(ApiException) as err:
        apply(apps, deployment("c", replicas=2))
    assert err.value.status == 409
    # an Update (non-apply) manager also takes ownership of what it changed
    apps.patch_namespaced_deployment("c", "default", {"spec": {"template": {"spec": {
        "containers": [{"name": "server", "image": "hotfix:1"}]}}}}, field_manager="kubectl-edit")
    with pytest.raises(ApiException) as err:
        apply(apps, deployment("c", replicas=None, image="repo/model:2"))
    assert 'conflict with "kubectl-edit"' in status_of(err.value)["message"]
    assert '.spec.template.spec.containers[name="server"].image' in status_of(
        err.value)["message"]


def test_apply_removes_fields_no_longer_applied(apps) -> None:
    body = deployment("rm", labels={"app": "rm", "canary": "true"})
    body["spec"]["template"]["spec"]["containers"][0]["env"] = [
        {"name": n, "value": str(v)} for v, n in enumerate("ABCDEF")]
    apply(apps, body)
    apps.patch_namespaced_deployment("rm", "default", {"metadata": {"labels": {"team": "ml"}}},
                                     field_manager="other")
    body = deployment("rm", replicas=None)
    body["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "A", "value": "1"}]
    out = apply(apps, body)
    assert out.metadata.labels == {"app": "rm", "team": "ml"}  # canary gone, other's kept
    assert [e.name for e in out.spec.template.spec.containers[0].env] == ["A"]
    assert out.spec.replicas == 1  # removed from the apply: back to the default
    assert out.spec.strategy.type == "RollingUpdate"  # defaults are not removed


def test_noop_apply_keeps_resource_version(kube_api: KubeApi, apps) -> None:
    first = apply(apps, deployment("same"))
    writes = kube_api.server.stats.persisted
    again = apply(apps, deployment("same"))
    assert again.metadata.resource_version == first.metadata.resource_version
    assert again.metadata.generation == first.metadata.generation
    assert kube_api.server.stats.persisted == writes


def test_apply_custom_resource_lists_are_atomic(custom) -> None:
    def route(weights: list[int]) -> dict:
        return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                "metadata": {"name": "canary"},
                "spec": {"rules": [{"backendRefs": [
                    {"name": f"b{n}", "weight": w} for n, w in enumerate(weights)]}]}}

    args = ("gateway.networking.k8s.io", "v1", "default", "httproutes", "canary")
    custom.patch_namespaced_custom_object(*args, route([90, 10]), field_manager="router",
                                          _content_type=APPLY)
    out = custom.patch_namespaced_custom_object(*args, route([100]), field_manager="router",
                                                _content_type=APPLY)
    assert out["spec"]["rules"][0]["backendRefs"] == [{"name": "b0", "weight": 100}]
    assert out["metadata"]["generation"] == 2


# -- 5. dry run -----------------------------------------------------------------------------


def test_dry_run_persists_nothing(kube_api: KubeApi, core, apps) -> None:
    server = kube_api.server
    rv = server.resource_version
    server.stats.reset()
    made = core.create_namespaced_config_map("default", configmap("dry"), dry_run="All")
    assert made.metadata.uid and made.metadata.name == "dry"
    assert server.get("v1", "ConfigMap", "dry", "default") is None
    applied = apply(apps, deployment("dry"), dry_run="All")
    assert applied.spec.strategy.type == "RollingUpdate"  # defaulted
    with pytest.raises(ApiException) as err:
        apply(apps, deployment("dry", replicas=-1), dry_run="All")
    assert err.value.status == 422
    core.create_namespaced_config_map("default", configmap("real"))
    core.patch_namespaced_config_map("real", "default", {"data": {"k": "dry"}}, dry_run="All")
    core.replace_namespaced_config_map("real", "default", configmap("real", data={"k": "put"}),
                                       dry_run="All")
    core.delete_namespaced_config_map("real", "default", dry_run="All")
    assert server.get("v1", "ConfigMap", "real", "default")["data"] == {"k": "v"}
    assert server.resource_version == rv + 1
    assert (server.stats.writes, server.stats.dry_runs) == (1, 6)


# -- 6. validation --------------------------------------------------------------------------


def _dynamic(kube_api: KubeApi, api_version: str, kind: str):
    """DynamicClient resource: unlike the typed APIs it sends bodies unvalidated."""
    dyn = dynamic.DynamicClient(kube_api.api_client)
    return dyn, dyn.resources.get(api_version=api_version, kind=kind)


def test_deployment_validation(kube_api: KubeApi) -> None:
    dyn, deployments = _dynamic(kube_api, "apps/v1", "Deployment")
    cases = {
        "spec.template.metadata.labels": deployment("v"),
        "spec.replicas": deployment("v", replicas=-1),
        "spec.template.spec.containers": deployment("v"),
        "spec.template.spec.containers[0].image": deployment("v"),
        "spec.selector": deployment("v"),
    }
    cases["spec.template.metadata.labels"]["spec"]["template"]["metadata"]["labels"] = {"a": "b"}
    cases["spec.template.spec.containers"]["spec"]["template"]["spec"]["containers"] = []
    del cases["spec.template.spec.containers[0].image"]["spec"]["template"]["spec"][
        "containers"][0]["image"]
    del cases["spec.selector"]["spec"]["selector"]
    for field, body in cases.items():
        with pytest.raises(ApiException) as err:
            dyn.create(deployments, body=body, namespace="default")
        status = status_of(err.value)
        assert (status["code"], status["reason"]) == (422, "Invalid"), field
        assert field in [c["field"] for c in status["details"]["causes"]], field
        assert status["message"].startswith('Deployment.apps "v" is invalid: ')
    with pytest.raises(ApiException) as err:
        dyn.create(deployments, body=cases["spec.template.metadata.labels"], namespace="default")
    assert "`selector` does not match template `labels`" in status_of(err.value)["message"]
    dyn.create(deployments, body=deployment("v"), namespace="default")
    changed = deployment("v")
    changed["spec"]["selector"]["matchLabels"]["track"] = "canary"
    changed["spec"]["template"]["metadata"]["labels"]["track"] = "canary"
    with pytest.raises(ApiException) as err:
        dyn.replace(deployments, body=changed, namespace="default")
    assert "field is immutable" in status_of(err.value)["message"]


def test_required_metadata_strict_fields_and_custom_validators(kube_api: KubeApi) -> None:
    dyn, configmaps = _dynamic(kube_api, "v1", "ConfigMap")
    with pytest.raises(ApiException) as err:
        dyn.create(configmaps, body={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}},
                   namespace="default")
    assert err.value.status == 422
    assert status_of(err.value)["details"]["causes"][0]["field"] == "metadata.name"
    with pytest.raises(ApiException) as err:
        dyn.create(configmaps, body={"metadata": {"name": "nokind"}}, namespace="default")
    assert {"apiVersion", "kind"} <= {c["field"] for c in
                                      status_of(err.value)["details"]["causes"]}
    bogus = {**configmap("strict"), "spec": {"x": 1}}
    with pytest.raises(ApiException) as err:
        dyn.create(configmaps, body=bogus, namespace="default",
                   query_params=[("fieldValidation", "Strict")])
    assert err.value.status == 400
    assert 'unknown field "spec"' in status_of(err.value)["message"]
    response = kube_api.api_client.call_api(
        "POST", kube_api.url + "/api/v1/namespaces/default/configmaps",
        header_params={"Content-Type": "application/json"}, body=bogus)
    assert response.status == 201
    assert 'unknown field \\"spec\\"' in response.headers["Warning"]
    assert "spec" not in kube_api.server.get("v1", "ConfigMap", "strict", "default")

    kube_api.server.add_validator("", "ConfigMap", lambda new, old: [
        Cause("data.k", "Forbidden: must not be 'bad'", "FieldValueForbidden")]
        if (new.get("data") or {}).get("k") == "bad" else [])
    with pytest.raises(ApiException) as err:
        client.CoreV1Api(kube_api.api_client).create_namespaced_config_map(
            "default", configmap("cv", data={"k": "bad"}))
    assert status_of(err.value)["details"]["causes"][0]["field"] == "data.k"


# -- 7. watch -------------------------------------------------------------------------------


def test_watch_streams_history_and_live_events(kube_api: KubeApi, core) -> None:
    start_rv = core.list_namespaced_config_map("default").metadata.resource_version
    core.create_namespaced_config_map("default", configmap("w", {"watched": "yes"}))
    core.patch_namespaced_config_map("w", "default", {"data": {"k": "2"}})
    core.create_namespaced_config_map("default", configmap("unwatched"))

    def later() -> None:
        time.sleep(0.2)
        core.delete_namespaced_config_map("w", "default")

    threading.Thread(target=later).start()
    began = time.monotonic()
    events = [(e["type"], e["object"].metadata.name, e["object"].data)
              for e in watch.Watch().stream(core.list_namespaced_config_map, "default",
                                            label_selector="watched=yes",
                                            resource_version=start_rv, timeout_seconds=1)]
    assert 1 <= time.monotonic() - began < 3
    assert events == [("ADDED", "w", {"k": "v"}), ("MODIFIED", "w", {"k": "2"}),
                      ("DELETED", "w", {"k": "2"})]
    initial = [e["type"] for e in watch.Watch().stream(core.list_namespace, timeout_seconds=1)]
    assert initial == ["ADDED"] * 4  # no resourceVersion: the current state first


def test_watch_too_old_resource_version_is_gone(kube_api_factory) -> None:
    api = kube_api_factory(watch_history=3)
    core = client.CoreV1Api(api.api_client)
    for n in range(6):
        core.create_namespaced_config_map("default", configmap(f"c{n}"))
    with pytest.raises(ApiException) as err:
        list(watch.Watch().stream(core.list_namespaced_config_map, "default",
                                  resource_version="1", timeout_seconds=1))
    assert err.value.status == 410


# -- 8. leases ------------------------------------------------------------------------------


def test_lease_optimistic_concurrency(kube_api: KubeApi) -> None:
    leases = client.CoordinationV1Api(kube_api.api_client)
    leases.create_namespaced_lease("kube-system", {
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "reconciler"},
        "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}})
    seen_by_a = leases.read_namespaced_lease("reconciler", "kube-system")
    seen_by_b = leases.read_namespaced_lease("reconciler", "kube-system")
    seen_by_a.spec.renew_time = "2026-01-01T00:00:00.000000Z"
    leases.replace_namespaced_lease("reconciler", "kube-system", seen_by_a)
    seen_by_b.spec.holder_identity = "b"
    with pytest.raises(ApiException) as err:
        leases.replace_namespaced_lease("reconciler", "kube-system", seen_by_b)
    assert err.value.status == 409
    assert leases.read_namespaced_lease("reconciler", "kube-system").spec.holder_identity == "a"


# -- 9. deployment status simulation ----------------------------------------------------------


def _conditions(dep) -> dict:
    return {c.type: (c.status, c.reason) for c in dep.status.conditions}


def test_rollout_simulation_modes(kube_api: KubeApi, apps) -> None:
    server = kube_api.server
    done = apply(apps, deployment("r", replicas=3))
    assert done.status.observed_generation == 1
    assert (done.status.replicas, done.status.updated_replicas, done.status.ready_replicas,
            done.status.available_replicas) == (3, 3, 3, 3)
    assert _conditions(done)["Progressing"] == ("True", "NewReplicaSetAvailable")
    managers = {(m.manager, m.subresource) for m in done.metadata.managed_fields}
    assert ("kube-controller-manager", "status") in managers

    server.set_rollout_behaviour("stuck", name="r")
    stuck = apply(apps, deployment("r", replicas=3, image="repo/model:2"))
    assert stuck.status.observed_generation == 2
    assert not stuck.status.ready_replicas
    assert _conditions(stuck)["Available"][0] == "False"
    assert _conditions(stuck)["Progressing"] == ("True", "ReplicaSetUpdated")

    server.set_rollout_behaviour("failed", name="r")
    failed = apps.read_namespaced_deployment("r", "default")
    assert _conditions(failed)["Progressing"] == ("False", "ProgressDeadlineExceeded")

    server.set_rollout_behaviour("complete", name="r")
    assert apps.read_namespaced_deployment("r", "default").status.ready_replicas == 3

    rv = server.resource_version
    server.set_rollout_behaviour("failed")  # the default for every other Deployment
    assert server.resource_version == rv  # "r" keeps its own mode: no status write
    other = apply(apps, deployment("other"))
    assert _conditions(other)["Progressing"] == ("False", "ProgressDeadlineExceeded")
    assert apps.read_namespaced_deployment("r", "default").status.ready_replicas == 3

    server.simulate_rollouts = False
    untouched = apply(apps, deployment("r", replicas=3, image="repo/model:3"))
    assert untouched.status.observed_generation == 2


def test_scale_subresource(apps) -> None:
    apply(apps, deployment("s", replicas=2))
    scale = apps.read_namespaced_deployment_scale("s", "default")
    assert (scale.spec.replicas, scale.status.selector) == (2, "app=s")
    scaled = apps.patch_namespaced_deployment_scale("s", "default", {"spec": {"replicas": 5}})
    assert scaled.spec.replicas == 5
    dep = apps.read_namespaced_deployment("s", "default")
    assert (dep.spec.replicas, dep.metadata.generation, dep.status.ready_replicas) == (5, 2, 5)


# -- 10. fault injection ------------------------------------------------------------------------


def test_fault_injection(kube_api: KubeApi, core) -> None:
    server = kube_api.server
    server.inject(Fault(path=r"/configmaps", method="GET", status=429, retry_after=2, count=2))
    for _ in range(2):
        with pytest.raises(ApiException) as err:
            core.list_namespaced_config_map("default")
        assert err.value.status == 429 and err.value.headers["Retry-After"] == "2"
        assert status_of(err.value)["reason"] == "TooManyRequests"
    core.list_namespaced_config_map("default")  # consumed
    server.inject(Fault(path="/configmaps", method="POST", status=500))
    server.inject(Fault(path="/configmaps", method="POST", status=503))
    for code in (500, 503):
        with pytest.raises(ApiException) as err:
            core.create_namespaced_config_map("default", configmap("f"))
        assert err.value.status == code
    assert server.get("v1", "ConfigMap", "f", "default") is None
    server.inject(Fault(path="/namespaces/default$", delay=2.0))
    began = time.monotonic()
    with pytest.raises(urllib3.exceptions.HTTPError):
        core.read_namespace("default", _request_timeout=0.2)
    assert time.monotonic() - began < 1.5
    server.inject(Fault(path="/namespaces/default$", delay=0.05))
    with pytest.raises(urllib3.exceptions.ProtocolError):  # connection closed, no answer
        core.read_namespace("default")
    assert server.stats.faults == 6 and not server.faults.pending()


# -- 11/12. inspection, stats, reset, kubeconfig ----------------------------------------------


def test_stats_count_requests_by_verb(kube_api: KubeApi, core, apps) -> None:
    stats = kube_api.server.stats
    stats.reset()
    apply(apps, deployment("st"))
    apps.read_namespaced_deployment("st", "default")
    apps.list_namespaced_deployment("default")
    apps.patch_namespaced_deployment("st", "default", {"metadata": {"labels": {"a": "b"}}})
    apps.delete_namespaced_deployment("st", "default")
    core.get_api_resources()
    snap = stats.snapshot()
    assert snap["total"] == 6 and snap["reads"] == 3 and snap["writes"] == 3
    assert snap["by_verb"] == {"apply": 1, "get": 1, "list": 1, "patch": 1, "delete": 1,
                               "discovery": 1}
    assert snap["by_resource"]["apply deployments"] == 1
    stats.reset()
    assert stats.total == 0 and stats.by_verb == {}


def test_inspection_and_reset(kube_api: KubeApi, core) -> None:
    server = kube_api.server
    core.create_namespaced_config_map("default", configmap("i"))
    assert [o["metadata"]["name"] for o in server.objects("ConfigMap")] == ["i"]
    assert {o["metadata"]["name"] for o in server.objects("Namespace")} >= {"default",
                                                                              "kube-system"}
    assert "gateway.networking.k8s.io/v1/HTTPRoute" in server.kinds()
    assert server.get("v1", "ConfigMap", "i", "default")["data"] == {"k": "v"}
    server.register_crd("example.com", "v1", "Thing", "things", namespaced=False)
    server.reset()
    assert server.objects("ConfigMap") == [] and server.stats.total == 0
    assert "example.com/v1/Thing" not in server.kinds()
    assert "gateway.networking.k8s.io/v1/HTTPRoute" in server.kinds()


def test_kubeconfig_contexts(kube_api_factory) -> None:
    staging = kube_api_factory(context="staging")
    prod = kube_api_factory(context="prod")
    from tests.kubeapi import write_kubeconfig
    path = write_kubeconfig(staging.kubeconfig_path.parent / "multi",
                            {"staging": staging.server, "prod": prod.server})
    contexts, active = config.list_kube_config_contexts(config_file=str(path))
    assert [c["name"] for c in contexts] == ["staging", "prod"] and active["name"] == "staging"
    prod_client = config.new_client_from_config(config_file=str(path), context="prod")
    client.CoreV1Api(prod_client).create_namespaced_config_map("default", configmap("p"))
    assert prod.server.get("v1", "ConfigMap", "p", "default") is not None
    assert staging.server.get("v1", "ConfigMap", "p", "default") is None
    single = config.new_client_from_config(config_file=str(staging.kubeconfig_path))
    assert client.CoreV1Api(single).read_namespace("default").metadata.name == "default"
    prod_client.close()
    single.close()


def test_standalone_server_context_manager() -> None:
    with KubeApiServer() as server:
        api = api_client_for(server)
        assert client.CoreV1Api(api).list_namespace().items
        api.close()
    with pytest.raises(RuntimeError):
        _ = server.url
