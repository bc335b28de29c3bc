"""`pip install .` with no extras is enough for a PR plan: in a fresh venv, `reconciler plan` and
`reconciler render` run on the example repository, and a command that needs an extra names it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("bentoml", "dvc", "hera", "scipy", "matplotlib", "sklearn")


def _uv() -> str:
    found = Path(sys.executable).parent / "uv"
    return str(found) if found.exists() else (shutil.which("uv") or pytest.fail("uv is needed (pip install uv)"))


@pytest.fixture(scope="module")
def core_venv(tmp_path_factory) -> Path:
    venv = tmp_path_factory.mktemp("core") / "venv"
    subprocess.run([_uv(), "venv", "-q", "--python", sys.executable, str(venv)], check=True, timeout=300)
    # a copy of the source without build outputs, installed the way a user does: not editable, no extras
    src = tmp_path_factory.mktemp("src") / "model-gitops-reconciler"
    skip = shutil.ignore_patterns(".git", ".venv", "*.egg-info", "__pycache__", ".mypy_cache", ".ruff_cache",
                                  "node_modules", ".cache", ".dvc-storage", "rendered")
    shutil.copytree(ROOT, src, ignore=lambda d, names: skip(d, names) | ({"build", "dist"} if Path(d) == ROOT else set()))
    subprocess.run([_uv(), "pip", "install", "-q", "--python", str(venv / "bin" / "python"), str(src)],
                   check=True, timeout=900)
    return venv


@pytest.fixture(scope="module")
def example_repo(tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("example") / "repo"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(repo)], check=True, timeout=120)
    return repo


def run(venv: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run([str(venv / "bin" / "reconciler"), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.slow
def test_core_install_has_no_heavy_dependency(core_venv):
    probe = "import importlib.util as u; print(','.join(m for m in %r if u.find_spec(m)))" % (HEAVY,)
    out = subprocess.run([str(core_venv / "bin" / "python"), "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"core install pulled in extras: {out.stdout}"


@pytest.mark.slow
def test_core_install_plans_and_renders_the_example_repository(core_venv, example_repo):
    rendered = run(core_venv, "render", "prod", "--repo", str(example_repo), cwd=example_repo.parent)
    assert rendered.returncode == 0, rendered.stderr
    assert "kind: Deployment" in rendered.stdout and "iris-classifier" in rendered.stdout

    planned = run(core_venv, "plan", "--base", "empty", "--format", "json", "--repo", str(example_repo),
                  cwd=example_repo.parent)
    assert planned.returncode == 0, planned.stderr
    assert '"digits-classifier"' in planned.stdout and '"prod"' in planned.stdout


@pytest.mark.slow
def test_a_command_that_needs_an_extra_names_it(core_venv, example_repo):
    built = run(core_venv, "build", "--repo", str(example_repo), cwd=example_repo.parent)
    assert built.returncode != 0
    assert "[build] extra" in built.stderr and "model-gitops-reconciler[build]" in built.stderr

    workflow = run(core_venv, "pipeline", "render", "train", "--model", "iris-classifier", "--repo", str(example_repo),
                   cwd=example_repo.parent)
    assert workflow.returncode != 0
    assert "[pipelines] extra" in workflow.stderr
