"""A PyTorch model on Inferentia, through the registry's `torch-neuronx-trace` recipe (pipelines/recipes/).

The PR check traces the model on CPU with the shapes and dtypes its model.yaml declares, in the model's own
environment: the wine model as trained passes and its Neuron workflow (validated against Argo's schema) exports
and compiles with those shapes; the same model with a data-dependent branch in forward(), or a shape that
depends on the values, is a model error at plan time naming the line and the fix. Run as a user runs it: the
installed `reconciler` from the repository root.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import git
import pytest
import yaml

from reconciler.build.pipeline_runner import run_train
from tests.conftest import commit_all, copy_template, with_dvc_storage
from tests.test_pipelines import argo_validator  # noqa: F401 - the Argo schema fixture

pytestmark = pytest.mark.slow

RECONCILER = str(Path(sys.executable).with_name("reconciler"))
MODEL = "wine-classifier"
ON_INF2 = {"architecture": "pytorch", "accelerator": {"prod": "inferentia"},
           "images": {"inferentia": {"inputShapes": [[1, 13]], "inputDtypes": ["float32"]}}}
FORWARD = "            return self.net((x - self.mean) / self.scale)\n"
BRANCH = ("            if x.sum() > 0:  # a Python branch on a tensor's value\n"
          "                return self.net((x - self.mean) / self.scale)\n"
          "            return self.net(-(x - self.mean) / self.scale)\n")
MASK = "            return self.net(((x - self.mean) / self.scale)[x[:, 0] > 12.0])\n"


def plan(root: Path, base: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([RECONCILER, "plan", "--base", base, "--head", "HEAD"], cwd=root, capture_output=True,
                          text=True, timeout=900, env={"COLUMNS": "250", "NO_COLOR": "1", **_env()})


def export_step(root: Path, bento_src: Path, out: Path) -> subprocess.CompletedProcess[str]:
    """`python -m pipelines.recipes.torch_neuronx_trace export ...` as the neuron-export step runs it, in the
    model's own environment."""
    from reconciler.catalog.environments import platform_path, training_python

    return subprocess.run([str(training_python(root, MODEL)), "-m", "pipelines.recipes.torch_neuronx_trace", "export",
                           "--bento-src", str(bento_src), "--artifact", "model.pt", "--output-dir", str(out),
                           "--input-shape", "1,13", "--input-dtype", "float32"], cwd=root, capture_output=True,
                          text=True, timeout=600, env={**_env(), "PYTHONPATH": str(platform_path())})


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != "COLUMNS"}


