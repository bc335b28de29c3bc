"""`reconciler sync` in an environment with canaries on: a changed model image starts a canary
instead of replacing the stable version, and what the canary holds is neither applied nor pruned."""

from __future__ import annotations

import json

import git
import pytest
from typer.testing import CliRunner

from reconciler.cli.main import app
from tests.conftest import commit_all

NS = "models-staging"


@pytest.fixture(autouse=True)
def _images_file(tmp_path, monkeypatch):
    monkeypatch.setenv("RECONCILER_IMAGES_FILE", str(tmp_path / "images.json"))
    monkeypatch.delenv("RECONCILER_PROMETHEUS_URL", raising=False)


def sync_staging(repo, kube_api) -> dict:
    result = CliRunner().invoke(app, ["sync", "staging", "--repo", str(repo), "--kubeconfig",
                                      str(kube_api.kubeconfig_path), "--context", "standin", "--format", "json"])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return json.loads(result.stdout)


def image_of(deployment: dict) -> str:
    return deployment["spec"]["template"]["spec"]["containers"][0]["image"]


def test_a_changed_image_starts_a_canary_and_keeps_stable(template_repo, kube_api):
    first = sync_staging(template_repo, kube_api)
    assert first["summary"].get("created", 0) >= 4, first
    stable_before = kube_api.server.get("apps/v1", "Deployment", "iris-classifier-gpu-a10g", NS)
    assert stable_before is not None

    service = template_repo / "models/iris-classifier/service.py"
    service.write_text(service.read_text() + "\n# a new model version\n")
    commit_all(git.Repo(template_repo), "iris: new version")
    second = sync_staging(template_repo, kube_api)

    stable = kube_api.server.get("apps/v1", "Deployment", "iris-classifier-gpu-a10g", NS)
    canary = kube_api.server.get("apps/v1", "Deployment", "iris-classifier-gpu-a10g-canary", NS)
    assert image_of(stable) == image_of(stable_before), "the stable version must not be replaced without analysis"
    assert canary is not None and image_of(canary) != image_of(stable)
    state = kube_api.server.get("v1", "ConfigMap", "rollout-iris-classifier", NS)
    assert state is not None and json.loads(state["data"]["state.json"])["phase"] in {"initializing", "progressing"}
    # the other model, unchanged, had nothing to roll out
    assert kube_api.server.get("apps/v1", "Deployment", "digits-classifier-inf2-canary", NS) is None
    # nothing the canary holds was pruned
    assert "pruned" not in second["summary"], second

    # without metrics the canary never promotes: another pass keeps stable on the old image
    sync_staging(template_repo, kube_api)
    stable_after = kube_api.server.get("apps/v1", "Deployment", "iris-classifier-gpu-a10g", NS)
    assert image_of(stable_after) == image_of(stable_before)


def test_a_dry_run_says_canaries_were_not_evaluated(template_repo, kube_api):
    sync_staging(template_repo, kube_api)
    result = CliRunner().invoke(app, ["sync", "staging", "--repo", str(template_repo), "--kubeconfig",
                                      str(kube_api.kubeconfig_path), "--context", "standin", "--format", "json", "--dry-run"])
    report = json.loads(result.stdout)
    assert any("canaries were not evaluated" in n for n in report["notes"]), report["notes"]
    assert kube_api.server.get("apps/v1", "Deployment", "iris-classifier-gpu-a10g-canary", NS) is None
