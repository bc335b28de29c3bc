"""Models in three frameworks side by side in one repository, each from its own lock: the template's
scikit-learn models (the shared pipelines/requirements.lock) and its PyTorch model (models/wine-classifier, its
own lock with torch's CPU build), plus a LightGBM model added here. Each trains in the environment of
its lock, is planned without model errors, renders Argo workflows that validate against Argo's schema and
install its lock, and the PyTorch model's Bento installs its lock. No platform file is edited."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import git
import httpx
import yaml

from reconciler.build.pipeline_runner import render_workflow, run_train
from reconciler.catalog.load import load_catalog
from reconciler.catalog.environments import serving_python
from tests.conftest import TEMPLATE_MODELS, commit_all
from tests.test_kind_images import _Served
from tests.test_pipelines import argo_validator  # noqa: F401 - the Argo schema fixture

TORCH = "wine-classifier"
GBM = "cancer-gbm"
REPO_URL = "https://github.com/example/models.git"
RECONCILER = str(Path(sys.executable).with_name("reconciler"))
# a request per framework's model: its body and how many rows it answers
SERVED = {
    "iris-classifier": ({"features": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}, 2),
    GBM: ({"features": [[14.0] * 30]}, 1),
    TORCH: ({"measurements": [[13.2, 1.8, 2.1, 15.0, 100.0, 2.4, 2.6, 0.3, 1.6, 5.0, 1.0, 3.0, 1000.0]] * 3}, 3),
}
GBM_TRAIN = {"load_iris": "load_breast_cancer", '"dataset": "iris"': '"dataset": "breast_cancer"',
             "from sklearn.linear_model import LogisticRegression": "from lightgbm import LGBMClassifier",
             "LogisticRegression(max_iter=1000, random_state=seed)":
                 "LGBMClassifier(n_estimators=30, random_state=seed, n_jobs=1, deterministic=True, verbose=-1)"}


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()  # DVC's md5


def _add_gbm(root: Path) -> None:
    gbm = root / "models" / GBM
    shutil.copytree(root / "models" / "iris-classifier", gbm,
                    ignore=shutil.ignore_patterns("model.pkl", "model.pkl.dvc", "metrics.json", ".gitignore"))
    for name in ("model.yaml", "bentofile.yaml"):
        (gbm / name).write_text((gbm / name).read_text().replace("iris-classifier", GBM))
    train = (gbm / "train.py").read_text()
    for old, new in GBM_TRAIN.items():
        assert old in train, old
        train = train.replace(old, new)
    (gbm / "train.py").write_text(train)
    (gbm / "service.py").write_text((gbm / "service.py").read_text().replace("reshape(-1, 4)", "reshape(-1, 30)"))
    (gbm / "requirements.lock").write_text((root / "pipelines" / "requirements.lock").read_text() + "lightgbm==4.7.0\n")


def test_three_frameworks_train_build_plan_render_and_serve_side_by_side_each_from_its_own_lock(
        template_repo, argo_validator, tmp_path):  # noqa: F811
    root = template_repo
    assert {TORCH, "iris-classifier"} <= set(TEMPLATE_MODELS)  # the template's PyTorch and scikit-learn models
    _add_gbm(root)
    commit_all(git.Repo(root), "a LightGBM model beside the template's scikit-learn and PyTorch ones")

    runs = {r.model: r for r in run_train(root, [TORCH, GBM], push=True)}
    environments = {name: Path(run.python).parents[1] for name, run in runs.items()}
    sklearn_env = Path(run_train(root, ["iris-classifier"], register=False)[0].python).parents[1]
    assert len({*environments.values(), sklearn_env}) == 3  # one environment per lock, none the reconciler's
    for name, artifact in ((TORCH, "model.pt"), (GBM, "model.pkl")):
        folder = root / "models" / name
        pointer = yaml.safe_load((folder / f"{artifact}.dvc").read_text())
        assert pointer["outs"][0]["path"] == artifact and pointer["outs"][0]["md5"] == _md5(folder / artifact)
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics["accuracy"] >= 0.9 and metrics["model_md5"] == _md5(folder / artifact)
    assert (environments[TORCH] / ".complete").read_text().strip() == f"models/{TORCH}/requirements.lock"

    # deterministic: the PyTorch model retrained the template's committed pointer, and retrains the same bytes
    assert git.Repo(root).git.status("--porcelain", f"models/{TORCH}") == ""
    first = _md5(root / "models" / TORCH / "model.pt")
    run_train(root, [TORCH], register=False)
    assert _md5(root / "models" / TORCH / "model.pt") == first

    # the plan sees every model, each lock covering its imports
    catalog = load_catalog(root)
    assert {TORCH, GBM, "iris-classifier", "digits-classifier"} <= set(catalog.models), catalog.errors

    # every model's Argo train workflow validates and installs that model's lock in each step
    locks = {TORCH: f"models/{TORCH}/requirements.lock", GBM: f"models/{GBM}/requirements.lock",
             "iris-classifier": "pipelines/requirements.lock"}
    for name, lock in locks.items():
        doc = yaml.safe_load(render_workflow(root, "train", name, repo_url=REPO_URL).to_yaml())
        errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in argo_validator.iter_errors(doc)]
        assert errors == [], f"{name}: {errors}"
        scripts = {t["name"]: t["container"]["args"][0] for t in doc["spec"]["templates"] if "container" in t}
        for step in ("train", "evaluate", "register"):
            assert f"--no-deps -r /src/{lock}" in scripts[step], (name, step)
    torch_scripts = {t["name"]: t["container"]["args"][0] for t in yaml.safe_load(
        render_workflow(root, "train", TORCH, repo_url=REPO_URL).to_yaml())["spec"]["templates"] if "container" in t}
    # the CPU build of torch comes from PyTorch's own index on the cluster; the step writes the declared model.pt
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in torch_scripts["train"]
    assert "--output model.pt" in torch_scripts["train"] and "--output model.pt" in torch_scripts["register"]
    assert "lightgbm==4.7.0" in (root / "models" / GBM / "requirements.lock").read_text()

    # each builds its Bento and answers /predict under `bentoml serve`, in an environment of its own lock
    # (+ BentoML: what its image installs), all three at once, with the version header naming its weights
    commit_all(git.Repo(root), "the new models trained")
    home = tmp_path / "bentoml"
    env = {**os.environ, "BENTOML_HOME": str(home), "RECONCILER_CONTAINER_ENGINE": "none",
           "RECONCILER_IMAGES_FILE": str(tmp_path / "images.json"), "BENTOML_DO_NOT_TRACK": "true"}
    served = {}
    try:
        for name in SERVED:
            built = subprocess.run([RECONCILER, "build", "--model", name], cwd=root, env=env, capture_output=True,
                                   text=True, timeout=900)
            assert built.returncode == 0, built.stdout + built.stderr
            (version,) = [p.name for p in (home / "bentos" / name).iterdir() if p.is_dir() and "-" not in p.name]
            served[name] = _Served(home, f"{name}:{version}", python=serving_python(root, name))
        for name, (body, rows) in SERVED.items():
            served[name].wait_live()
            response = httpx.post(served[name].url("/predict"), json=body, timeout=120)
            assert response.status_code == 200, f"{name}: HTTP {response.status_code} {response.text}"
            answer = response.json()
            assert len(answer) == rows and all(isinstance(v, int) for v in answer), (name, answer)
            header = dict(part.strip().split("=", 1) for part in response.headers["x-model-version"].split(";"))
            artifact = "model.pt" if name == TORCH else "model.pkl"
            assert header["weights-md5"] == _md5(root / "models" / name / artifact), (name, header)
        # its -neuron image's code path: the device held, the compiled artifact absent -> not ready, no CPU answer
        dev = tmp_path / "dev"
        dev.mkdir()
        (dev / "neuron0").touch()  # a fake Neuron device node: the device is "present"
        served["neuron"] = _Served(home, served[TORCH].tag, python=serving_python(root, TORCH), env={
            "MODEL_DEVICE_ROOT": str(dev), "MODEL_ACCELERATOR_KIND": "inferentia", "MODEL_DEVICE_GLOBS": "neuron*",
            "MODEL_ACCELERATOR_ARTIFACT": str(tmp_path / "missing" / "model.neuron.pt")})
        served["neuron"].wait_live()
        assert httpx.get(served["neuron"].url("/readyz"), timeout=10).status_code == 503
        assert httpx.post(served["neuron"].url("/predict"), json=SERVED[TORCH][0], timeout=60).status_code >= 500
    finally:
        for server in served.values():
            server.stop()


def test_the_pytorch_bento_installs_its_lock_and_the_gpu_image_the_cuda_build(template_repo, tmp_path):
    from reconciler.build.bento import stage_context
    from reconciler.build.builder import bentofile_overlay
    from reconciler.catalog.environments import lock_pins
    from reconciler.catalog.pools import AcceleratorKind

    from reconciler.catalog.files import load
    from reconciler.catalog.specs import ModelSpec

    root = template_repo
    folder = root / "models" / TORCH
    spec = load(ModelSpec, folder / "model.yaml")
    lock = lock_pins(root, TORCH)
    assert "torch==2.13.0+cpu" in lock
    staged = {}
    for kind in (AcceleratorKind.cpu, AcceleratorKind.gpu):
        path = stage_context({}, folder / "bentofile.yaml", service=spec.service, name=TORCH, model_hash="h",
                             shared=[], dest=tmp_path / kind.value, overlay=bentofile_overlay(spec, kind), lock=lock)
        staged[kind] = yaml.safe_load(path.read_text())["python"]
    assert staged[AcceleratorKind.cpu]["packages"] == lock  # exactly the lock
    assert staged[AcceleratorKind.cpu]["extra_index_url"] == ["https://download.pytorch.org/whl/cpu"]
    gpu = staged[AcceleratorKind.gpu]["packages"]
    assert "torch==2.13.0" in gpu and "torch==2.13.0+cpu" not in gpu and "extra_index_url" not in staged[AcceleratorKind.gpu]
    assert sorted(p for p in gpu if not p.startswith("torch==")) == sorted(p for p in lock if not p.startswith("torch=="))
