"""Errors for the mistakes of a first hour (issue #19 item 10): a misspelt field or name gets "did you mean",
an uppercase name its lowercase form, a YAML syntax error the line to fix, a field at the wrong level the level it
belongs to, and no fix line names an internal class."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import git
import pytest
import yaml
from typer.testing import CliRunner

from reconciler.catalog import specs
from reconciler.catalog.files import load, read_yaml
from reconciler.catalog.load import load_catalog
from reconciler.catalog.scaffold import new_model
from reconciler.cli import app
from reconciler.errors import ReconcilerError, SpecError, closest
from tests.conftest import commit_all, copy_template

SPEC = "models/iris-classifier/model.yaml"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = copy_template(tmp_path / "repo")
    commit_all(git.Repo.init(root, initial_branch="main"), "template")
    return root


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new))


def _line(path: Path, needle: str) -> int:
    return next(i for i, text in enumerate(path.read_text().splitlines(), 1) if needle in text)


def _problems(root: Path, model: str = "iris-classifier") -> list:
    return load_catalog(root).errors[model].problems


# --------------------------------------------------------------------------- fields


def test_a_misspelt_field_gets_did_you_mean_with_its_line(repo):
    spec = repo / SPEC
    _edit(spec, "serving:\n  resources:", "serving:\n  replicaz: 2\n  resources:")
    [problem] = _problems(repo)
    assert (problem.field, problem.line) == ("serving.replicaz", _line(spec, "replicaz"))
    assert problem.message == "unknown field (did you mean 'replicas'?)"
    assert problem.fix == "rename 'replicaz' to 'replicas'"


def test_a_field_in_the_wrong_case_gets_its_spelling(repo):
    _edit(repo / SPEC, "slo: {p95LatencyMs: 150}", "slo: {p95latencyms: 150}")
    [problem] = _problems(repo)
    assert problem.message == "unknown field (did you mean 'p95LatencyMs'?)"


def test_a_field_at_the_wrong_level_says_where_it_belongs(repo):
    spec = repo / SPEC
    _edit(spec, "slo: {p95LatencyMs: 150}", "slo: {p95LatencyMs: 150}\nreplicas: 2")
    [problem] = _problems(repo)
    assert (problem.field, problem.line) == ("replicas", _line(spec, "replicas: 2"))
    assert problem.message == "unknown field here; 'replicas' belongs under 'serving'"
    assert problem.fix == "move 'replicas' under 'serving:' (serving.replicas)"


def test_a_nested_field_put_at_the_top_says_its_full_path(repo):
    _edit(repo / SPEC, "slo: {p95LatencyMs: 150}", "slo: {p95LatencyMs: 150}\nmaxReplicas: 8")
    [problem] = _problems(repo)
    assert problem.fix == "move 'maxReplicas' under 'serving.autoscaling:' (serving.autoscaling.maxReplicas)"


def test_a_top_level_field_nested_by_mistake_says_top_level(repo):
    _edit(repo / SPEC, "serving:\n  resources:", "serving:\n  owner: me@example.com\n  resources:")
    [problem] = _problems(repo)
    assert problem.message == "unknown field here; 'owner' belongs at the top level"
    assert problem.fix == "move 'owner' to the top level of the file (no indentation)"


def test_an_unknown_field_with_nothing_close_lists_the_known_ones(repo):
    _edit(repo / SPEC, "slo: {p95LatencyMs: 150}", "slo: {p95LatencyMs: 150, zzz: 1}")
    [problem] = _problems(repo)
    assert problem.message == "unknown field"
    assert problem.fix == "remove the field, or use one of: errorRate, p95LatencyMs"


def test_an_environment_field_misspelt(repo):
    path = repo / "environments/dev/environment.yaml"
    _edit(path, "namespace: models-dev", "namepsace: models-dev")
    with pytest.raises(SpecError) as caught:
        load(specs.EnvironmentSpec, path, display="environments/dev/environment.yaml", root=repo)
    unknown = [p for p in caught.value.problems if p.field == "namepsace"]
    assert unknown and unknown[0].fix == "rename 'namepsace' to 'namespace'"


# --------------------------------------------------------------------------- names


def test_an_uppercase_model_name_gets_its_lowercase_form(repo):
    _edit(repo / SPEC, "name: iris-classifier", "name: Iris-Classifier")
    problem = next(p for p in _problems(repo) if p.field == "name")
    assert "'Iris-Classifier' is not a DNS-1123 label" in problem.message
    assert problem.fix == "use 'iris-classifier' (lowercase)"


def test_model_new_with_an_uppercase_or_misspelt_name(repo):
    with pytest.raises(ReconcilerError) as upper:
        new_model(repo, "Fraud_Detector", "iris-classifier")
    assert upper.value.fix == "use 'fraud-detector': `reconciler model new fraud-detector --from iris-classifier`"
    with pytest.raises(ReconcilerError) as typo:
        new_model(repo, "fraud-detector", "iris-clasifier")
    assert "(did you mean 'iris-classifier'?)" in typo.value.message and typo.value.fix == "use --from iris-classifier"


def test_a_misspelt_environment_model_and_pool(repo):
    runner = CliRunner()
    env = runner.invoke(app, ["render", "devv", "--repo", str(repo)])
    assert env.exit_code == 1
    assert "no environment named 'devv' (did you mean 'dev'?)" in env.output and "fix: use 'dev'" in env.output
    model = runner.invoke(app, ["render", "dev", "--repo", str(repo), "--model", "Iris-Classifier"])
    assert "fix: use 'iris-classifier' (did you mean it?), a folder under models/" in " ".join(model.output.split())
    _edit(repo / "environments/dev/environment.yaml", "pools: [cpu-general]", "pools: [cpu-generl]")
    problem = load_catalog(repo).env_errors["dev"].problems[0]
    assert problem.message.startswith("unknown pool 'cpu-generl' (did you mean 'cpu-general'?)")


def test_closest_prefers_the_same_name_in_another_case():
    assert closest("Dev", ["dev", "prod"]) == "dev"
    assert closest("prd", ["dev", "prod", "staging"]) == "prod"
    assert closest("zzz", ["dev", "prod"]) is None


# --------------------------------------------------------------------------- YAML syntax: the line to fix


@pytest.mark.parametrize(("broken", "bad_line", "fix"), [
    # a key without ':' is noticed on the next line: the error names the key's own line
    ("owner ml-platform@example.com", "owner ml-platform", "put ':' after the key at that line"),
    # a quote never closed is noticed at the end of the file: the error names where it opened
    ('resources: {cpu: "1, memory: 1Gi}', 'cpu: "1, memory', "close the quote opened at that line"),
    # a line indented deeper than its siblings
    ("    autoscaling: {minReplicas: 1", "    autoscaling:", "indent that line as its siblings"),
])
def test_a_yaml_syntax_error_names_the_line_to_fix(repo, broken, bad_line, fix):
    spec = repo / SPEC
    original = {"owner ml": "owner: ml-platform@example.com", "resources": 'resources: {cpu: "1", memory: 1Gi}',
                "    autoscaling": "  autoscaling: {minReplicas: 1"}
    old = next(v for k, v in original.items() if broken.startswith(k.strip()) or broken.startswith(k))
    _edit(spec, old, broken)
    with pytest.raises(SpecError) as caught:
        read_yaml(spec, display=SPEC, root=repo)
    [problem] = caught.value.problems
    assert problem.line == _line(spec, bad_line), (problem, spec.read_text())
    assert problem.fix.startswith(fix)


# --------------------------------------------------------------------------- no internal class names


CLASS_NAME = re.compile(r"\b(ModelSpec|EnvironmentSpec|PoolsFile|Strict|Serving|Autoscaling|CanaryPolicy|SLO|"
                        r"[A-Z][a-z]+(Spec|File|Error|Policy))\b")


@pytest.mark.parametrize("edit", [
    ("name: iris-classifier", "name: Iris_Classifier"),
    ("serving:\n  resources:", "serving:\n  replicas: many\n  resources:"),
    ("slo: {p95LatencyMs: 150}", "slo: {p95LatencyMs: 150}\ncanary: {steps: fast}"),
    ("slo: {p95LatencyMs: 150}", "slo: {p95LatencyMs: 150}\nimages: {cpu: {bad: 1}}"),
])
def test_no_fix_line_names_an_internal_class(repo, edit):
    _edit(repo / SPEC, *edit)
    problems = _problems(repo)
    assert problems
    for problem in problems:
        assert problem.fix and not CLASS_NAME.search(problem.fix), problem


def test_an_empty_file_says_what_to_write_not_a_class(repo):
    (repo / SPEC).write_text("")
    [problem] = _problems(repo)
    assert problem.fix == "write the fields of models/<name>/model.yaml (docs/model-spec.md)"
    assert yaml.safe_load((repo / "environments/pools.yaml").read_text())  # the rest is intact


# --------------------------------------------------------------------------- model new: the new model's own words


def test_model_new_leaves_neither_the_sources_description_nor_its_architecture(repo):
    source = yaml.safe_load((repo / "models/digits-classifier/model.yaml").read_text())
    new_model(repo, "fraud-detector", "digits-classifier")
    text = (repo / "models/fraud-detector/model.yaml").read_text()
    spec = yaml.safe_load(text)
    assert source["description"] not in text and "architecture" not in spec
    assert spec["description"].startswith("TODO")
    problems = {p.field: p for p in _problems(repo, "fraud-detector")}
    assert problems["description"].message == "the description is still the placeholder `reconciler model new` wrote"
    assert problems["description"].fix.startswith("write one line on what the model predicts")
    # described and trained (a pointer stands for its weights here), it still serves from Inferentia (the copied
    # accelerator:): the plan asks for its architecture
    _edit(repo / "models/fraud-detector/model.yaml", spec["description"], "Fraud from card payments")
    shutil.copy(repo / "models/digits-classifier/model.pkl.dvc", repo / "models/fraud-detector/model.pkl.dvc")
    problems = {p.field: p for p in _problems(repo, "fraud-detector")}
    assert "does not declare its architecture" in problems["architecture"].message
    assert "add `architecture:` to model.yaml" in problems["architecture"].fix


def test_model_new_writes_the_description_and_architecture_given(repo):
    result = CliRunner().invoke(app, ["model", "new", "fraud-detector", "--from", "digits-classifier", "--repo",
                                      str(repo), "--description", 'Fraud from "card" payments',
                                      "--architecture", "sklearn-scaler-mlp"])
    assert result.exit_code == 0, result.output
    spec = yaml.safe_load((repo / "models/fraud-detector/model.yaml").read_text())
    assert (spec["description"], spec["architecture"]) == ('Fraud from "card" payments', "sklearn-scaler-mlp")
    assert {p.field for p in _problems(repo, "fraud-detector")} == {"artifacts"}  # only its weights are missing
