"""Accelerator facts: compile eligibility at plan time, one Neuron SDK value, per-kind bentofile overlays."""

from __future__ import annotations

import git
import pytest

from reconciler.catalog.accelerators import NEURON_PIP_INDEX, compile_problem, merge_bentofile, neuron_sdk, recipe_for
from reconciler.catalog.kinds import AcceleratorKind, kind_overlay
from reconciler.catalog.load import load_catalog
from reconciler.plan.revisions import plan_revisions
from tests.conftest import commit_all


def _edit(path, old, new):
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new))


def test_a_plan_moving_a_logistic_regression_to_inf2_reports_the_model_error_with_its_fix(template_repo):
    _edit(template_repo / "models/iris-classifier/model.yaml", "prod: gpu", "prod: inf2")
    commit_all(git.Repo(template_repo), "iris to inf2")
    plan = plan_revisions(template_repo, "HEAD~1", "HEAD", ["prod"])
    assert not plan.ok
    error = plan.environments["prod"].models["iris-classifier"].error
    assert "models/iris-classifier/model.yaml" in error and "architecture" in error
    assert "no compile recipe compiles a 'sklearn-scaler-logistic-regression' for inferentia" in error
    assert "fix:" in error and "serve iris-classifier from a cpu or gpu pool" in error
    # the MLP on inf2 is eligible and still planned
    assert plan.environments["prod"].models.get("digits-classifier") is None or \
        plan.environments["prod"].models["digits-classifier"].error is None


def test_a_model_without_architecture_on_inferentia_is_told_to_declare_it(template_repo):
    _edit(template_repo / "models/digits-classifier/model.yaml", "architecture: sklearn-scaler-mlp\n", "")
    catalog = load_catalog(template_repo)
    error = str(catalog.errors["digits-classifier"])
    assert "does not declare its architecture" in error and "sklearn-scaler-mlp" in error
    assert "iris-classifier" in catalog.models  # the other model is unaffected


def test_recipes_declare_what_they_compile(template_repo):
    recipes = load_catalog(template_repo).recipes.recipes
    recipe = next(r for r in recipes if r.name == "torch-neuronx-dense")
    assert recipe.file == "pipelines/recipes/torch-neuronx-dense.yaml" and recipe.module == "pipelines.neuron"
    assert recipe_for("sklearn-scaler-mlp", AcceleratorKind.inferentia, recipes) is recipe
    assert recipe_for("sklearn-scaler-mlp", AcceleratorKind.gpu, recipes) is None
    assert compile_problem("m", "anything", AcceleratorKind.gpu, "", recipes) is None  # only Inferentia compiles
    assert compile_problem("m", "sklearn-mlp", AcceleratorKind.inferentia, "", recipes) is None


def test_a_platform_team_adds_a_recipe_from_the_repository_and_a_broken_entry_names_its_file(template_repo):
    """The registry is the repository's pipelines/recipes/: a new entry makes an architecture compilable for
    inf2 without touching the reconciler; an entry that does not validate is the error of every model needing it."""
    folder = template_repo / "pipelines" / "recipes"
    _edit(template_repo / "models/iris-classifier/model.yaml", "prod: gpu", "prod: inf2")
    assert "no compile recipe compiles" in str(load_catalog(template_repo).errors["iris-classifier"])
    (folder / "sklearn-logistic.yaml").write_text(
        "name: sklearn-logistic\ntarget: inferentia\narchitectures: [sklearn-scaler-logistic-regression]\n"
        "module: pipelines.logistic_neuron\ncode: [pipelines/logistic_neuron.py]\n")
    catalog = load_catalog(template_repo)
    assert "iris-classifier" in catalog.models, catalog.errors
    assert {r.name for r in catalog.recipes.recipes} >= {"sklearn-logistic", "torch-neuronx-dense"}
    (folder / "sklearn-logistic.yaml").write_text("name: sklearn-logistic\ntarget: inferentia\narchitectures: []\n"
                                                  "module: pipelines.logistic_neuron\nplanCheck: maybe\n")
    catalog = load_catalog(template_repo)
    error = str(catalog.errors["iris-classifier"])
    assert "pipelines/recipes/sklearn-logistic.yaml" in error and "architectures" in error and "planCheck" in error
    assert "pipelines/recipes/sklearn-logistic.yaml" in str(catalog.errors["digits-classifier"])  # inf2 too


