"""The API server's naming and label rules, offline, give the real server's verdict.

A corpus of names, labels, annotations and selectors goes through reconciler.render (schemas +
server_rules, as `render` and `plan` check every object) and through the real kube-apiserver's
server-side apply dry run (envtest). Every case must get the same verdict: refused offline exactly
when the server refuses it. Then the command line: a model whose name makes a Service name too long is
a model error of `render` and `plan`, with a shorter name as the fix.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import git
import pytest

from reconciler.errors import KubeError
from reconciler.render import schemas, server_rules
from tests.conftest import commit_all


def offline_refuses(obj: dict, relaxed: bool = False) -> list[str]:
    return (schemas.problems(obj) or []) + server_rules.problems(obj, relaxed_service_names=relaxed)


def relaxed_service_names(kube) -> bool:
    """The server validates Service names as DNS-1123 labels (KEP-5311, on by default from 1.36)."""
    import re

    version = kube.request("GET", "/version", what="version")[1]
    major, minor = int(version["major"]), int(re.match(r"\d+", version["minor"]).group())
    return (major, minor) >= (1, 36)


def service(name: str, **meta) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, **meta},
            "spec": {"ports": [{"name": "http", "port": 80}], "selector": {"app": "x"}}}


def configmap(name: str = "cm", **meta) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, **meta}, "data": {"a": "b"}}


def deployment(name: str = "d", *, selector: dict | None = None, labels: dict | None = None,
               container: str = "main", port: str = "http", volume: str = "v") -> dict:
    labels = labels if labels is not None else {"app": "x"}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"selector": {"matchLabels": selector if selector is not None else labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": container, "image": "x",
                                                           "ports": [{"name": port, "containerPort": 80}]}],
                                           "volumes": [{"name": volume, "emptyDir": {}}]}}}}


def hpa(name: str) -> dict:
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": name},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "d"},
                     "minReplicas": 1, "maxReplicas": 2}}


def pdb(name: str, labels: dict) -> dict:
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": name},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": labels}}}


M = "m" * 55  # a 55-character model name: the issue's case
CORPUS: dict[str, dict] = {
    # Service names: a DNS-1035 label
    "service-63": service("s" * 63),
    "service-64": service("s" * 64),
    "service-model55-gpu-a10g": service(f"{M}-gpu-a10g"),
    "service-model55-canary": service(f"{M}-gpu-a10g-canary"),
    "service-digit-first": service("1abc"),
    "service-dot": service("a.b"),
    "service-upper": service("Abc"),
    "service-trailing-dash": service("abc-"),
    # other kinds: a DNS-1123 subdomain
    "deployment-64": deployment("d" * 64),
    "deployment-253": deployment("d" * 253),
    "deployment-254": deployment("d" * 254),
    "deployment-dots": deployment("a.b.c"),
    "deployment-digit-first": deployment("1abc"),
    "deployment-underscore": deployment("a_b"),
    "deployment-dot-dash": deployment("a.-b"),
    "configmap-253-dots": configmap(("c" * 62 + ".") * 4 + "c"),
    "configmap-empty-segment": configmap("a..b"),
    "hpa-model55": hpa(f"{M}-gpu-a10g"),
    "hpa-upper": hpa("Hpa"),
    # labels
    "label-value-63": configmap(labels={"gitops.ml/model": "v" * 63}),
    "label-value-64": configmap(labels={"gitops.ml/model": "v" * 64}),
    "label-value-empty": configmap(labels={"a": ""}),
    "label-value-dots": configmap(labels={"a": "x.y_z-1"}),
    "label-value-leading-dash": configmap(labels={"a": "-x"}),
    "label-value-trailing-dot": configmap(labels={"a": "x."}),
    "label-value-space": configmap(labels={"a": "x y"}),
    "label-key-name-63": configmap(labels={"k" * 63: "v"}),
    "label-key-name-64": configmap(labels={"k" * 64: "v"}),
    "label-key-prefix-253": configmap(labels={("p" * 62 + ".") * 4 + "p/x": "v"}),
    "label-key-prefix-upper": configmap(labels={"Example.com/x": "v"}),
    "label-key-two-slashes": configmap(labels={"a/b/c": "v"}),
    "label-key-empty-prefix": configmap(labels={"/x": "v"}),
    "label-key-underscore": configmap(labels={"a_b.c-d": "v"}),
    "label-key-leading-dot": configmap(labels={".x": "v"}),
    # annotations
    "annotation-any-value": configmap(annotations={"note": "x " * 100}),
    "annotation-key-upper": configmap(annotations={"Example.COM/Key": "v"}),
    "annotation-key-bad": configmap(annotations={"a b": "v"}),
    "annotation-total-over": configmap(annotations={"big": "x" * (256 * 1024)}),
    "annotation-total-under": configmap(annotations={"big": "x" * (256 * 1024 - 3)}),
    # pod templates and selectors
    "deployment-selector-mismatch": deployment(selector={"app": "y"}, labels={"app": "x"}),
    "deployment-template-label-64": deployment(labels={"app": "v" * 64}),
    "deployment-container-upper": deployment(container="Main"),
    "deployment-container-64": deployment(container="c" * 64),
    "deployment-port-name-16": deployment(port="p" * 16),
    "deployment-port-name-digits": deployment(port="8080"),
    "deployment-port-name-double-dash": deployment(port="a--b"),
    "deployment-volume-dot": deployment(volume="v.1"),
    "pdb-selector-value-64": pdb("p", {"app": "v" * 64}),
    "pdb-ok": pdb("p", {"app": "x"}),
}


def role(name: str) -> dict:
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": name}, "rules": []}


def named(kind: str, api: str, name: str, **body) -> dict:
    return {"apiVersion": api, "kind": kind, "metadata": {"name": name}, **body}


def job(name: str) -> dict:
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x"}]}}}}


def cronjob(name: str) -> dict:
    return {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": name},
            "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": {"spec": {
                "restartPolicy": "Never", "containers": [{"name": "c", "image": "x"}]}}}}}}


def service_ports(*names: str, selector: dict | None = None) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
            "spec": {"ports": [{"name": n, "port": 80 + i} for i, n in enumerate(names)],
                     "selector": selector or {"app": "x"}}}


# Cases the first corpus did not have (w24, issue 24's outside round): names with dots for each kind, RBAC's
# path-segment names, Job/CronJob limits, non-ASCII (the server counts bytes, Python characters),
# annotations that add up, label edge characters, Service port names and selectors, matchExpressions.
CORPUS_MORE: dict[str, dict] = {
    **{f"{kind.lower()}-dots": named(kind, api, "a.b.c", **body) for kind, api, body in [
        ("ConfigMap", "v1", {}), ("Secret", "v1", {}), ("ServiceAccount", "v1", {}),
        ("PodDisruptionBudget", "policy/v1", {"spec": {"minAvailable": 1, "selector": {"matchLabels": {"a": "b"}}}}),
        ("HorizontalPodAutoscaler", "autoscaling/v2", {"spec": {"scaleTargetRef": {
            "apiVersion": "apps/v1", "kind": "Deployment", "name": "d"}, "maxReplicas": 2}})]},
    "role-colon-upper": role("System:Reader_X"), "role-slash": role("a/b"), "role-dotdot": role(".."),
    "role-percent": role("a%b"), "role-dot": role("."), "role-dots-inside": role("a..b"),
    "job-63": job("j" * 63), "job-64": job("j" * 64), "job-dots": job("a.b"),
    "cronjob-52": cronjob("c" * 52), "cronjob-53": cronjob("c" * 53),
    "deployment-unicode": deployment("déploiement"),
    "label-value-unicode": configmap(labels={"a": "é"}),
    "label-value-newline": configmap(labels={"a": "x\ny"}),
    "label-value-underscore-ends": configmap(labels={"a": "_x_"}),
    "label-key-prefix-dot-dash": configmap(labels={"a.-b/x": "v"}),
    "label-key-prefix-254": configmap(labels={("p" * 62 + ".") * 4 + "pp/x": "v"}),
    "label-key-name-dot-end": configmap(labels={"x.": "v"}),
    "annotation-unicode-bytes-over": configmap(annotations={"k": "é" * (128 * 1024)}),  # 256 KiB + 1 byte in UTF-8
    "annotation-unicode-bytes-under": configmap(annotations={"k": "é" * (128 * 1024 - 1)}),
    "annotation-sum-over": configmap(annotations={"a": "x" * (128 * 1024), "b": "x" * (128 * 1024 - 1)}),
    "annotation-sum-exact": configmap(annotations={"a": "x" * (128 * 1024 - 1), "b": "x" * (128 * 1024 - 1)}),
    "annotation-key-prefix-long": configmap(annotations={"p" * 254 + "/x": "v"}),
    "service-port-name-upper": service_ports("HTTP"),
    "service-port-name-64": service_ports("p" * 64),
    "service-port-names-dup": service_ports("http", "http"),
    "service-selector-value-64": service_ports("http", selector={"app": "v" * 64}),
    "pdb-match-expression-value-64": named("PodDisruptionBudget", "policy/v1", "p", spec={"minAvailable": 1, "selector": {
        "matchExpressions": [{"key": "app", "operator": "In", "values": ["v" * 64]}]}}),
    "pdb-match-expression-key-bad": named("PodDisruptionBudget", "policy/v1", "p", spec={"minAvailable": 1, "selector": {
        "matchExpressions": [{"key": "a b", "operator": "Exists"}]}}),
    "deployment-template-label-key-64": deployment(labels={"k" * 64: "x"}),
    "service-ports-same-port-protocol": {**service_ports("a", "b"), "spec": {"selector": {"app": "x"}, "ports": [
        {"name": "a", "port": 80}, {"name": "b", "port": 80, "protocol": "TCP"}]}},
    "service-ports-same-port-other-protocol": {**service_ports("a", "b"), "spec": {"selector": {"app": "x"}, "ports": [
        {"name": "a", "port": 80}, {"name": "b", "port": 80, "protocol": "UDP"}]}},
    "deployment-containers-dup": {**deployment(), "spec": {**deployment()["spec"], "template": {
        "metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "c", "image": "x"}, {"name": "c", "image": "y"}]}}}},
    "deployment-init-and-app-same-name": {**deployment(), "spec": {**deployment()["spec"], "template": {
        "metadata": {"labels": {"app": "x"}}, "spec": {"initContainers": [{"name": "c", "image": "x"}],
                                                     "containers": [{"name": "c", "image": "y"}]}}}},
    "deployment-volumes-dup": {**deployment(), "spec": {**deployment()["spec"], "template": {
        "metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "c", "image": "x"}],
                                                     "volumes": [{"name": "v", "emptyDir": {}}, {"name": "v", "emptyDir": {}}]}}}},
    "deployment-port-names-dup": {**deployment(), "spec": {**deployment()["spec"], "template": {
        "metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "c", "image": "x", "ports": [
            {"name": "http", "containerPort": 80}, {"name": "http", "containerPort": 81}]}]}}}},
    "deployment-port-names-across-containers": {**deployment(), "spec": {**deployment()["spec"], "template": {
        "metadata": {"labels": {"app": "x"}}, "spec": {"containers": [
            {"name": "a", "image": "x", "ports": [{"name": "http", "containerPort": 80}]},
            {"name": "b", "image": "x", "ports": [{"name": "http", "containerPort": 81}]}]}}}},
}
CORPUS.update(CORPUS_MORE)


@pytest.mark.parametrize("case", sorted(CORPUS))
def test_offline_verdict_on_the_corpus_is_the_api_servers(kube, namespace, case) -> None:
    obj = {**CORPUS[case], "metadata": {**CORPUS[case]["metadata"], "namespace": namespace}}
    offline = offline_refuses(obj, relaxed_service_names(kube))
    try:
        kube.apply(obj, dry_run=True)
        server = None
    except KubeError as exc:
        # 422: invalid. A name that is not a path segment ('.', '..', 'a/b', 'a%b') never reaches validation: the
        # server answers 400, 404 or 405 for the URL it makes; duplicate keys of a list-map fail server-side apply's
        # typed patch with 500 (FIELD-NOTES: the SSA quirk). Refused all the same.
        assert exc.status == 422 or (exc.status in (400, 404, 405) and case.startswith("role-")) or \
            (exc.status == 500 and "duplicate entries for key" in str(exc)), f"{case}: the server failed otherwise: {exc}"
        server = str(exc)
    assert bool(offline) == bool(server), f"{case}: offline says {offline or 'valid'}, the server {server or 'valid'}"


@pytest.mark.parametrize("name,refused", [("a" * 63, False), ("a" * 64, True), ("1a", False), ("a.b", True)])
def test_namespace_names_are_dns_1123_labels(kube, name, refused) -> None:
    obj = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    try:
        kube.apply(obj, dry_run=True)
        server = False
    except KubeError as exc:
        assert exc.status == 422, str(exc)
        server = True
    assert server == refused == bool(server_rules.problems(obj))


def test_the_default_service_name_rule_is_the_strict_one_every_server_accepts() -> None:
    assert server_rules.problems(service("1abc")) and not server_rules.problems(service("1abc"), relaxed_service_names=True)
    assert server_rules.problems(service("a" * 64), relaxed_service_names=True)


def test_immutable_fields_of_an_existing_object() -> None:
    old = deployment(labels={"app": "x"})
    new = deployment(labels={"app": "y"})
    assert [p for p in server_rules.immutable_changes(old, new) if "spec.selector" in p]
    assert server_rules.immutable_changes(old, deployment(labels={"app": "x"}, container="other")) == []
    cm = {**configmap(), "immutable": True}
    assert server_rules.immutable_changes(cm, {**cm, "data": {"a": "c"}})


def test_immutable_selector_change_is_refused_by_the_server_too(kube, namespace) -> None:
    old = {**deployment(labels={"app": "x"}), "metadata": {"name": "d", "namespace": namespace}}
    new = {**deployment(labels={"app": "y"}), "metadata": {"name": "d", "namespace": namespace}}
    kube.apply(old)
    with pytest.raises(KubeError) as refused:
        kube.apply(new, dry_run=True)
    assert refused.value.status == 422 and "immutable" in str(refused.value)
    assert server_rules.immutable_changes(old, new)


# --------------------------------------------------------------------------- the command line


def reconciler(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).parent / "reconciler"), *args], cwd=repo,
                          env={**os.environ, "NO_COLOR": "1"}, capture_output=True, text=True, timeout=600)


def test_a_model_name_too_long_for_its_service_is_a_model_error_with_a_shorter_name(template_repo) -> None:
    long = "iris-" + "x" * 50  # 55 characters: the model's Service names pass 63
    old = template_repo / "models/iris-classifier"
    new = template_repo / "models" / long
    old.rename(new)
    for file in ("model.yaml", "bentofile.yaml"):
        (new / file).write_text((new / file).read_text().replace("iris-classifier", long))
    commit_all(git.Repo(template_repo), "a long model name")

    render = reconciler(template_repo, "render", "dev")
    assert render.returncode == 3, render.stderr  # the other model rendered
    assert "metadata.name" in render.stderr and "over the 63 of a DNS-1035 label" in render.stderr
    assert "use a model name of at most 51 characters" in render.stderr  # -cpu-general: 12 more
    plan = reconciler(template_repo, "plan", "--format", "markdown")
    assert plan.returncode != 0 and "DNS-1035" in plan.stdout + plan.stderr


def test_the_plan_refuses_a_changed_selector_of_an_existing_deployment() -> None:
    from reconciler.plan.changes import plan_environment

    base = {"iris": [deployment("iris", labels={"app": "iris"})], "digits": [deployment("digits")]}
    head = {"iris": [deployment("iris", labels={"app": "iris", "track": "v2"})], "digits": [deployment("digits")]}
    plan = plan_environment("dev", head, base)
    assert not plan.ok
    error = plan.models["iris"].error
    assert error and "Deployment/iris at spec.selector: field is immutable" in error and "new name" in error
    assert "digits" not in plan.models or plan.models["digits"].error is None
    assert all(o.action.value == "skipped" for o in plan.models["iris"].objects)
