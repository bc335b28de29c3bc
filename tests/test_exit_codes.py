"""Exit codes mean the same for every command: 0 ok, 1 failed, 2 usage, 3 partial or refused.

The sync cases run against a real API server (envtest)."""

from __future__ import annotations

import json
import shutil

import git
from typer.testing import CliRunner

from reconciler.cli import app
from reconciler.cli.exits import ExitCode, outcome
from tests.conftest import commit_all


def test_outcome_table():
    assert outcome(done=3, failed=0) is ExitCode.OK
    assert outcome(done=0, failed=2) is ExitCode.FAILED
    assert outcome(done=2, failed=1) is ExitCode.PARTIAL
    assert outcome(done=0, failed=0, refused=4) is ExitCode.PARTIAL
    assert outcome(done=5, failed=0, refused=1) is ExitCode.PARTIAL


def invoke(*args):
    result = CliRunner().invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def test_render_plan_hydrate_share_the_codes(template_repo, tmp_path):
    repo = str(template_repo)
    assert invoke("render", "dev", "--repo", repo).exit_code == 0
    assert invoke("render", "nope", "--repo", repo).exit_code == 1
    assert invoke("render", "dev", "--bogus-option", "--repo", repo).exit_code == 2
    assert invoke("hydrate", "--repo", repo).exit_code == 2  # neither --out nor --branch-prefix
    spec = template_repo / "models" / "iris-classifier" / "model.yaml"
    spec.write_text(spec.read_text().replace("name: iris-classifier", "name: Iris"))
    assert invoke("render", "dev", "--repo", repo).exit_code == 3  # digits rendered, iris did not
    assert invoke("plan", "--base", "empty", "--repo", repo).exit_code == 3
    assert invoke("hydrate", "--out", str(tmp_path / "out"), "--repo", repo).exit_code == 1  # no environment written


def test_a_refused_mass_prune_exits_3(envtest_repo, envtest):
    root = envtest_repo.root
    sync = ["sync", "dev", "--repo", str(root), "--kubeconfig", str(envtest.kubeconfig), "--context", "envtest",
            "--format", "json"]
    first = invoke(*sync)
    assert first.exit_code == 0, first.output
    for folder in (root / "models").iterdir():
        shutil.rmtree(folder)
    commit_all(git.Repo(root), "every model gone: the render is empty")
    refused = invoke(*sync)
    report = json.loads(refused.stdout)
    assert report["summary"].get("pruned", 0) == 0
    assert any(o.get("refused") for o in report["objects"]), report["objects"]
    assert refused.exit_code == 3 and report["ok"] is False
    allowed = invoke(*sync, "--allow-empty-prune")
    assert allowed.exit_code == 0 and json.loads(allowed.stdout)["summary"].get("pruned", 0) >= 4
