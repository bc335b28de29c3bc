"""The first hour of a new user, error by error (issue #9 "What was measured"): each message asserted as
it reads now, with its fix line."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import git
import pytest
import yaml
from typer.testing import CliRunner

from reconciler.build.pipeline_runner import run_train
from reconciler.catalog.load import load_catalog
from reconciler.catalog.scaffold import Rename, class_name, new_model, plan_copy
from reconciler.cli import app
from reconciler.errors import ReconcilerError
from reconciler.plan.revisions import plan_revisions
from tests.conftest import TEMPLATE_MODELS, commit_all, tracked_weights


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new))


def _problems(root: Path, model: str) -> list:
    return load_catalog(root).errors[model].problems


def test_replicas_below_zero_says_the_bound_as_a_fix(template_repo):
    spec = template_repo / "models/digits-classifier/model.yaml"
    _edit(spec, "replicas: 2", "replicas: -1")
    line = next(i for i, text in enumerate(spec.read_text().splitlines(), 1) if "replicas: -1" in text)
    [problem] = _problems(template_repo, "digits-classifier")
    assert (problem.file, problem.field, problem.line) == ("models/digits-classifier/model.yaml", "serving.replicas", line)
    assert problem.message == "Input should be greater than or equal to 0"
    assert problem.fix == "use a value >= 0"


@pytest.mark.parametrize(("field", "bad", "fix"), [
    ("owner: ml-platform@example.com", "owner: [a, b]", "write a string (quote it if YAML reads it as a number or a boolean)"),
    ("resources: {cpu: 500m, memory: 1Gi}", "resources: {cpu: 500m, memory: 1Gi}\n  port: many",
     "write a whole number, e.g. 2"),
])
def test_every_validation_error_has_a_fix(template_repo, field, bad, fix):
    _edit(template_repo / "models/digits-classifier/model.yaml", field, bad)
    problems = _problems(template_repo, "digits-classifier")
    assert all(p.fix for p in problems) and fix in [p.fix for p in problems]


def test_missing_files_are_named_from_the_repository_root(template_repo):
    (template_repo / "models/iris-classifier/bentofile.yaml").unlink()
    (template_repo / "models/iris-classifier/model.pkl.dvc").unlink()
    text = [str(p) for p in _problems(template_repo, "iris-classifier")]
    assert text == [
        "models/iris-classifier/model.yaml (field 'bentofile'): models/iris-classifier/bentofile.yaml (bentofile) "
        "is missing\n  fix: add models/iris-classifier/bentofile.yaml (see docs/model-spec.md), or point 'bentofile' at it",
        "models/iris-classifier/model.yaml (field 'artifacts'): models/iris-classifier/model.pkl.dvc (artifact) is "
        "missing\n  fix: train and register the model: `reconciler pipeline run train --model iris-classifier --push` "
        "(or `dvc add` the file in models/iris-classifier/ and commit the pointer)"]
    assert all("bentofile file" not in t for t in text)


def test_a_bentofile_contradicting_model_yaml_is_an_error_naming_both(template_repo):
    bentofile = template_repo / "models/iris-classifier/bentofile.yaml"
    _edit(bentofile, 'service: "service.py:IrisClassifier"', 'service: "service.py:Other"')
    [problem] = _problems(template_repo, "iris-classifier")
    assert (problem.file, problem.field) == ("models/iris-classifier/bentofile.yaml", "service")
    assert problem.message == ("service 'service.py:Other' differs from models/iris-classifier/model.yaml service "
                               "'service.py:IrisClassifier' (model.yaml is the single source of truth)")
    assert problem.fix == "remove service: from models/iris-classifier/bentofile.yaml, or set it to 'service.py:IrisClassifier'"


def test_a_copied_folder_still_named_after_its_source_is_refused(template_repo):
    shutil.copytree(template_repo / "models/iris-classifier", template_repo / "models/penguin-classifier")
    _edit(template_repo / "models/penguin-classifier/model.yaml", "name: iris-classifier", "name: penguin-classifier")
    problems = {(p.file, p.field): str(p) for p in _problems(template_repo, "penguin-classifier")}
    assert set(problems) == {("models/penguin-classifier/bentofile.yaml", "name"),
                             ("models/penguin-classifier/bentofile.yaml", "labels.gitops.ml/model")}
    assert "set name: penguin-classifier in models/penguin-classifier/bentofile.yaml" in problems[
        ("models/penguin-classifier/bentofile.yaml", "name")]
    assert "iris-classifier" in load_catalog(template_repo).models  # the source is untouched


def test_model_new_rewrites_names_labels_and_the_service_class(template_repo):
    written = new_model(template_repo, "penguin-classifier", "iris-classifier", owner="ds@example.com",
                        description="Penguin species from 4 body measurements")
    folder = template_repo / "models/penguin-classifier"
    assert sorted(written) == sorted(f"models/penguin-classifier/{p}" for p in plan_copy(template_repo / "models/iris-classifier"))
    assert not (folder / "model.pkl.dvc").exists() and not (folder / "metrics.json").exists()
    spec = yaml.safe_load((folder / "model.yaml").read_text())
    assert (spec["name"], spec["owner"], spec["service"]) == ("penguin-classifier", "ds@example.com", "service.py:PenguinClassifier")
    assert "class PenguinClassifier" in (folder / "service.py").read_text()
    # the only thing it lacks is its own weights, and the error says how to get them
    [problem] = _problems(template_repo, "penguin-classifier")
    assert "reconciler pipeline run train --model penguin-classifier --push" in problem.fix
    with pytest.raises(ReconcilerError, match="models/penguin-classifier already exists"):
        new_model(template_repo, "penguin-classifier")
    with pytest.raises(ReconcilerError, match="'Penguin' is not a valid model name"):
        new_model(template_repo, "Penguin")


def test_rename_replaces_whole_names_only():
    rename = Rename("iris", "wine", "Iris", "Wine")
    assert rename.apply("iris iris-classifier Iris IrisX models/iris/") == "wine iris-classifier Wine IrisX models/wine/"
    assert class_name("wine-classifier-2") == "WineClassifier2" and class_name("3d-model") == "Model3dModel"


def test_plan_reports_weights_missing_from_the_remote_and_a_new_models_reason(template_repo):
    """Retrained without --push: the PR check fails naming the pointer; pushed, it passes."""
    repo = git.Repo(template_repo)
    run_train(template_repo, ["iris-classifier"], seed=1)  # new weights, only in the local DVC cache
    commit_all(repo, "retrain iris with another seed, forgot to push")
    plan = plan_revisions(template_repo, "HEAD~1", "HEAD", ["dev"])
    error = plan.environments["dev"].models["iris-classifier"].error
    assert error is not None and not plan.ok
    assert "1 DVC-tracked artifact(s) missing from DVC remote 'local' (.dvc-storage): models/iris-classifier/model.pkl" in error
    assert "pointer models/iris-classifier/model.pkl.dvc" in error
    assert "fix: `reconciler pipeline run train --model iris-classifier --push`" in error
    assert "dvc push models/iris-classifier/model.pkl.dvc" in error
    assert "digits-classifier" not in plan.environments["dev"].models  # unchanged: not checked, not listed
    assert plan_revisions(template_repo, "HEAD~1", "HEAD", ["dev"], check_artifacts=False).ok

    new_model(template_repo, "penguin-classifier", "iris-classifier", description="Penguin species from its measurements")
    run_train(template_repo, ["iris-classifier", "penguin-classifier"], seed=1, push=True)
    plan = plan_revisions(template_repo, "HEAD", None, ["dev"])
    assert plan.ok, plan.as_dict()
    assert plan.environments["dev"].models["penguin-classifier"].reasons == ["new model"]


def test_pipeline_run_train_says_whether_it_pushed(template_repo):
    args = ["pipeline", "run", "train", "--model", "iris-classifier", "--repo", str(template_repo)]
    kept = CliRunner().invoke(app, args)
    assert kept.exit_code == 0, kept.output
    assert ("NOT pushed: the weights are only in this machine's DVC cache, not in DVC remote 'local' (.dvc-storage); "
            "`reconciler plan` reports them as missing") in kept.output
    assert "`reconciler pipeline run train --model iris-classifier --push` or `dvc push`" in kept.output
    pushed = CliRunner().invoke(app, [*args, "--push"])
    assert "pushed: the weights are in DVC remote 'local' (.dvc-storage)" in pushed.output


@pytest.mark.slow
def test_build_right_after_quickstart_fetches_the_pushed_weights(template_repo, tmp_path):
    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "bentoml"), "RECONCILER_CONTAINER_ENGINE": "none",
           "DOCKER_CONFIG": str(tmp_path / "docker"), "COLUMNS": "200"}
    shutil.rmtree(template_repo / ".dvc-storage")  # a fresh clone has no DVC data at all
    reconciler = str(Path(sys.executable).parent / "reconciler")
    done = subprocess.run([reconciler, "quickstart"], cwd=template_repo, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not git.Repo(template_repo).is_dirty(), git.Repo(template_repo).git.status("--porcelain")
    # as on another machine: no weights in the tree (model.pkl, model.pt), an empty Bento store; only the DVC
    # remote has them
    weights = tracked_weights(template_repo)
    assert {w.name for w in weights} == {"model.pkl", "model.pt"}  # scikit-learn's and PyTorch's
    for path in weights:
        path.unlink()
    shutil.rmtree(template_repo / ".dvc" / "cache", ignore_errors=True)
    env["BENTOML_HOME"] = str(tmp_path / "bentoml-2")
    built = subprocess.run([reconciler, "build"], cwd=template_repo, env=env, capture_output=True, text=True)
    assert built.returncode == 0, built.stdout + built.stderr
    bentos = {p.parent.parent.name for p in (tmp_path / "bentoml-2" / "bentos").glob("*/*/bento.yaml")}
    assert bentos == set(TEMPLATE_MODELS)  # a Bento per model of the template, each from the fetched weights
