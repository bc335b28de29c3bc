"""README command 1: `reconciler quickstart` on a fresh clone trains, tracks, builds, plans and hydrates."""

from __future__ import annotations

import git
import pytest
import yaml
from typer.testing import CliRunner

from reconciler.cli.main import app
from reconciler.render.hydrate import read_documents
from tests.conftest import TEMPLATE_MODELS, tracked_weights
from tests.test_reproducible_training import committed_md5


@pytest.mark.slow
def test_quickstart_on_a_fresh_clone(template_repo, tmp_path, monkeypatch):
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "bentoml"))
    monkeypatch.setenv("RECONCILER_IMAGES_FILE", str(tmp_path / "images.json"))
    result = CliRunner().invoke(app, ["quickstart", "--repo", str(template_repo)])
    assert result.exit_code == 0, result.output

    # every model trained (scikit-learn's model.pkl, PyTorch's model.pt), tracked by DVC, pushed to the local remote
    weights = tracked_weights(template_repo)
    assert {w.name for w in weights} == {"model.pkl", "model.pt"} and all(w.is_file() for w in weights), weights
    assert any((template_repo / ".dvc-storage").rglob("*")), "nothing was pushed to the DVC remote"
    # a Bento per model of the template, tagged with its content hash
    bentos = {p.parent.parent.name for p in (tmp_path / "bentoml" / "bentos").glob("*/*/bento.yaml")}
    assert bentos == set(TEMPLATE_MODELS)
    # every model hydrated in each of the 3 environments, in the Argo CD source hydrator layout
    hydrated = template_repo / "hydrated"
    for env in ("dev", "staging", "prod"):
        assert {"README.md", "hydrator.metadata", "manifest.yaml", *(f"{m}.model.yaml" for m in TEMPLATE_MODELS)} <= {
            p.name for p in (hydrated / env).iterdir()}
    prod = read_documents(hydrated / "prod")
    (deploy,) = [d for d in prod if d["kind"] == "Deployment" and d["metadata"]["name"].startswith("iris")]
    assert deploy["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert "first deployment" in result.output
    # the DVC pointers in git did not change: training at the versions of each model's lock under the numeric
    # profile (pipelines/numerics.py) is deterministic, so a fresh clone's quickstart leaves `git status` clean
    changed = git.Repo(template_repo).git.diff("--name-only").split()
    # ... and equal the checkout's committed ones (the working tree may hold a local retrain)
    for path in weights:
        model, artifact = path.parent.name, path.name
        pointer = yaml.safe_load((path.parent / f"{artifact}.dvc").read_text())
        assert pointer["outs"][0]["md5"] == committed_md5(model, artifact), f"{model}: quickstart trained other weights"
    assert not changed, (
        f"retraining changed {changed}: the committed DVC pointers were not trained at the versions "
        "pinned in the model's lock (models/<name>/requirements.lock, else pipelines/requirements.lock). Refresh "
        "them: `reconciler pipeline run train --push`, and commit models/*/*.dvc and metrics.json together with "
        "the lock")
