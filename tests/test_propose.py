"""Training closes the loop: register pushes the weights to the DVC remote and proposes pointer + metrics to git."""

from __future__ import annotations

import json
import subprocess

import git
import pytest
import yaml

from pipelines.propose import ProposeError, propose
from reconciler.build.pipeline_runner import run_train
from reconciler.plan.revisions import plan_revisions

MODEL = "iris-classifier"


def test_register_locally_leaves_a_branch_with_the_new_pointer_and_metrics_and_plan_shows_the_change(
        template_repo, tmp_path):
    repo = git.Repo(template_repo)
    bare = tmp_path / "origin.git"
    git.Repo.init(bare, bare=True, initial_branch="main")
    repo.create_remote("origin", str(bare))
    repo.git.push("origin", "main")
    before_pointer = (template_repo / "models" / MODEL / "model.pkl.dvc").read_text()
    before_metrics = json.loads((template_repo / "models" / MODEL / "metrics.json").read_text())

    # retrain with another seed (other weights, other metrics), register with a push to the local DVC remote
    (run,) = run_train(template_repo, [MODEL], seed=7, push=True)
    md5 = yaml.safe_load((template_repo / "models" / MODEL / "model.pkl.dvc").read_text())["outs"][0]["md5"]
    assert md5 not in before_pointer
    storage = template_repo / ".dvc-storage" / "files" / "md5" / md5[:2] / md5[2:]
    assert storage.is_file()  # the weights are on the DVC remote

    proposal = propose(template_repo, MODEL)
    assert proposal.branch == f"train/{MODEL}-{md5[:12]}" and proposal.pushed_to == "origin"
    assert proposal.pull_request is None  # no GitHub token, not a GitHub origin: a branch, no PR
    # the branch is on the remote, with the new pointer and metrics; the working branch did not move
    remote = git.Repo(bare)
    tip = remote.commit(proposal.branch)
    assert tip.hexsha == proposal.commit and tip.parents[0].hexsha == repo.head.commit.hexsha
    assert md5 in (tip.tree / f"models/{MODEL}/model.pkl.dvc").data_stream.read().decode()
    metrics = json.loads((tip.tree / f"models/{MODEL}/metrics.json").data_stream.read())
    assert metrics == run.metrics and metrics["model_md5"] == md5
    assert repo.active_branch.name == "main"

    # `plan` on that branch shows the metric change with its values
    plan = plan_revisions(template_repo, "main", proposal.branch, ["prod"])
    reasons = "\n".join(plan.environments["prod"].models[MODEL].reasons)
    assert "evaluation:" in reasons
    changed = [k for k in ("accuracy", "f1_macro", "test_samples") if before_metrics.get(k) != metrics.get(k)]
    assert changed or before_metrics["model_md5"] != metrics["model_md5"]
    for key in changed:
        assert f"{key} {before_metrics[key]} -> {metrics[key]}" in reasons, reasons


def test_nothing_to_propose_is_a_clear_error(template_repo):
    (template_repo / "models" / MODEL / "metrics.json").unlink()
    with pytest.raises(ProposeError, match="no model.pkl.dvc and metrics.json to propose"):
        propose(template_repo, MODEL, push=False)


def test_the_cli_proposes_after_a_local_run(template_repo, tmp_path):
    from typer.testing import CliRunner

    from reconciler.cli.main import app

    repo = git.Repo(template_repo)
    bare = tmp_path / "origin.git"
    git.Repo.init(bare, bare=True, initial_branch="main")
    repo.create_remote("origin", str(bare))
    repo.git.push("origin", "main")
    pointer = template_repo / "models" / MODEL / "model.pkl.dvc"
    result = CliRunner().invoke(app, ["pipeline", "run", "train", "--model", MODEL, "--propose",
                                      "--repo", str(template_repo)])
    assert result.exit_code == 0, result.output
    md5 = yaml.safe_load(pointer.read_text())["outs"][0]["md5"]
    assert f"proposed {MODEL}: branch train/{MODEL}-{md5[:12]} pushed to origin" in result.output
    assert f"train/{MODEL}-{md5[:12]}" in subprocess.run(["git", "branch", "--list"], cwd=bare, capture_output=True,
                                                        text=True).stdout
