"""The envtest fixture itself: a real kube-apiserver with RBAC, the upstream CRDs, an audit log, fresh namespaces."""

from __future__ import annotations

import pytest

from tests.envtest import wait_for

from reconciler.errors import KubeError
from reconciler.results import ObjectRef


def configmap(ns: str, name: str = "c", **data: str) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns}, "data": data}


def test_real_server_canonicalises_and_validates(kube, namespace):
    version = kube.request("GET", "/version")[1]
    assert version["gitVersion"].startswith("v1.36")
    container = {"name": "c", "image": "x", "resources": {
        "requests": {"cpu": "1000m", "memory": "1024Mi"}, "limits": {"memory": "512Mi"}}}
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "namespace": namespace},
                  "spec": {"selector": {"matchLabels": {"app": "d"}}, "template": {
                      "metadata": {"labels": {"app": "d"}}, "spec": {"containers": [container]}}}}
    with pytest.raises(KubeError) as invalid:  # a limit below its request: the stand-in accepted this
        kube.apply(deployment, dry_run=True)
    assert invalid.value.status == 422
    container["resources"]["limits"]["memory"] = "2048Mi"
    stored = kube.apply(deployment, dry_run=True)["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert stored["requests"] == {"cpu": "1", "memory": "1Gi"} and stored["limits"] == {"memory": "2Gi"}


def test_upstream_crds_are_served_and_validate(kube, namespace):
    route = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
             "metadata": {"name": "r", "namespace": namespace},
             "spec": {"rules": [{"backendRefs": [{"name": "svc", "port": 80, "weight": "20"}]}]}}
    with pytest.raises(KubeError):  # a string weight is rejected by the CRD's schema
        kube.apply(route)
    route["spec"]["rules"][0]["backendRefs"][0]["weight"] = 20
    assert kube.apply(route)["spec"]["rules"][0]["backendRefs"][0]["weight"] == 20
    for api_version, kind in (("networking.istio.io/v1", "VirtualService"), ("monitoring.coreos.com/v1", "PodMonitor")):
        assert kube.list(api_version, kind, namespace) == []


def test_audit_log_counts_this_tests_writes(envtest, kube, namespace):
    mark = envtest.audit.mark()
    kube.apply(configmap(namespace, a="1"))
    kube.apply(configmap(namespace, a="2"), dry_run=True)
    kube.get(ObjectRef("v1", "ConfigMap", namespace, "c"))
    events = [e for e in envtest.audit.since(mark, user="admin") if e.namespace == namespace]
    assert [(e.verb, e.write, e.dry_run) for e in events] == [
        ("patch", True, False), ("patch", False, True), ("get", False, False)]


def test_service_account_token_has_only_its_rbac(envtest, kube, namespace, tmp_path):
    kube.create({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "bot", "namespace": namespace}})
    kube.apply({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                "metadata": {"name": "read-cm", "namespace": namespace},
                "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}]})
    kube.apply({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": "bot", "namespace": namespace},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read-cm"},
                "subjects": [{"kind": "ServiceAccount", "name": "bot", "namespace": namespace}]})
    kube.apply(configmap(namespace))
    bot = envtest.client(envtest.service_account_kubeconfig("bot", namespace, tmp_path / "bot.kubeconfig"))
    assert bot.get(ObjectRef("v1", "ConfigMap", namespace, "c"))["metadata"]["name"] == "c"
    with pytest.raises(KubeError) as forbidden:
        bot.apply(configmap(namespace, a="1"))
    assert forbidden.value.status == 403


def test_controller_manager_runs_deployments_and_deletes_namespaces(kcm, kube, new_namespace):
    ns = new_namespace("kcm")
    kube.apply({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "namespace": ns},
                "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "d"}},
                         "template": {"metadata": {"labels": {"app": "d"}},
                                      "spec": {"containers": [{"name": "c", "image": "x"}]}}}})
    pods = wait_for(lambda: (lambda found: found if len(found) == 2 else None)(kube.list("v1", "Pod", ns)))
    # the ReplicaSet controller made the Pods; no scheduler or kubelet, so they stay Pending
    assert {p["status"]["phase"] for p in pods} == {"Pending"}
    kube.delete(ObjectRef("v1", "Namespace", None, ns))
    assert kube.get(ObjectRef("v1", "Namespace", None, ns))["status"]["phase"] == "Terminating"


def deployment(ns: str, name: str, replicas: int = 2, **pod_spec) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": ns},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "c", "image": "x"}], **pod_spec}}}}


def test_simulated_nodes_run_fitting_pods_and_leave_the_rest_pending(sim_nodes, kube, new_namespace):
    ns = new_namespace("sim")
    gpu = {"nodeSelector": {"gitops.ml/pool": "gpu-a10g"},
           "containers": [{"name": "c", "image": "x", "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}
    kube.apply(deployment(ns, "cpu", nodeSelector={"gitops.ml/pool": "cpu-general"}))
    kube.apply(deployment(ns, "gpu-untolerated", replicas=1, **gpu))
    kube.apply(deployment(ns, "gpu", replicas=1, tolerations=[
        {"key": "nvidia.com/gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"}], **gpu))
    kube.apply(deployment(ns, "stuck", replicas=1))
    sim_nodes.stuck("stuck-", "unready")

    def available(name: str) -> bool:
        live = kube.get(ObjectRef("apps/v1", "Deployment", ns, name))
        return (live.get("status") or {}).get("availableReplicas") == live["spec"]["replicas"]

    with sim_nodes.running(ns):
        wait_for(lambda: available("cpu") and available("gpu"), what="the fitting Deployments to be available")
        pods = {p["metadata"]["name"].rsplit("-", 2)[0]: p for p in kube.list("v1", "Pod", ns)}
        wait_for(lambda: any(p["status"].get("phase") == "Running" for p in kube.list("v1", "Pod", ns)
                             if p["metadata"]["name"].startswith("stuck-")))
    assert pods["gpu"]["spec"]["nodeName"].startswith("sim-gpu-a10g-")
    assert not pods["gpu-untolerated"]["spec"].get("nodeName")  # the taint keeps it off the GPU node
    assert not available("gpu-untolerated") and not available("stuck")
