"""The local pipeline runner: trains, evaluates and DVC-registers the example models end to end in a
temporary copy of the repository (the working tree is never touched), and the `reconciler pipeline`
commands that drive it."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from pipelines import steps
from reconciler import labels
from reconciler.cli.main import app
from reconciler.errors import ArtifactError, ReconcilerError
from reconciler.build.pipeline_runner import render_workflow, run_train, trainable_models

ROOT = Path(__file__).resolve().parents[1]
REPO_URL = "https://github.com/example/models-gitops.git"
MODEL_SOURCES = ("model.yaml", "service.py", "train.py", "bentofile.yaml", "requirements.lock", "model.pkl.dvc",
                 "model.pt.dvc", "metrics.json", ".gitignore")
GENERATED = ("model.pkl.dvc", "model.pt.dvc", "metrics.json", ".gitignore")
# each example model: the artifact model.yaml declares, and the lock it trains with
EXAMPLES = {"digits-classifier": ("model.pkl", "pipelines/requirements.lock"),
            "iris-classifier": ("model.pkl", "pipelines/requirements.lock"),
            "wine-classifier": ("model.pt", "models/wine-classifier/requirements.lock")}  # PyTorch, its own lock


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git + DVC copy of the template: model sources, environments, the committed .dvc config."""
    root = tmp_path / "repo"
    shutil.copytree(ROOT / "environments", root / "environments")
    for folder in (ROOT / "models").iterdir():
        for name in MODEL_SOURCES:
            if (folder / name).is_file():
                (root / "models" / folder.name).mkdir(parents=True, exist_ok=True)
                shutil.copy2(folder / name, root / "models" / folder.name / name)
    (root / ".dvc").mkdir()
    for name in (".dvc/config", ".dvc/.gitignore", ".dvcignore"):
        shutil.copy2(ROOT / name, root / name)
    (root / ".gitignore").write_text(".dvc-storage/\n")
    _git(root, "init", "-q")
    _git(root, "-c", "user.name=t", "-c", "user.email=t@example.com", "add", "-A")
    _git(root, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "template")
    return root


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_runner_trains_evaluates_registers_and_pushes_every_example_model(repo):
    for folder in (repo / "models").iterdir():  # start from a template that was never trained
        for name in GENERATED:
            (folder / name).unlink(missing_ok=True)
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qam", "untrained")
    seen = []
    runs = run_train(repo, push=True, on_step=seen.append)

    assert [r.model for r in runs] == sorted(EXAMPLES) == trainable_models(repo)
    # each model first gets its training environment (its lock's cached venv), then the DAG's steps
    assert [(s.model, s.step) for s in seen] == [(m, s) for m in sorted(EXAMPLES)
                                                 for s in ("environment", *(s.name for s in steps.STEPS))]
    for s in seen:
        if s.step == "environment":
            assert f"({EXAMPLES[s.model][1]})" in s.detail
    python = {r.model: r.python for r in runs}
    assert python["iris-classifier"] == python["digits-classifier"] != python["wine-classifier"]  # one venv per lock
    for run in runs:
        folder = repo / "models" / run.model
        artifact = EXAMPLES[run.model][0]
        weights = folder / artifact
        pointer = yaml.safe_load((folder / f"{artifact}.dvc").read_text())
        assert pointer["outs"] == [{"md5": _md5(weights), "size": weights.stat().st_size, "hash": "md5",
                                    "path": artifact}]
        assert f"/{artifact}" in (folder / ".gitignore").read_text().splitlines()
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics == run.metrics and metrics["model_md5"] == _md5(weights)
        assert metrics["accuracy"] >= steps.load_recipe(run.model, repo).quality_gate["accuracy"]
        # the remote in .dvc/config (url = ../.dvc-storage) resolves to <repo>/.dvc-storage
        md5 = _md5(weights)
        assert (repo / ".dvc-storage" / "files" / "md5" / md5[:2] / md5[2:]).is_file()
    # git sees exactly what to commit: pointers, metrics, .gitignores; never the weights or the storage
    untracked = set(_git(repo, "status", "--porcelain", "--untracked-files=all").splitlines())
    assert untracked == {f"?? models/{m}/{f}" for m, (artifact, _) in EXAMPLES.items()
                         for f in (".gitignore", "metrics.json", f"{artifact}.dvc")}


