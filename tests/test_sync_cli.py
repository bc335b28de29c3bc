"""`reconciler sync ENV` end to end: the real catalog and renderer of a template repository (a real git
repository in a temp folder) applied through the real client to the real API server (envtest); writes are
counted from the server's audit log."""

from __future__ import annotations

import json
import shutil

import git
import pytest
from typer.testing import CliRunner

from reconciler import labels
from reconciler.cli.main import app
from tests.conftest import TEMPLATE_MODELS, commit_all

KINDS = (("apps/v1", "Deployment"), ("v1", "Service"), ("autoscaling/v2", "HorizontalPodAutoscaler"),
         ("keda.sh/v1alpha1", "ScaledObject"))


@pytest.fixture(autouse=True)
def _images_file(tmp_path, monkeypatch):
    monkeypatch.setenv("RECONCILER_IMAGES_FILE", str(tmp_path / "images.json"))


def run_sync(envtest, repo, *extra: str) -> dict:
    result = CliRunner().invoke(app, ["sync", "dev", "--repo", str(repo), "--kubeconfig", str(envtest.kubeconfig),
                                      "--context", "envtest", "--format", "json", *extra])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    data = json.loads(result.stdout)
    data["exit_code"] = result.exit_code
    return data


def writes(envtest, mark: int) -> int:
    """Writes to the cluster since `mark`, apart from the sync's record in the state namespace (the
    bookkeeping `status` and `history` read, written once per sync since the first sync creates it)."""
    return sum(e.write for e in envtest.audit.since(mark, user="admin") if e.namespace != "model-gitops")


def managed(kube, ns: str) -> list[dict]:
    return [o for api, kind in KINDS for o in kube.list(api, kind, ns)
            if (o["metadata"].get("labels") or {}).get(labels.MANAGED_BY) == labels.MANAGER]


def model_actions(report: dict, model: str) -> dict[str, int]:
    return report["models"][model]["summary"]


def test_sync_applies_the_commit_then_a_second_pass_writes_nothing(envtest, envtest_repo, kube):
    repo, ns = envtest_repo.root, envtest_repo.namespaces["dev"]
    first = run_sync(envtest, repo)
    assert first["exit_code"] == 0, first
    assert set(first["models"]) == set(TEMPLATE_MODELS)  # every model of the commit
    assert first["summary"]["created"] >= 4 and set(first["summary"]) == {"created"}
    deployments = kube.list("apps/v1", "Deployment", ns)
    assert {d["metadata"]["labels"][labels.MODEL] for d in deployments} == set(TEMPLATE_MODELS)
    assert first["commit"] == git.Repo(repo).head.commit.hexsha

    mark = envtest.audit.mark()
    second = run_sync(envtest, repo)
    assert second["exit_code"] == 0
    assert set(second["summary"]) == {"unchanged"}, second["summary"]  # the server's defaults are no drift
    assert writes(envtest, mark) == 0


def test_one_model_changed_in_git_only_its_objects_are_written(envtest, envtest_repo, kube):
    repo, ns = envtest_repo.root, envtest_repo.namespaces["dev"]
    run_sync(envtest, repo)
    spec = repo / "models" / "iris-classifier" / "model.yaml"
    spec.write_text(spec.read_text().replace("memory: 1Gi", "memory: 2048Mi"))  # stored by the server as 2Gi
    commit_all(git.Repo(repo), "iris: more memory")
    mark = envtest.audit.mark()
    report = run_sync(envtest, repo)
    assert report["exit_code"] == 0
    assert set(model_actions(report, "digits-classifier")) == {"unchanged"}
    iris = model_actions(report, "iris-classifier")
    assert iris.get("configured", 0) >= 1
    assert writes(envtest, mark) == iris["configured"] + 1  # plus the inventory record
    dep = [d for d in kube.list("apps/v1", "Deployment", ns)
           if d["metadata"]["labels"][labels.MODEL] == "iris-classifier"][0]
    assert dep["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"] == "2Gi"
    mark = envtest.audit.mark()
    again = run_sync(envtest, repo)  # "2048Mi" in git against "2Gi" live is the same quantity
    assert set(again["summary"]) == {"unchanged"} and writes(envtest, mark) == 0


def test_model_removed_from_git_is_pruned_and_dry_run_writes_nothing(envtest, envtest_repo, kube):
    repo, ns = envtest_repo.root, envtest_repo.namespaces["dev"]
    run_sync(envtest, repo)
    shutil.rmtree(repo / "models" / "digits-classifier")
    commit_all(git.Repo(repo), "retire digits")
    mark = envtest.audit.mark()
    preview = run_sync(envtest, repo, "--dry-run")
    assert preview["dryRun"] and preview["summary"]["pruned"] >= 2
    assert writes(envtest, mark) == 0
    # the dry run wrote nothing: every model of the first sync is still there
    assert {o["metadata"]["labels"][labels.MODEL] for o in managed(kube, ns)} == set(TEMPLATE_MODELS)
    report = run_sync(envtest, repo)
    assert report["exit_code"] == 0
    assert {o["model"] for o in report["objects"] if o["action"] == "pruned"} == {"digits-classifier"}
    # the others stay
    assert {o["metadata"]["labels"][labels.MODEL] for o in managed(kube, ns)} == set(TEMPLATE_MODELS) - {
        "digits-classifier"}


def test_text_output_and_unreachable_cluster_exit_code(envtest, envtest_repo, tmp_path):
    result = CliRunner().invoke(app, ["sync", "dev", "--repo", str(envtest_repo.root), "--kubeconfig",
                                      str(envtest.kubeconfig), "--context", "envtest"])
    assert result.exit_code == 0, result.output
    assert "iris-classifier" in result.stdout and "created" in result.stdout
    missing = CliRunner().invoke(app, ["sync", "dev", "--repo", str(envtest_repo.root),
                                       "--kubeconfig", str(tmp_path / "nope")])
    assert missing.exit_code == 1  # failed (2 is for usage errors)
