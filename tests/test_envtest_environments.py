"""Every environment of the template, as rendered and hydrated, against the real API server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from reconciler.run.reconcile import reconcile_pass
from reconciler.sync.planner import SyncOptions
from tests.conftest import PROJECT, TEMPLATE_MODELS

KUBECTL = Path(sys.executable).parent / "kubectl"
RECONCILER = Path(sys.executable).parent / "reconciler"


def test_hydrated_output_of_every_environment_passes_a_server_side_dry_run(envtest_repo, envtest, tmp_path):
    out = tmp_path / "rendered"
    done = subprocess.run([str(RECONCILER), "hydrate", "--repo", str(envtest_repo.root), "--out", str(out)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    envs = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert envs == sorted(yaml.safe_load((p / "environment.yaml").read_text())["name"]
                          for p in (PROJECT / "environments").iterdir() if (p / "environment.yaml").exists())
    admin = envtest.client()
    for env in envs:
        # a server-side dry run creates nothing, so the namespace it would create cannot hold the rest yet
        admin.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": envtest_repo.namespaces[env]}})
        files = sorted(str(f) for f in (out / env).rglob("*.yaml") if f.name != "kustomization.yaml")
        assert files, f"nothing hydrated for {env}"
        args = ["-k", str(out / env)] if (out / env / "kustomization.yaml").exists() else \
            [a for f in files for a in ("-f", f)]
        done = subprocess.run([str(KUBECTL), "--kubeconfig", str(envtest.kubeconfig), "apply", "--server-side",
                               # cluster-scoped objects (the PriorityClass) may already be owned by a
                               # reconciler pass of another test on this server: validate, do not contend
                               "--dry-run=server", "--force-conflicts", "--field-manager=dry-run-test", *args],
                              capture_output=True, text=True)
        assert done.returncode == 0, f"{env}: {done.stderr}"
        assert "serverside-applied (server dry run)" in done.stdout


@pytest.mark.parametrize("env", ["staging", "prod"])
def test_staging_and_prod_pods_can_be_created(envtest_repo, kcm, sim_nodes, env):
    """Their overlays name priorityClassName: model-serving: the environment renders that PriorityClass,
    so the Deployments' Pods are admitted (before, every Pod was refused and health said 'progressing')."""
    kube = kcm.client()
    with sim_nodes.running(envtest_repo.namespaces[env]):
        result = reconcile_pass(kube, envtest_repo.root, "HEAD", env, SyncOptions(wait=True, timeout=120))
    assert result.ok, json.dumps({m: v.get("health") for m, v in result.as_dict()["models"].items()})
    assert {m: h.status.value for m, h in result.health.items()} == {
        "(environment)": "healthy", **{m: "healthy" for m in TEMPLATE_MODELS}}
    pods = kube.list("v1", "Pod", envtest_repo.namespaces[env])
    assert pods and {p["spec"].get("priorityClassName") for p in pods} == {"model-serving"}
    assert {p["spec"].get("priority") for p in pods} == {100000}


def test_an_overlay_naming_an_undeclared_priority_class_is_a_model_error(envtest_repo):
    from reconciler.desired.state import desired_at

    env = envtest_repo.root / "environments" / "prod" / "environment.yaml"
    env.write_text(env.read_text().replace("priorityClasses: {model-serving: 100000}\n", ""))
    state = desired_at(envtest_repo.root, None, ["prod"])
    errors = state.errors_by_model("prod")
    assert set(errors) == set(TEMPLATE_MODELS)  # every model of the environment: its overlay names the class
    error = errors["iris-classifier"]
    text = str(error) + str(getattr(error, "fix", ""))
    assert "model-serving" in text and "priorityClasses" in text and "environments/prod/environment.yaml" in text


def test_drift_paths_print_intact_in_text_output(envtest_repo, envtest):
    """`spec.ports[http].port` once printed as `spec.ports.port` (rich ate the brackets as markup)."""
    from typer.testing import CliRunner

    from reconciler.cli.main import app
    from reconciler.results import ObjectRef

    def sync_dev() -> str:
        result = CliRunner().invoke(app, ["sync", "dev", "--repo", str(envtest_repo.root), "--kubeconfig",
                                          str(envtest.kubeconfig), "--context", "envtest"])
        return result.output

    sync_dev()
    ns = envtest_repo.namespaces["dev"]
    kube = envtest.client()
    (service,) = [s for s in kube.list("v1", "Service", ns) if s["metadata"]["name"].startswith("iris-classifier")][:1]
    port = service["spec"]["ports"][0]
    kube.patch(ObjectRef("v1", "Service", ns, service["metadata"]["name"]),
               {"spec": {"ports": [{"name": port["name"], "port": port["port"], "targetPort": 9999}]}},
               type="strategic", field_manager="kubectl-edit")
    out = sync_dev()
    assert f"spec.ports[{port['name']}].targetPort" in out, out


def test_a_model_with_a_running_canary_reports_the_health_of_its_objects(envtest_repo, kcm, sim_nodes):
    """Its health once said 'healthy' with no objects at all: the canary's own Deployment was not looked at."""
    import git

    from tests.conftest import commit_all

    kube = kcm.client()
    ns = envtest_repo.namespaces["staging"]
    options = SyncOptions(wait=True, timeout=120)
    with sim_nodes.running(ns):
        assert reconcile_pass(kube, envtest_repo.root, "HEAD", "staging", options).ok
        service = envtest_repo.root / "models/iris-classifier/service.py"
        service.write_text(service.read_text() + "\n# a new model version\n")
        commit_all(git.Repo(envtest_repo.root), "iris: new version")
        sim_nodes.stuck("iris-classifier-", "unready")  # the canary's pods never become ready
        result = reconcile_pass(kube, envtest_repo.root, "HEAD", "staging", SyncOptions(wait=True, timeout=20))
    iris = result.health["iris-classifier"]
    canaries = [ref for ref in iris.objects if ref.startswith("Deployment/") and ref.endswith("-canary")]
    assert canaries, f"the canary Deployment is not in the model's health: {sorted(iris.objects)}"
    assert iris.status.value != "healthy", iris.as_dict()