def test_training_is_deterministic(tmp_path):
    first = steps.train("iris-classifier", tmp_path / "a", repo_root=ROOT)
    second = steps.train("iris-classifier", tmp_path / "b", repo_root=ROOT)
    assert first.read_bytes() == second.read_bytes()
    other_seed = steps.train("iris-classifier", tmp_path / "c", seed=1, repo_root=ROOT)
    assert steps.evaluate("iris-classifier", tmp_path / "c", seed=1, repo_root=ROOT)["seed"] == 1
    assert other_seed.read_bytes() != first.read_bytes()


def test_quality_gate_failure_is_a_reconciler_error_and_stops_before_register(repo, monkeypatch):
    recipe = repo / "models/iris-classifier/train.py"
    recipe.write_text(recipe.read_text().replace('QUALITY_GATE = {"accuracy": 0.9}', 'QUALITY_GATE = {"accuracy": 1.01}'))
    (repo / "models/iris-classifier/model.pkl.dvc").unlink()
    with pytest.raises(ReconcilerError, match="step evaluate failed.*below the quality gate 1.01") as info:
        run_train(repo, ["iris-classifier"])
    assert not isinstance(info.value, ArtifactError)
    assert "QUALITY_GATE['accuracy'] in models/iris-classifier/train.py" in info.value.fix
    assert (repo / "models/iris-classifier/metrics.json").is_file()
    assert not (repo / "models/iris-classifier/model.pkl.dvc").exists()


def test_register_without_dvc_state_is_an_artifact_error(repo):
    shutil.rmtree(repo / ".dvc")
    with pytest.raises(ArtifactError, match="iris-classifier: step register failed: dvc could not track") as info:
        run_train(repo, ["iris-classifier"])
    assert "dvc init" in info.value.fix


def test_unknown_or_recipe_less_models_are_refused_with_a_fix(repo):
    with pytest.raises(ReconcilerError, match="models/nope/model.yaml not found") as info:
        run_train(repo, ["nope"])
    assert info.value.fix
    other = repo / "models" / "fraud-detector"
    other.mkdir()
    shutil.copy2(repo / "models/iris-classifier/model.yaml", other / "model.yaml")
    with pytest.raises(ReconcilerError, match="models/fraud-detector/train.py not found") as info:
        run_train(repo, ["fraud-detector"])
    assert "reconciler model new NAME --from iris-classifier" in info.value.fix
    assert "fraud-detector" not in trainable_models(repo)
    (other / "train.py").write_text("def train(out_dir, *, seed):\n    pass\n")
    with pytest.raises(ReconcilerError, match=r"models/fraud-detector/train.py defines no evaluate\(\)"):
        run_train(repo, ["fraud-detector"])


def test_cli_run_and_render(repo):
    cli = CliRunner()
    (repo / "models/iris-classifier/model.pkl.dvc").unlink()
    result = cli.invoke(app, ["pipeline", "run", "train", "--model", "iris-classifier", "--no-register",
                              "--repo", str(repo)])
    assert result.exit_code == 0, result.output
    assert "iris-classifier: accuracy 0.97" in result.output
    assert not (repo / "models/iris-classifier/model.pkl.dvc").exists()
    _git(repo, "checkout", "--", "models/iris-classifier/model.pkl.dvc")  # (in the temporary copy)

    head = _git(repo, "rev-parse", "HEAD")
    result = cli.invoke(app, ["pipeline", "render", "train", "--model", "iris-classifier", "--repo", str(repo),
                              "--repo-url", REPO_URL])
    assert result.exit_code == 0, result.output
    doc = yaml.safe_load(result.stdout)
    assert doc["kind"] == "Workflow"
    assert doc["metadata"]["labels"][labels.GIT_COMMIT] == head
    assert doc["metadata"]["labels"][labels.ENVIRONMENT] == "dev"
    assert len(doc["metadata"]["annotations"][labels.MODEL_HASH]) == 64  # reconciler.source.hashing's digest

    result = cli.invoke(app, ["pipeline", "render", "build-image", "--model", "digits-classifier", "--env",
                              "staging", "--repo", str(repo), "--repo-url", REPO_URL])
    assert result.exit_code == 1 and "--bento-url" in result.output

    result = cli.invoke(app, ["pipeline", "render", "build-image", "--model", "digits-classifier", "--env",
                              "staging", "--repo", str(repo), "--repo-url", REPO_URL,
                              "--bento-url", "https://example.com/d.bento"])
    assert result.exit_code == 0, result.output
    names = [t["name"] for t in yaml.safe_load(result.stdout)["spec"]["templates"]]
    assert "neuron-compile" in names  # digits serves from inf2 in staging
    params = {p["name"]: p["value"] for p in yaml.safe_load(result.stdout)["spec"]["arguments"]["parameters"]}
    assert params["image-ref"].startswith("ghcr.io/example/models/digits-classifier:")  # staging's registry


