"""README command 1: `reconciler quickstart` on a fresh clone trains, tracks, builds, plans and hydrates."""

from __future__ import annotations

import git
import pytest
import yaml
from typer.testing import CliRunner

from reconciler.cli.main import app
from reconciler.render.hydrate import read_documents
from tests.test_reproducible_training import committed_md5


@pytest.mark.slow
def test_quickstart_on_a_fresh_clone(template_repo, tmp_path, monkeypatch):
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "bentoml"))
    monkeypatch.setenv("RECONCILER_IMAGES_FILE", str(tmp_path / "images.json"))
    result = CliRunner().invoke(app, ["quickstart", "--repo", str(template_repo)])
    assert result.exit_code == 0, result.output

    # weights trained, tracked by DVC and pushed to the local-directory remote
    assert (template_repo / "models/iris-classifier/model.pkl").is_file()
    assert any((template_repo / ".dvc-storage").rglob("*")), "nothing was pushed to the DVC remote"
    # a Bento per model, tagged with its content hash
    bentos = {p.parent.parent.name for p in (tmp_path / "bentoml" / "bentos").glob("*/*/bento.yaml")}
    assert bentos == {"iris-classifier", "digits-classifier"}
    # 3 environments x 2 models hydrated, in the Argo CD source hydrator layout
    hydrated = template_repo / "hydrated"
    for env in ("dev", "staging", "prod"):
        assert {"README.md", "hydrator.metadata", "manifest.yaml", "iris-classifier.model.yaml"} <= {
            p.name for p in (hydrated / env).iterdir()}
    prod = read_documents(hydrated / "prod")
    (deploy,) = [d for d in prod if d["kind"] == "Deployment" and d["metadata"]["name"].startswith("iris")]
    assert deploy["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert "first deployment" in result.output
    # the DVC pointers in git did not change: training at the versions of pipelines/requirements.lock
    # is deterministic on one machine kind, so a fresh clone's quickstart leaves `git status` clean
    changed = git.Repo(template_repo).git.diff("--name-only").split()
    # ... and equal the checkout's committed ones (the working tree may hold a local retrain)
    for model in ("iris-classifier", "digits-classifier"):
        pointer = yaml.safe_load((template_repo / f"models/{model}/model.pkl.dvc").read_text())
        assert pointer["outs"][0]["md5"] == committed_md5(model), f"{model}: quickstart trained other weights"
    assert not changed, (
        f"retraining changed {changed}: the committed DVC pointers were not trained at the versions "
        "pinned in pipelines/requirements.lock. Refresh them: `pip install -e '.[test]'`, then "
        "`reconciler pipeline run train --push`, and commit models/*/model.pkl.dvc and metrics.json "
        "together with the lock")
