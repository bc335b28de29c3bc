"""A training environment per model (pipelines/locks.py): which lock a model uses, the plan-time import check,
the lock in the content hash, the Argo steps and the Bento installing exactly it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pipelines import locks
from pipelines.train import lock_install
from reconciler.build.bento import python_packages
from reconciler.catalog.load import load_catalog
from reconciler.source.hashing import model_hashes

LIGHTGBM_TRAIN = '''
from pathlib import Path


def train(out_dir, *, seed):
    import lightgbm  # noqa: F401
    return Path(out_dir) / "model.pkl"


def evaluate(out_dir, *, seed):
    return {}
'''


def test_a_lock_is_exact_pins_only():
    assert locks.parse_lock("# c\nNumPy==2.4.6  # the array\n\ntorch==2.13.0+cpu\n", "x.lock") == {
        "numpy": "2.4.6", "torch": "2.13.0+cpu"}
    with pytest.raises(locks.LockError, match=r"x.lock:2: 'scipy>=1' is not an exact pin"):
        locks.parse_lock("numpy==2.4.6\nscipy>=1\n", "x.lock")
    with pytest.raises(locks.LockError, match="pinned twice"):
        locks.parse_lock("numpy==2.4.6\nnumpy==2.4.5\n", "x.lock")
    with pytest.raises(locks.LockError, match="not an exact pin"):
        locks.parse_lock("--extra-index-url https://example.com/simple\n", "x.lock")


def test_imports_are_checked_against_the_lock():
    source = b"import os\nimport numpy as np\nfrom sklearn.pipeline import make_pipeline\nimport bentoml\n" \
             b"from pipelines.serving import traced\nimport helper\nfrom . import sibling\n" \
             b"def f():\n    import lightgbm\n    from PIL import Image\n"
    missing = locks.missing_imports({"models/m/train.py": source}, {"numpy": "2", "scikit-learn": "1"}, {"helper"})
    assert [(m.line, m.module, m.package) for m in missing] == [(9, "lightgbm", "lightgbm"), (10, "PIL", "pillow")]


def test_pytorch_variant_pins_get_their_index_unless_a_local_folder_holds_the_wheel(tmp_path):
    pins = {"torch": "2.13.0+cpu", "numpy": "2.4.6"}
    assert locks.index_options(pins) == ["--extra-index-url", "https://download.pytorch.org/whl/cpu"]
    assert locks.index_options({"torch": "2.13.0"}) == []  # PyPI's own build
    (tmp_path / "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl").write_bytes(b"")
    assert locks.index_options(pins, [str(tmp_path)]) == []
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in lock_install("models/w/requirements.lock", pins)


def test_a_model_importing_a_package_its_lock_lacks_is_a_plan_error_naming_file_package_and_lock(template_repo):
    folder = template_repo / "models" / "gbm"
    shutil.copytree(template_repo / "models" / "iris-classifier", folder)
    for name in ("model.pkl", "metrics.json"):
        (folder / name).unlink(missing_ok=True)
    spec = folder / "model.yaml"
    spec.write_text(spec.read_text().replace("name: iris-classifier", "name: gbm"))
    bentofile = folder / "bentofile.yaml"
    bentofile.write_text(bentofile.read_text().replace("iris-classifier", "gbm"))
    (folder / "train.py").write_text(LIGHTGBM_TRAIN)

    catalog = load_catalog(template_repo)
    assert "gbm" not in catalog.models and "iris-classifier" in catalog.models  # one broken model blocks no other
    (problem,) = [p for p in catalog.errors["gbm"].problems if "lightgbm" in p.message]
    assert (problem.file, problem.line) == ("models/gbm/train.py", 6)
    assert "pipelines/requirements.lock does not pin lightgbm" in problem.message
    assert problem.fix.startswith("create models/gbm/requirements.lock (start from a copy of pipelines/requirements.lock)")

    # its own lock with LightGBM: accepted, and the lock is an input of its content hash
    own = folder / "requirements.lock"
    own.write_text((template_repo / "pipelines" / "requirements.lock").read_text() + "lightgbm==4.7.0\n")
    catalog = load_catalog(template_repo)
    assert "gbm" in catalog.models, catalog.errors.get("gbm")
    hashes = model_hashes(template_repo, None, catalog.models.values())
    assert hashes["gbm"].kinds["models/gbm/requirements.lock"] == "lock"
    assert hashes["iris-classifier"].kinds["pipelines/requirements.lock"] == "lock"  # the shared one, for the others
    before = hashes["gbm"].digest
    own.write_text(own.read_text().replace("lightgbm==4.7.0", "lightgbm==4.6.0"))
    assert model_hashes(template_repo, None, [catalog.models["gbm"]])["gbm"].digest != before


def test_the_shared_lock_is_read_once_per_catalog_load_and_again_by_the_next(template_repo):
    """load_catalog reads pipelines/requirements.lock once for every model without its own lock: each model still
    gets its own problem when the lock lacks what it imports, and a lock changed between two loads is read again."""
    for name in ("alpha", "beta"):
        folder = template_repo / "models" / name
        shutil.copytree(template_repo / "models" / "iris-classifier", folder)
        (folder / "model.yaml").write_text((folder / "model.yaml").read_text().replace("name: iris-classifier",
                                                                                     f"name: {name}"))
        (folder / "bentofile.yaml").write_text((folder / "bentofile.yaml").read_text().replace("iris-classifier", name))
        (folder / "train.py").write_text(LIGHTGBM_TRAIN)
    shared = template_repo / "pipelines" / "requirements.lock"
    catalog = load_catalog(template_repo)
    for name in ("alpha", "beta"):  # one problem per model, from the one read
        (problem,) = [p for p in catalog.errors[name].problems if "lightgbm" in p.message]
        assert problem.file == f"models/{name}/train.py"
    shared.write_text(shared.read_text() + "lightgbm==4.7.0\n")
    catalog = load_catalog(template_repo)  # the next load reads the lock as it is now
    assert {"alpha", "beta"} <= set(catalog.models), catalog.errors
    shared.write_text(shared.read_text() + "not a pin\n")
    catalog = load_catalog(template_repo)  # an unreadable lock: every model that uses it says so
    for name in ("alpha", "beta", "iris-classifier"):
        assert any(p.file == "pipelines/requirements.lock" for p in catalog.errors[name].problems), name


def test_the_bento_installs_the_lock_and_a_kind_may_swap_one_pin():
    lock = ["numpy==2.4.6", "torch==2.13.0+cpu"]
    config = {"python": {"packages": ["numpy>=1.26", "pillow==11.0.0"], "lock_packages": False}}
    python_packages(config, lock, own=["numpy>=1.26", "pillow==11.0.0"])
    assert config["python"]["packages"] == ["numpy==2.4.6", "torch==2.13.0+cpu", "pillow==11.0.0"]
    assert config["python"]["extra_index_url"] == ["https://download.pytorch.org/whl/cpu"]
    # the gpu image's own pin (images.gpu.bentofile in model.yaml) replaces the lock's CPU build
    gpu = {"python": {"packages": ["torch==2.13.0"]}}
    python_packages(gpu, lock, own=[])
    assert gpu["python"]["packages"] == ["numpy==2.4.6", "torch==2.13.0"] and "extra_index_url" not in gpu["python"]


def test_a_missing_framework_at_train_time_is_one_line_with_the_fix(tmp_path):
    from reconciler.build.pipeline_runner import run_train
    from reconciler.errors import ReconcilerError

    root = tmp_path / "repo"
    folder = root / "models" / "gbm"
    folder.mkdir(parents=True)
    (folder / "model.yaml").write_text("name: gbm\nowner: a@example.com\nservice: service.py:Svc\n")
    (folder / "train.py").write_text(LIGHTGBM_TRAIN)
    with pytest.raises(ReconcilerError) as info:
        run_train(root, ["gbm"], register=False)
    message = str(info.value)
    assert "gbm: step train failed: models/gbm/train.py needs the module lightgbm" in message
    assert "Traceback" not in message and len(info.value.message.splitlines()) == 1
    assert info.value.fix.startswith("create models/gbm/requirements.lock (start from a copy of pipelines/requirements.lock) "
                                     "with lightgbm==<version> in it")


def test_the_shared_lock_is_complete_and_the_runners_environment_holds_exactly_it(tmp_path):
    """--no-deps installs: every dependency of a pin is pinned (the venv imports the whole scikit-learn stack)."""
    import subprocess

    from reconciler.build.pipeline_runner import training_python

    root = Path(__file__).resolve().parents[1]
    python = training_python(root, "iris-classifier")
    assert python == training_python(root, "digits-classifier")  # one environment per lock, cached
    done = subprocess.run([str(python), "-c", "import sklearn.neural_network, sklearn.pipeline; "
                           "import importlib.metadata as m; print(sorted(d.metadata['Name'].lower() for d in m.distributions()))"],
                          cwd=tmp_path, capture_output=True, text=True, check=False)  # (a checkout's *.egg-info: not it)
    assert done.returncode == 0, done.stderr
    installed = set(eval(done.stdout))  # our own child's repr of a list of names
    assert installed - {"pip", "setuptools", "wheel"} == set(locks.parse_lock(
        (root / "pipelines" / "requirements.lock").read_text(), "lock"))


def test_the_runner_installs_from_pips_local_wheel_folders(tmp_path, monkeypatch):
    """uv reads no pip configuration: the runner passes pip's find-links on (a machine's local +cpu torch wheel)."""
    from reconciler.catalog import environments

    conf = tmp_path / "pip.conf"
    conf.write_text("[global]\nfind-links = /a /b\n")
    monkeypatch.setattr(environments, "PIP_CONFIGS", (str(conf), str(tmp_path / "absent.conf")))
    monkeypatch.setenv("PIP_FIND_LINKS", "/b /c")
    assert environments._find_links() == ["/a", "/b", "/c"]
    command = environments.install_command(Path("lock"), Path("python"), {"torch": "2.13.0+cpu"})
    assert [command[i + 1] for i, a in enumerate(command) if a == "--find-links"] == ["/a", "/b", "/c"]
    assert command[-2:] == ["--extra-index-url", "https://download.pytorch.org/whl/cpu"]  # none of them holds it
    assert "--no-deps" in command
