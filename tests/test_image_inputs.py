"""A model's image tag per pool kind covers what goes into that kind's image beyond the model's sources: the kind's
built-in bentofile overlay (CUDA base, Neuron packages, envs such as MODEL_DEVICE_GLOBS) and its compile recipe's
code. A change to one of them gives that kind new tags, and no other kind (reconciler/catalog/image_inputs.py).

Before, the tag was the content hash alone: an overlay-only or recipe-only change kept every tag, so `reconciler
build` found the old bento or image and the cluster never got the change. tests/test_kind_images.py builds it for
real with bentoml; here the plan and the tags themselves."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import git

from reconciler.catalog import accelerators
from reconciler.catalog.image_inputs import KindDigests, kind_inputs
from reconciler.catalog.image_lock import resolve_images
from reconciler.catalog.load import load_catalog
from reconciler.source.hashing import model_hashes
from tests.conftest import TEMPLATE_MODELS, commit_all

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("cpu", "gpu", "inferentia")


def _images(root: Path) -> dict[str, str]:
    catalog = load_catalog(root)
    return resolve_images(catalog, "prod", model_hashes(root, None, list(catalog.models.values())))


def _changed(before: dict[str, str], after: dict[str, str]) -> set[str]:
    assert set(before) == set(after)
    return {key for key in before if before[key] != after[key]}


def test_a_cuda_change_gives_every_model_a_new_cuda_tag_and_nothing_else(monkeypatch):
    before = _images(ROOT)
    monkeypatch.setattr(accelerators, "CUDA_VERSION", "12.6.3")  # a reconciler release with another CUDA base
    after = _images(ROOT)
    assert _changed(before, after) == {f"{m}/gpu" for m in TEMPLATE_MODELS}
    assert all(after[f"{m}/gpu"].endswith("-cuda") for m in TEMPLATE_MODELS)


def test_a_device_probe_change_in_the_kind_profile_is_that_kinds_image_only(monkeypatch):
    """MODEL_DEVICE_GLOBS is in the image's environment: a new probe for Neuron devices is a new -neuron image."""
    from dataclasses import replace

    from reconciler.catalog.kinds import KINDS as TABLE

    before = _images(ROOT)
    monkeypatch.setitem(TABLE, "inferentia", replace(TABLE["inferentia"], device_probe=("neuron[0-9]*",)))
    assert _changed(before, _images(ROOT)) == {f"{m}/inferentia" for m in TEMPLATE_MODELS}


def test_the_compile_recipe_is_an_input_of_the_kind_that_compiles_and_of_the_models_it_compiles(tmp_path):
    catalog = load_catalog(ROOT)
    digits, iris = catalog.models["digits-classifier"].spec, catalog.models["iris-classifier"].spec
    found = kind_inputs(digits, "inferentia", catalog.recipes.recipes)
    assert found["recipe"] == "torch-neuronx-dense"
    assert set(found) >= {"overlay", "pipelines/neuron.py", "pipelines/requirements.lock"}
    assert kind_inputs(iris, "inferentia", catalog.recipes.recipes)["recipe"] == "none"  # no recipe compiles it
    assert set(kind_inputs(digits, "gpu", catalog.recipes.recipes)) == {"overlay"}  # gpu compiles nothing
    digests = KindDigests(catalog.recipes.recipes)
    assert digests.of(digits, "inferentia") != digests.of(iris, "inferentia")  # another compiled artifact
    assert digests.of(digits, "gpu") == digests.of(iris, "gpu")  # the same CUDA overlay