@pytest.fixture(scope="module")
def trained_on_inf2(tmp_path_factory: pytest.TempPathFactory, example_dvc_storage: Path) -> tuple[Path, str]:
    """The template's PyTorch model moved to inf2 in prod, trained once and pushed; (root, the commit before it)."""
    root = with_dvc_storage(copy_template(tmp_path_factory.mktemp("trace") / "repo"), example_dvc_storage)
    repo = git.Repo.init(root, initial_branch="main")
    commit_all(repo, "template")
    base = repo.head.commit.hexsha
    folder = root / "models" / MODEL
    spec = yaml.safe_load((folder / "model.yaml").read_text())
    spec.update(ON_INF2)
    (folder / "model.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    commit_all(repo, "wine on inf2")
    run_train(root, [MODEL], push=True)
    commit_all(repo, "wine trained")
    return root, base


@pytest.fixture
def wine_on_inf2(trained_on_inf2: tuple[Path, str], tmp_path: Path) -> tuple[Path, str]:
    """A copy of the trained repository (weights, DVC remote and history) for one test to change."""
    root, base = trained_on_inf2
    copy = tmp_path / "repo"
    shutil.copytree(root, copy, symlinks=True)
    return copy, base


def _edit_forward(root: Path, new: str) -> None:
    train = root / "models" / MODEL / "train.py"
    text = train.read_text()
    assert FORWARD in text
    train.write_text(text.replace(FORWARD, new))
    commit_all(git.Repo(root), "forward changed")


def test_a_traceable_pytorch_model_passes_and_its_neuron_workflow_traces_with_the_declared_shapes(
        wine_on_inf2, argo_validator):  # noqa: F811
    root, base = wine_on_inf2
    done = plan(root, base)
    assert done.returncode == 0, done.stdout + done.stderr
    out = " ".join(done.stdout.split())
    assert MODEL in out and "moves cpu-general (cpu) -> inf2 (inferentia)" in out, out  # traced, not refused

    render = subprocess.run([RECONCILER, "pipeline", "render", "neuron-compile", "--model", MODEL, "--env", "prod",
                             "--bento-url", "https://bentos.example.com/wine.bento",
                             "--repo-url", "https://github.com/example/models.git"],
                            cwd=root, capture_output=True, text=True, timeout=300)
    assert render.returncode == 0, render.stderr
    doc = yaml.safe_load(render.stdout)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in argo_validator.iter_errors(doc)]
    assert errors == []
    templates = {t["name"]: t for t in doc["spec"]["templates"]}
    export, compile_ = templates["neuron-export"]["container"], templates["neuron-compile"]["container"]
    shapes = "--input-shape 1,13 --input-dtype float32"
    # the export traces on CPU in the step image with the model's own lock (torch's CPU build from PyTorch's index)
    assert f"python -m pipelines.recipes.torch_neuronx_trace export --bento-src /work/bento/src --artifact model.pt " \
           f"--output-dir /work/export {shapes} --architecture pytorch" in export["args"][0]
    assert "--no-deps -r /src/models/wine-classifier/requirements.lock" in export["args"][0]
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in export["args"][0]
    # the compile is torch_neuronx.trace with the same shapes, in the Neuron SDK image on the inf2 pool
    assert f"python -m pipelines.recipes.torch_neuronx_trace compile --export-dir /work/export " \
           f"--output /work/neuron/model.neuron.pt {shapes}" in compile_["args"][0]
    assert compile_["image"].startswith("public.ecr.aws/neuron/pytorch-inference-neuronx:")
    assert compile_["resources"]["limits"]["aws.amazon.com/neuron"]

    # the export step's own command, run here on the model's folder (a Bento's src/ holds the same files): the
    # folder the compile step traces from, with the declared inputs and the static output shape in its manifest
    done = export_step(root, root / "models" / MODEL, root / "export")
    assert done.returncode == 0, done.stderr
    manifest = json.loads((root / "export" / "export.json").read_text())
    assert manifest["input_shapes"] == [[1, 13]] and manifest["input_dtypes"] == ["float32"]
    assert manifest["outputs"] == [[1, 3]] and manifest["artifact"] == "model.pt"
    assert {p.name for p in (root / "export").iterdir()} == {"export.json", "model.pt", "train.py"}


@pytest.mark.parametrize("forward, expected, fix", [
    (BRANCH, "data-dependent control flow", "torch.where"),
    (MASK, "dynamic shape", "keep every shape static"),
])
def test_a_pytorch_model_that_cannot_be_traced_with_static_shapes_is_refused_at_plan_time_with_the_fix(
        wine_on_inf2, forward, expected, fix):
    root, base = wine_on_inf2
    _edit_forward(root, forward)
    done = plan(root, base)
    assert done.returncode == 3, done.stdout + done.stderr  # a model error
    out = " ".join(done.stdout.split())
    assert f"{MODEL} cannot be compiled for inferentia by the torch-neuronx-trace recipe" in out, out
    assert expected in out and fix in out
    if forward is BRANCH:  # the line of the model's code that branches
        line = 1 + (root / "models" / MODEL / "train.py").read_text().splitlines().index(BRANCH.splitlines()[0])
        assert f"models/{MODEL}/train.py:{line}" in out, out
    # the workflow's export step refuses it too, with the same fix, and writes nothing
    done = export_step(root, root / "models" / MODEL, root / "export")
    assert done.returncode == 1 and expected in done.stderr and "fix:" in done.stderr and fix in done.stderr, done.stderr
    assert "Unable to find user code" not in done.stderr  # torch's own log of the failed guard is not shown
    assert not (root / "export").exists()