def test_the_compile_image_and_the_serving_packages_come_from_one_sdk_value():
    sdk = neuron_sdk("2.18.1")
    assert "sdk2.18.1" in sdk.compile_image and sdk.torch in sdk.compile_image
    overlay = kind_overlay(AcceleratorKind.inferentia, sdk=sdk)
    assert f"torch-neuronx=={sdk.torch_neuronx}" in overlay["python"]["packages"]
    assert NEURON_PIP_INDEX in overlay["python"]["extra_index_url"]
    assert f"aws-neuronx-runtime-lib={sdk.runtime_lib}" in overlay["files"]["accelerator-setup.sh"]
    with pytest.raises(ValueError, match="unknown Neuron SDK '9.9'"):
        neuron_sdk("9.9")


def test_every_neuron_version_derives_from_the_release_entry():
    """The one pin is the SDK release; its entry is AWS's manifest excerpt (n2-manifest.json), checked
    against what AWS publishes for 2.18.1 (docs/model-spec.md, "Neuron versions")."""
    from reconciler.catalog.accelerators import DEFAULT_NEURON_SDK, NEURON_RELEASES, release_sdk

    sdk = neuron_sdk(DEFAULT_NEURON_SDK)
    assert (sdk.torch_neuronx, sdk.neuronx_cc, sdk.runtime_lib, sdk.collectives) == (
        "2.1.2.2.1.0", "2.13.68.0", "2.20.22.0", "2.20.22.0")
    # the PyTorch and Python the images use come from the entry too: torch-neuronx 2.1.2.x is for PyTorch 2.1.2,
    # wheels for Python 3.8-3.10 only, so the serving image runs 3.10 and the compile image is the py310 DLC
    assert (sdk.torch, sdk.python, sdk.python_version) == ("2.1.2", "py310", "3.10")
    assert sdk.compile_image == "public.ecr.aws/neuron/pytorch-inference-neuronx:2.1.2-neuronx-py310-sdk2.18.1-ubuntu20.04"
    assert kind_overlay(AcceleratorKind.inferentia, sdk=sdk)["docker"]["python_version"] == "3.10"
    # a hand-edited entry whose torch-neuronx does not match its torch_xla fails where it is read
    broken = {**NEURON_RELEASES[DEFAULT_NEURON_SDK], "torch_xla": "2.5.1"}
    with pytest.raises(ValueError, match="not built for torch_xla 2.5.1"):
        release_sdk("2.18.1", broken)
    with pytest.raises(ValueError, match="no 'neuronx-cc'"):
        release_sdk("2.18.1", {k: v for k, v in broken.items() if k != "neuronx-cc"})


def test_merge_keeps_the_models_packages_and_adds_the_kinds():
    base = {"python": {"packages": ["numpy"], "lock_packages": False}, "envs": [{"name": "A", "value": "1"}]}
    merged = merge_bentofile(base, kind_overlay(AcceleratorKind.inferentia))
    assert merged["python"]["packages"][0] == "numpy" and any(p.startswith("torch-neuronx==") for p in merged["python"]["packages"])
    assert merged["python"]["lock_packages"] is False
    assert [e["name"] for e in merged["envs"]][0] == "A"
    assert "files" not in merged
    assert base == {"python": {"packages": ["numpy"], "lock_packages": False}, "envs": [{"name": "A", "value": "1"}]}
    assert merge_bentofile(base, kind_overlay(AcceleratorKind.gpu))["docker"]["cuda_version"]


def test_load_accelerated_with_a_fake_device_and_a_missing_artifact_is_not_ready(tmp_path):
    from pipelines.serving import device_present, load_accelerated

    dev = tmp_path / "dev"
    dev.mkdir()
    assert not device_present(("neuron*",), dev)
    (dev / "neuron0").touch()
    assert device_present(("neuron*",), dev)
    calls = []
    model, state = load_accelerated(calls.append, kind="inferentia", artifact=str(tmp_path / "model.neuron.pt"),
                                    device=True)
    assert model is None and not state.ready and state.backend == "none" and calls == []
    assert "compiled artifact" in state.error and "missing" in state.error
    # present but not loadable: not ready either, with the loader's reason
    (tmp_path / "model.neuron.pt").write_bytes(b"junk")

    def broken(path):
        raise RuntimeError("bad magic")

    _, state = load_accelerated(broken, kind="inferentia", artifact=str(tmp_path / "model.neuron.pt"), device=True)
    assert not state.ready and "bad magic" in state.error
    # loads: the accelerator serves
    model, state = load_accelerated(lambda p: ("module", p.name), kind="inferentia",
                                    artifact=str(tmp_path / "model.neuron.pt"), device=True)
    assert state.ready and state.backend == "inferentia" and model == ("module", "model.neuron.pt")
    # no device (a laptop, a cpu node): the CPU model serves, ready
    model, state = load_accelerated(broken, kind="inferentia", artifact=None, device=False)
    assert model is None and state.ready and state.backend == "cpu"
