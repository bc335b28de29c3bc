"""environments/reconciler/: the manifests that run the reconciler render, validate, and grant every
verb the reconciler really uses (measured on the stand-in during a full reconcile pass) and no
kind it does not use."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import git
import pytest
import yaml

from reconciler.cluster.kube import KubeClient, RetryPolicy
from reconciler.run.loop import Reconciler, RunConfig
from reconciler.sync.commit import sync_commit
from reconciler.sync.planner import SyncOptions
from tests.conftest import PROJECT, commit_all

MANIFESTS = PROJECT / "environments" / "reconciler"
KUBECTL = Path(sys.executable).parent / "kubectl"
# server-side apply is a PATCH; when it creates the object the API server also checks `create`
RBAC_VERBS = {"apply": {"patch", "create"}, "update": {"update"}, "create": {"create"}, "delete": {"delete"},
              "get": {"get"}, "list": {"list"}, "watch": {"watch"}, "patch": {"patch"}}


@pytest.fixture(scope="module")
def rendered() -> list[dict]:
    out = subprocess.run([str(KUBECTL), "kustomize", str(MANIFESTS)], capture_output=True, text=True, check=True)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def test_manifests_render_and_validate_strictly(rendered, tmp_path):
    import kubernetes_validate

    for obj in rendered:
        kubernetes_validate.validate(obj, "1.33", strict=True)
    kinds = {(o["kind"], o["metadata"]["name"]) for o in rendered}
    assert ("Deployment", "model-gitops-reconciler") in kinds and ("ServiceAccount", "model-gitops-reconciler") in kinds
    dep = next(o for o in rendered if o["kind"] == "Deployment")
    assert dep["spec"]["template"]["spec"]["serviceAccountName"] == "model-gitops-reconciler"
    assert dep["spec"]["template"]["spec"]["containers"][0]["args"][0] == "run"


def granted(rendered: list[dict]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for obj in rendered:
        if obj["kind"] in ("Role", "ClusterRole"):
            for rule in obj["rules"]:
                assert "*" not in rule["verbs"] and "*" not in rule["resources"], "no wildcards"
                for res in rule["resources"]:
                    out.setdefault(res, set()).update(rule["verbs"])
    return out


def test_rbac_covers_exactly_what_a_reconcile_pass_uses(rendered, template_repo, kube_api, tmp_path, monkeypatch):
    monkeypatch.setenv("RECONCILER_IMAGES_FILE", str(tmp_path / "images.json"))
    # staging exercises everything a canary environment adds: PodMonitors and Gateway API routing,
    staging = template_repo / "environments" / "staging" / "environment.yaml"
    # ... and a spot pool (iris lands on it by kind): its PodDisruptionBudget
    staging.write_text(staging.read_text().replace("failureThreshold: 2}", "failureThreshold: 2, router: gateway-api}")
                       .replace("pools: [cpu-general, gpu-a10g, inf2]", "pools: [cpu-general, gpu-a10g-spot, gpu-a10g, inf2]")
                       + "monitoring: pod-monitor\n")
    # ... and dev gives iris a SOPS-encrypted Secret (decrypted in memory, applied with the model's objects)
    from tests.test_secrets import encrypt, identity, secret

    private, public = identity()
    sealed = template_repo / "environments/dev/secrets/iris-classifier/db.yaml"
    sealed.parent.mkdir(parents=True)
    sealed.write_text(encrypt(secret("models-dev", "rbac-test-password"), public))
    dev = template_repo / "environments" / "dev" / "environment.yaml"
    dev.write_text(dev.read_text() + "secrets: {ageKeyEnv: RBAC_TEST_AGE_KEY}\n")
    monkeypatch.setenv("RBAC_TEST_AGE_KEY", private)
    commit_all(git.Repo(template_repo), "staging: pod monitors, gateway api, spot; dev: a sealed secret")
    kube_api.server.register_crd("monitoring.coreos.com", "v1", "PodMonitor", "podmonitors")
    bare = tmp_path / "remote.git"
    git.Repo.init(bare, bare=True, initial_branch="main")
    work = git.Repo(template_repo)
    work.create_remote("origin", str(bare))
    work.git.push("origin", "main")
    kube = KubeClient.from_kubeconfig(kube_api.kubeconfig_path, retry=RetryPolicy(attempts=1))
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "model-gitops"}})
    rec = Reconciler(kube, RunConfig(repo_url=str(bare), branch="main", workdir=tmp_path / "mirror",
                                     environments=["dev", "staging"], state_namespace="model-gitops", listen=None,
                                     identity="a"))
    kube_api.server.stats.reset()
    assert all(r.result.ok for r in rec.tick())  # create everything
    shutil.rmtree(template_repo / "models" / "digits-classifier")
    iris = template_repo / "models" / "iris-classifier" / "model.yaml"
    iris.write_text(iris.read_text().replace("memory: 1Gi", "memory: 2Gi"))
    service = template_repo / "models" / "iris-classifier" / "service.py"
    service.write_text(service.read_text() + "\n# new version: a canary in staging\n")
    commit_all(work, "retire digits, new iris")
    work.git.push("origin", "main")
    dev, staging_pass = (r.result for r in rec.tick())
    assert dev.ok and {"configured", "pruned"} <= set(dev.summary().as_dict())
    assert staging_pass.ok, staging_pass.as_dict()
    # the next pass finds the canary ready and routes its first traffic step through an HTTPRoute
    assert sync_commit(kube, template_repo, "HEAD", "staging", SyncOptions()).ok
    assert kube_api.server.get("gateway.networking.k8s.io/v1", "HTTPRoute", "iris-classifier", "models-staging")
    assert kube_api.server.objects("PodMonitor", "models-staging")
    assert kube_api.server.get("v1", "Secret", "db", "models-dev")
    rec.lease.release()

    used: dict[str, set[str]] = {}
    for key in kube_api.server.stats.snapshot()["by_resource"]:
        verb, _, resource = key.partition(" ")
        if verb == "discovery" or not resource:
            continue
        used.setdefault(resource, set()).update(RBAC_VERBS[verb])
    rules = granted(rendered)
    for resource, verbs in used.items():
        assert verbs <= rules.get(resource, set()), f"{resource}: uses {sorted(verbs)}, granted {sorted(rules.get(resource, set()))}"
    unused = set(rules) - set(used)
    assert not unused, f"granted but never used: {sorted(unused)}"