def test_the_architecture_label_is_checked_against_the_weights(wine_on_inf2):
    """A PyTorch model declaring the scikit-learn recipe's architecture is refused: its weights are a torch.save
    archive, whatever model.yaml says."""
    root, base = wine_on_inf2
    spec = root / "models" / MODEL / "model.yaml"
    spec.write_text(spec.read_text().replace("architecture: pytorch", "architecture: sklearn-scaler-mlp"))
    commit_all(git.Repo(root), "a stale label")
    done = plan(root, base)
    assert done.returncode == 3, done.stdout + done.stderr
    out = " ".join(done.stdout.split())
    assert "architecture 'sklearn-scaler-mlp' does not match the trained weights" in out
    assert "torch.save archive" in out and "set `architecture: pytorch`" in out


def test_plan_no_trace_runs_no_model_code_and_says_not_traced(wine_on_inf2, tmp_path):
    """`reconciler plan --no-trace` (what the PR workflow's plan job runs on a PR's head): the model's module-level
    code never runs, and the plan says "not traced" in text, JSON and markdown, never passed. Without the flag the
    same model's code runs (the marker shows the test can fail)."""
    root, base = wine_on_inf2
    marker = tmp_path / "model-code-ran"
    train = root / "models" / MODEL / "train.py"
    train.write_text(train.read_text() + f"\nimport pathlib\n\npathlib.Path({str(marker)!r}).write_text('ran')\n")
    commit_all(git.Repo(root), "model code with a side effect at import")
    outputs = {}
    for fmt in ("text", "json", "markdown"):
        done = subprocess.run([RECONCILER, "plan", "--no-trace", "--base", base, "--head", "HEAD", "--format", fmt],
                              cwd=root, capture_output=True, text=True, timeout=900,
                              env={"COLUMNS": "250", "NO_COLOR": "1", **_env()})
        assert done.returncode == 0, done.stdout + done.stderr
        assert not marker.exists(), f"plan --no-trace ran the model's code ({fmt})"
        outputs[fmt] = done
    assert f"warning: {MODEL}: not traced" in " ".join(outputs["text"].stderr.split())
    assert any(w.startswith(f"{MODEL}: not traced") for w in json.loads(outputs["json"].stdout)["warnings"])
    markdown = outputs["markdown"].stdout  # the comment's [!WARNING] block, punctuation escaped as running text
    assert "> [!WARNING]" in markdown
    assert any(line.startswith("> wine\\-classifier\\: not traced") for line in markdown.splitlines()), markdown
    done = subprocess.run([RECONCILER, "plan", "--base", base, "--head", "HEAD"], cwd=root, capture_output=True,
                          text=True, timeout=900, env={"COLUMNS": "250", "NO_COLOR": "1", "RECONCILER_PLAN_TRACE": "0",
                                                       **_env()})
    assert done.returncode == 0 and not marker.exists() and "not traced" in done.stderr, done.stdout + done.stderr
    done = subprocess.run([RECONCILER, "plan", "--no-check-artifacts", "--base", base, "--head", "HEAD"], cwd=root,
                          capture_output=True, text=True, timeout=900, env={"COLUMNS": "250", "NO_COLOR": "1", **_env()})
    assert done.returncode == 0 and not marker.exists(), done.stdout + done.stderr  # the trace runs with that check
    assert f"warning: {MODEL}: not traced: the plan ran no model code (--no-check-artifacts)" in \
        " ".join(done.stderr.split()), done.stderr
    done = plan(root, base)  # tracing: the model's code runs, and it is not "not traced"
    assert marker.exists() and "not traced" not in done.stderr, done.stdout + done.stderr
