"""`reconciler sync ENV` end to end: the real catalog and renderer of a template repository (a real git
repository in a temp folder) applied through the real client to the API stand-in."""

from __future__ import annotations

import json
import shutil

import git
import pytest
from typer.testing import CliRunner

from reconciler import labels
from reconciler.cli.main import app
from tests.conftest import commit_all


@pytest.fixture(autouse=True)
def _images_file(tmp_path, monkeypatch):
    monkeypatch.setenv("RECONCILER_IMAGES_FILE", str(tmp_path / "images.json"))


def run_sync(repo, kube_api, *extra: str) -> dict:
    result = CliRunner().invoke(app, ["sync", "dev", "--repo", str(repo), "--kubeconfig",
                                      str(kube_api.kubeconfig_path), "--context", "standin", "--format", "json", *extra])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    data = json.loads(result.stdout)
    data["exit_code"] = result.exit_code
    return data


def model_actions(report: dict, model: str) -> dict[str, int]:
    return report["models"][model]["summary"]


def test_sync_applies_the_commit_then_a_second_pass_writes_nothing(template_repo, kube_api):
    first = run_sync(template_repo, kube_api)
    assert first["exit_code"] == 0, first
    assert set(first["models"]) == {"iris-classifier", "digits-classifier"}
    assert first["summary"]["created"] >= 4 and set(first["summary"]) == {"created"}
    deployments = kube_api.server.objects("Deployment", "models-dev")
    assert {d["metadata"]["labels"][labels.MODEL] for d in deployments} == {"iris-classifier", "digits-classifier"}
    assert first["commit"] == git.Repo(template_repo).head.commit.hexsha

    kube_api.server.stats.reset()
    second = run_sync(template_repo, kube_api)
    assert second["exit_code"] == 0
    assert set(second["summary"]) == {"unchanged"}
    assert kube_api.server.stats.snapshot()["writes"] == 0


def test_one_model_changed_in_git_only_its_objects_are_written(template_repo, kube_api):
    run_sync(template_repo, kube_api)
    spec = template_repo / "models" / "iris-classifier" / "model.yaml"
    spec.write_text(spec.read_text().replace("memory: 1Gi", "memory: 2Gi"))
    commit_all(git.Repo(template_repo), "iris: more memory")
    kube_api.server.stats.reset()
    report = run_sync(template_repo, kube_api)
    assert report["exit_code"] == 0
    assert set(model_actions(report, "digits-classifier")) == {"unchanged"}
    iris = model_actions(report, "iris-classifier")
    assert iris.get("configured", 0) >= 1
    written = kube_api.server.stats.snapshot()["writes"]
    assert written == iris["configured"] + 1  # plus the inventory record
    dep = [d for d in kube_api.server.objects("Deployment", "models-dev")
           if d["metadata"]["labels"][labels.MODEL] == "iris-classifier"][0]
    assert dep["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"] == "2Gi"


def test_model_removed_from_git_is_pruned_and_dry_run_writes_nothing(template_repo, kube_api):
    run_sync(template_repo, kube_api)
    shutil.rmtree(template_repo / "models" / "digits-classifier")
    commit_all(git.Repo(template_repo), "retire digits")
    kube_api.server.stats.reset()
    preview = run_sync(template_repo, kube_api, "--dry-run")
    assert preview["dryRun"] and preview["summary"]["pruned"] >= 2
    assert kube_api.server.stats.snapshot()["writes"] == 0
    report = run_sync(template_repo, kube_api)
    assert report["exit_code"] == 0
    assert {o["model"] for o in report["objects"] if o["action"] == "pruned"} == {"digits-classifier"}
    left = {o["metadata"]["labels"].get(labels.MODEL) for o in kube_api.server.objects(namespace="models-dev")
            if (o["metadata"].get("labels") or {}).get(labels.MANAGED_BY) == labels.MANAGER
            and o["kind"] in ("Deployment", "Service", "HorizontalPodAutoscaler")}
    assert left == {"iris-classifier"}


def test_text_output_and_unreachable_cluster_exit_code(template_repo, kube_api, tmp_path):
    result = CliRunner().invoke(app, ["sync", "dev", "--repo", str(template_repo), "--kubeconfig",
                                      str(kube_api.kubeconfig_path), "--context", "standin"])
    assert result.exit_code == 0, result.output
    assert "iris-classifier" in result.stdout and "created" in result.stdout
    missing = CliRunner().invoke(app, ["sync", "dev", "--repo", str(template_repo),
                                       "--kubeconfig", str(tmp_path / "nope")])
    assert missing.exit_code == 1  # failed (2 is for usage errors)
