"""Shared fixtures: a real git repository made from this template, in a temporary folder."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import git
import pytest
import yaml

from tests.envtest import SHARED  # noqa: F401  (../shared, found from a worktree too)
from tests.envtest_fixtures import (  # noqa: F401  (a real API server)
    envtest, envtest_repo, kcm, kube, namespace, new_namespace, sim_nodes)
from tests.oci_registry import oci_registry  # noqa: F401  (a real OCI registry: Debian's docker-registry)
from tests.node_fixtures import (  # noqa: F401  (a real node: tests marked `node` only, tests/test_e2e_node*.py)
    NODE_FIXTURES, _node_lock, bento_base_image, e2e_repos, node_cluster)
from tests.test_registry import serve  # noqa: F401  (the OCI registry stand-in, also used by build tests)

PROJECT = Path(__file__).resolve().parents[1]
TEMPLATE_PARTS = ("models", "environments", "pipelines", ".dvc", ".dvcignore", ".gitignore")
# every model of the template's models/ (what README command 1 trains, builds and deploys): the scikit-learn
# models on the shared lock and the PyTorch one on its own
TEMPLATE_MODELS = tuple(sorted(p.name for p in (PROJECT / "models").iterdir() if (p / "model.yaml").is_file()))

IDENTITY = {"GIT_AUTHOR_NAME": "Test", "GIT_AUTHOR_EMAIL": "test@example.com",
            "GIT_COMMITTER_NAME": "Test", "GIT_COMMITTER_EMAIL": "test@example.com"}


@pytest.fixture(autouse=True, scope="session")
def _git_identity():
    """Tests commit to throwaway repositories; give git an identity on machines that have none."""
    saved = {k: os.environ.get(k) for k in IDENTITY}
    os.environ.update(IDENTITY)
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _not_in_a_clone(folder: str, names: list[str]) -> set[str]:
    """What a fresh clone of the template does not hold: caches, and the weights a DVC pointer tracks (model.pkl
    beside model.pkl.dvc, model.pt beside model.pt.dvc), which a local training run may have left in the checkout."""
    return {n for n in names if n in ("__pycache__", "cache", "tmp") or f"{n}.dvc" in names or n.endswith(".pkl")}


def copy_template(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for part in TEMPLATE_PARTS:
        src = PROJECT / part
        if src.is_dir():
            shutil.copytree(src, dest / part, ignore=_not_in_a_clone)
        elif src.is_file():
            shutil.copy2(src, dest / part)
    return dest


def tracked_weights(root: Path) -> list[Path]:
    """Every DVC-tracked artifact of the models under `root` (model.pkl, model.pt, ...: what their .dvc
    pointers name), whether or not it is in the working tree."""
    return sorted(pointer.parent / out["path"] for pointer in (root / "models").glob("*/*.dvc")
                  for out in yaml.safe_load(pointer.read_text())["outs"])


def commit_all(repo: git.Repo, message: str) -> str:
    repo.git.add("-A")
    repo.git.commit("-m", message, "--allow-empty")
    return repo.head.commit.hexsha


@pytest.fixture(scope="session")
def example_dvc_storage(tmp_path_factory) -> Path:
    """The example models' weights, trained once per session at the lock and `dvc push`ed to a local remote.

    `reconciler plan` checks that a changed model's tracked weights are in the DVC remote, as a
    merge build will need them; copies of the template get this folder as their `.dvc-storage/`.
    """
    from reconciler.build.pipeline_runner import run_train

    work = copy_template(tmp_path_factory.mktemp("weights") / "repo")
    commit_all(git.Repo.init(work, initial_branch="main"), "template")
    run_train(work, push=True)
    storage = work / ".dvc-storage"
    dirty = git.Repo(work).git.status("--porcelain")
    assert not dirty, f"retraining at the lock changed committed files (refresh the pointers):\n{dirty}"
    return storage


def with_dvc_storage(root: Path, storage: Path) -> Path:
    shutil.copytree(storage, root / ".dvc-storage", dirs_exist_ok=True)
    return root


@pytest.fixture
def template_repo(tmp_path: Path, example_dvc_storage: Path) -> Path:
    """A fresh git repository holding this template's models/ and environments/, one commit, with the
    example weights in its (gitignored) local DVC remote."""
    root = with_dvc_storage(copy_template(tmp_path / "repo"), example_dvc_storage)
    repo = git.Repo.init(root, initial_branch="main")
    commit_all(repo, "template")
    return root


def pytest_collection_modifyitems(config, items):
    """The real node is opt-in: a test that asks for its fixtures must carry @pytest.mark.node (tests/node_fixtures.py)."""
    for item in items:
        if NODE_FIXTURES & set(getattr(item, "fixturenames", ())) and item.get_closest_marker("node") is None:
            raise pytest.UsageError(f"{item.nodeid} uses the real node without @pytest.mark.node")