def test_render_refuses_a_pool_the_model_does_not_use(repo):
    with pytest.raises(ReconcilerError, match="does not serve from pool 'inf2'"):
        render_workflow(repo, "build-image", "iris-classifier", environment="staging", repo_url=REPO_URL,
                        bento_url="https://example.com/i.bento", pool="inf2")
    with pytest.raises(ReconcilerError, match="no pipeline named 'deploy'"):
        render_workflow(repo, "deploy", "iris-classifier", repo_url=REPO_URL)


def test_render_without_origin_remote_asks_for_repo_url(repo):
    with pytest.raises(ReconcilerError, match="no 'origin' remote") as info:
        render_workflow(repo, "train", "iris-classifier")
    assert "--repo-url" in info.value.fix


@pytest.mark.parametrize("model, cls, rows, expected", [
    ("iris-classifier", "IrisClassifier", [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], [0, 2]),
    ("digits-classifier", "DigitsClassifier", None, None),
])
def test_bentoml_services_serve_the_trained_weights(tmp_path, model, cls, rows, expected):
    """service.py is a BentoML 1.4 service class that loads model.pkl from its own folder."""
    import importlib.util

    import numpy as np

    folder = tmp_path / model
    shutil.copytree(ROOT / "models" / model, folder, ignore=shutil.ignore_patterns("model.pkl"))
    spec = importlib.util.spec_from_file_location(f"svc_{model.replace('-', '_')}", folder / "service.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    service = getattr(module, cls)
    assert type(service).__name__ == "Service"  # @bentoml.service wrapped the class
    with pytest.raises(RuntimeError, match="model.pkl is missing: run `dvc pull`"):
        service.inner()
    steps.train(model, folder, repo_root=ROOT)
    instance = service.inner()
    if rows is None:  # digits: held-out images of the bundled dataset
        from sklearn.datasets import load_digits

        data = load_digits()
        rows, expected = data.data[-5:], list(data.target[-5:])
        assert instance.backend == "cpu"  # no torch_neuronx here: the sklearn path
    assert list(instance.predict(np.asarray(rows))) == expected
    bentofile = yaml.safe_load((folder / "bentofile.yaml").read_text())
    assert bentofile["service"] == f"service.py:{cls}"
    assert bentofile["python"]["lock_packages"] is False
    assert {"service.py", "model.pkl"} <= set(bentofile["include"])


def test_step_entry_point_is_what_the_argo_tasks_run(tmp_path, capsys):
    """`python -m pipelines.steps ...` (the command of every train-DAG task) in a fresh process."""
    import sys

    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "pipelines.steps", "train", "--model", "iris-classifier",
                           "--model-dir", str(out)], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(out / "model.pkl")
    capsys.readouterr()
    assert steps.main(["evaluate", "--model", "iris-classifier", "--model-dir", str(out), "--repo-root", str(ROOT)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((out / "metrics.json").read_text())
    assert printed["model_md5"] == _md5(out / "model.pkl")

    assert steps.main(["register", "--model-dir", str(out), "--repo-root", str(tmp_path)]) == 1
    assert "dvc could not track" in capsys.readouterr().err
    assert steps.main(["train", "--model", "nope", "--model-dir", str(out), "--repo-root", str(ROOT)]) == 1
    assert "models/nope/train.py not found: the model has no training entry point" in capsys.readouterr().err


def test_training_refuses_a_stack_other_than_the_lock(tmp_path):
    """Training at other library versions would change every DVC md5: the step says so and how to fix it."""
    from pipelines import steps

    lock = tmp_path / "requirements.lock"
    lock.write_text("# a lock pinned to a version that is not installed\nscikit-learn==0.0.1\n", encoding="utf-8")
    with pytest.raises(steps.StepError) as info:
        steps.check_training_stack(lock)
    assert "scikit-learn" in str(info.value) and "locked: 0.0.1" in str(info.value)
    assert "pip install -r pipelines/requirements.lock" in str(info.value)
    steps.check_training_stack(steps.LOCK_FILE)  # the installed stack is the lock's


def test_the_lock_file_holds_exact_pins_only(tmp_path):
    from pipelines import steps

    pins = steps.locked_versions()
    assert {"scikit-learn", "numpy", "scipy"} <= set(pins)
    lock = tmp_path / "requirements.lock"
    lock.write_text("scikit-learn>=1.4\n", encoding="utf-8")
    with pytest.raises(steps.StepError, match=r"requirements.lock:1: 'scikit-learn>=1.4' is not an exact pin"):
        steps.locked_versions(lock)