def test_tags_are_the_same_in_another_process_checkout_and_hash_seed(template_repo: Path, tmp_path: Path):
    """No path, clock, CPU or Python hash order in a tag: a clone elsewhere renders the same references."""
    clone = tmp_path / "elsewhere" / "clone"
    git.Repo.clone_from(str(template_repo), clone)
    script = ("import json, sys; from pathlib import Path; from tests.test_image_inputs import _images; "
              "print(json.dumps(_images(Path(sys.argv[1]))))")
    out = subprocess.run([sys.executable, "-c", script, str(clone)], cwd=ROOT, capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONHASHSEED": "12345"}, timeout=300)
    assert json.loads(out.stdout) == _images(template_repo)


def _reconciler(repo: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "BENTOML_HOME": str(repo.parent / "bentoml"), "NO_COLOR": "1"}
    return subprocess.run([str(Path(sys.executable).parent / "reconciler"), *args], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=600)


def test_a_recipe_code_change_is_an_image_change_in_the_plan_for_the_models_it_compiles_only(template_repo: Path):
    """A platform team changes the dense recipe's conversion (pipelines/neuron.py, a `code:` file of
    pipelines/recipes/torch-neuronx-dense.yaml) and nothing else: digits-classifier, compiled by it on inf2 in staging
    and prod, gets a new -neuron image there, said so in the plan; dev (cpu) and the other models do not change."""
    repo = git.Repo(template_repo)
    neuron = template_repo / "pipelines" / "neuron.py"
    neuron.write_text(neuron.read_text() + "# the conversion changed\n")
    commit_all(repo, "dense recipe: the conversion changed")
    done = _reconciler(template_repo, "plan", "--base", "HEAD~1", "--no-check-artifacts", "--format", "json")
    assert done.returncode == 0, done.stdout + done.stderr
    plan = json.loads(done.stdout[done.stdout.index("{"):])
    assert plan["environments"]["dev"]["changedModels"] == []
    for env in ("staging", "prod"):
        result = plan["environments"][env]
        assert result["changedModels"] == ["digits-classifier"], result
        model = result["models"]["digits-classifier"]
        changed = [(o["kind"], o["name"]) for o in model["objects"] if o["action"] != "unchanged"]
        assert changed == [("Deployment", "digits-classifier-inf2")], changed
        assert "inferentia image rebuilt (new tag): pipelines/neuron.py changed" in model["reasons"], model["reasons"]
        diff = next(o["diff"] for o in model["objects"] if o["action"] == "configured")
        assert [line for line in diff.splitlines() if line[:1] in "+-" and "image:" in line] and \
            all("-neuron" in line for line in diff.splitlines() if line[:1] in "+-" and "image:" in line)


def test_a_recipes_inputs_are_what_changes_its_artifact_and_never_read_outside_the_repository(tmp_path: Path):
    from reconciler.catalog.recipes import load_registry

    root = tmp_path / "repo"
    folder = root / "pipelines" / "recipes"
    folder.mkdir(parents=True)
    (root / "pipelines" / "conv.py").write_text("def convert(): ...\n")
    (root / "pipelines" / "adir").mkdir()
    (tmp_path / "secret.txt").write_text("not the repository's\n")
    (root / "pipelines" / "leak.py").symlink_to(tmp_path / "secret.txt")
    entry = ("name: r\ntarget: inferentia\narchitectures: [a]\nmodule: pipelines.conv\ndescription: {d}\n"
             "code: [pipelines/conv.py, pipelines/gone.py, pipelines/adir, pipelines/leak.py]\n")

    def inputs(description: str = "one", module: str = "pipelines.conv") -> dict[str, str]:
        (folder / "r.yaml").write_text(entry.format(d=description).replace("pipelines.conv", module))
        (recipe,) = load_registry(root).recipes
        return dict(recipe.inputs)

    first = inputs()
    assert first["pipelines/conv.py"].startswith("sha256:") and first["pipelines/gone.py"] == "missing"
    assert first["pipelines/adir"] == first["pipelines/leak.py"] == "unreadable"  # a folder; a link out of it
    assert inputs(description="two") == first  # the plan's words, not the artifact
    assert inputs(module="pipelines.other") != first  # another conversion runs
    (root / "pipelines" / "conv.py").write_text("def convert(): return 1\n")
    assert inputs()["pipelines/conv.py"] != first["pipelines/conv.py"]
