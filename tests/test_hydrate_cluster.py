"""Hydrated output and budgets on the real Kubernetes API server (envtest)."""

from __future__ import annotations

import subprocess

import pytest
import yaml
from typer.testing import CliRunner

from reconciler.cli.main import app
from reconciler.render.hydrate import read_documents
from reconciler.errors import KubeError
from reconciler.render.kustomize import kubectl_binary
from tests.envtest import wait_for

BUDGET = "budget: {monthlyUSD: 20000, nvidia.com/gpu: 8, aws.amazon.com/neuron: 16}\n"


def kubectl(envtest, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([kubectl_binary(), "--kubeconfig", str(envtest.kubeconfig), *args], input=stdin,
                          capture_output=True, text=True, timeout=120, check=False)


def test_hydrated_manifest_applies_cleanly_with_server_side_dry_run(envtest, envtest_repo, tmp_path):
    prod = envtest_repo.root / "environments/prod/environment.yaml"
    prod.write_text(prod.read_text() + BUDGET)  # so the ResourceQuota is part of the manifest too
    out = tmp_path / "hydrated"
    result = CliRunner().invoke(app, ["hydrate", "--repo", str(envtest_repo.root), "--out", str(out)])
    assert result.exit_code == 0, result.output
    for env, ns in sorted(envtest_repo.namespaces.items()):
        docs = read_documents(out / env)
        manifest = tmp_path / f"{env}-all.yaml"  # what Argo CD / Flux read from the folder, in one stream
        manifest.write_text(yaml.safe_dump_all(docs))
        assert docs[0]["kind"] == "Namespace" and docs[0]["metadata"]["name"] == ns
        # a dry run cannot create the namespace the other objects go to: create it for real first
        created = kubectl(envtest, "apply", "--server-side", "-f", "-", stdin=yaml.safe_dump(docs[0]))
        assert created.returncode == 0, created.stderr
        applied = kubectl(envtest, "apply", "--server-side", "--dry-run=server", "-f", str(manifest))
        assert applied.returncode == 0, applied.stderr
        assert applied.stdout.count("serverside-applied (server dry run)") == len(docs), applied.stdout
        assert not applied.stderr.strip(), applied.stderr
        if env == "prod":
            assert "resourcequota/model-budget serverside-applied" in applied.stdout


def _pod(ns: str, name: str, neurons: int) -> dict:
    resources = {"aws.amazon.com/neuron": str(neurons)}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns},
            "spec": {"containers": [{"name": "c", "image": "registry.test/x:1",
                                     "resources": {"requests": resources, "limits": resources}}]}}


def test_budget_resource_quota_refuses_a_pod_over_quota(kcm, kube, envtest_repo):
    from reconciler.desired.state import desired_at
    from reconciler.render.environment import ENVIRONMENT_GROUP

    prod = envtest_repo.root / "environments/prod/environment.yaml"
    prod.write_text(prod.read_text() + BUDGET)
    ns = envtest_repo.namespaces["prod"]
    shared = desired_at(envtest_repo.root, None, ["prod"]).objects_by_model("prod")[ENVIRONMENT_GROUP]
    (quota,) = [o for o in shared if o["kind"] == "ResourceQuota"]  # beside the environment's PriorityClass
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    kube.apply(quota)
    # the quota controller (kube-controller-manager) computes the usage; admission needs it
    wait_for(lambda: (kube.request("GET", f"/api/v1/namespaces/{ns}/resourcequotas/model-budget")[1]
                      .get("status", {}).get("hard")), timeout=60, what="quota status")
    kube.apply(_pod(ns, "fits", 16))  # exactly the quota
    with pytest.raises(KubeError) as refused:
        kube.apply(_pod(ns, "over", 1))
    assert refused.value.status == 403 and "exceeded quota: model-budget" in str(refused.value)
