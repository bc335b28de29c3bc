"""Every path the repository names goes through the read guard: DVC pointers' outs.path, bentofile
paths, kustomize references (regular files only).

A pointer naming an output outside its model folder (an absolute path, '..') is that model's error at
render, plan and build, naming the pointer file and its field; the other model is unaffected; a build
never exits 0 without the weights. The command line runs as a user runs it: a subprocess from the
repository root.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import git
import pytest

from reconciler.build.bento import bentofile_path_problems
from reconciler.errors import UnsafePathError
from reconciler.render.secrets import read_sealed
from tests.conftest import commit_all

POINTER = "models/iris-classifier/model.pkl.dvc"


def reconciler(repo: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "BENTOML_HOME": str(repo.parent / "bentoml"), "NO_COLOR": "1"}
    return subprocess.run([str(Path(sys.executable).parent / "reconciler"), *args], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=timeout)


def point_outside(repo: Path, path: str) -> None:
    pointer = repo / POINTER
    pointer.write_text(pointer.read_text().replace("path: model.pkl", f"path: {path}"))
    commit_all(git.Repo(repo), f"pointer -> {path}")


@pytest.mark.parametrize("outside", ["/etc/passwd", "../../outside/model.pkl"])
def test_a_pointer_outside_its_model_folder_is_a_model_error_at_render_plan_and_build(template_repo, outside):
    point_outside(template_repo, outside)

    render = reconciler(template_repo, "render", "dev")
    assert render.returncode == 3, render.stderr  # partial: the other model rendered
    assert POINTER in render.stderr and "outs.path" in render.stderr and "outside the model folder" in render.stderr
    assert "digits-classifier" in render.stdout and "iris-classifier-" not in render.stdout

    plan = reconciler(template_repo, "plan", "--format", "json")
    assert plan.returncode != 0
    text = plan.stdout + plan.stderr
    assert POINTER in text and "outs.path" in text
    assert "/etc/passwd.dvc" not in text and "outside/model.pkl.dvc" not in text  # the right file is named

    build = reconciler(template_repo, "build", "--model", "iris-classifier")
    assert build.returncode == 1, build.stdout + build.stderr
    assert POINTER in build.stdout + build.stderr and "outs.path" in build.stdout + build.stderr
    assert not (template_repo.parent / "bentoml" / "bentos" / "iris-classifier").exists()  # no Bento without weights


def test_bentofile_paths_must_stay_in_the_model_folder():
    config = {"include": ["*.py", "../shared/*.py"], "exclude": ["/tmp/x"],
              "python": {"requirements_txt": "/etc/shadow", "wheels": ["ok.whl", "../../w.whl"]},
              "conda": {"environment_yml": "env.yml"}, "docker": {"setup_script": "~/.ssh/id_rsa"},
              "description": "file: ../README.md"}
    problems = bentofile_path_problems(config, "models/m/bentofile.yaml")
    assert {p.field for p in problems} == {"include[1]", "exclude[0]", "python.requirements_txt", "python.wheels[1]",
                                           "docker.setup_script", "description"}
    assert all(p.file == "models/m/bentofile.yaml" and p.fix for p in problems)
    assert bentofile_path_problems({"include": ["*.py", "sub/**"], "python": {"requirements_txt": "req.txt"}},
                                   "b") == []


def test_a_bentofile_reading_a_host_file_fails_the_build(template_repo):
    bentofile = template_repo / "models/iris-classifier/bentofile.yaml"
    bentofile.write_text(bentofile.read_text() + "docker:\n  setup_script: /etc/hostname\n")
    commit_all(git.Repo(template_repo), "bentofile reads a host file")
    build = reconciler(template_repo, "build", "--model", "iris-classifier")
    assert build.returncode == 1, build.stdout + build.stderr
    assert "docker.setup_script" in build.stdout + build.stderr and "/etc/hostname" in build.stdout + build.stderr
    assert not (template_repo.parent / "bentoml" / "bentos" / "iris-classifier").exists()


def test_a_fifo_as_an_overlay_patch_is_named_and_refused_not_handed_to_kustomize(template_repo):
    overlay = template_repo / "environments/dev"
    kustomization = overlay / "kustomization.yaml"
    kustomization.write_text(kustomization.read_text().replace("patches:\n", "patches:\n  - path: pipe-patch.yaml\n", 1))
    os.mkfifo(overlay / "pipe-patch.yaml")
    render = reconciler(template_repo, "render", "dev", timeout=120)  # kustomize reading the FIFO would block
    assert render.returncode != 0
    assert "pipe-patch.yaml" in render.stderr and "FIFO" in render.stderr, render.stderr
    assert "timeout" not in render.stderr.lower()


OUT = "outs:\n- md5: 0123456789abcdef0123456789abcdef\n  size: 10\n  hash: md5\n  path: {path}\n"


def _wdir(folder: Path, wdir: str) -> str:
    (folder / "model.pkl.dvc").write_text(f"wdir: {wdir}\n" + OUT.format(path="etc/passwd"))
    return "model.pkl.dvc"


def _symlinked_output(folder: Path) -> str:  # git commits the link, DVC would write and the build read through it
    (folder / "model.pkl").unlink(missing_ok=True)
    os.symlink("/etc/passwd", folder / "model.pkl")
    git.Repo(folder.parents[1]).git.add("-f", "models/iris-classifier/model.pkl")  # past DVC's .gitignore entry
    return "model.pkl.dvc"


def _symlinked_folder(folder: Path) -> str:
    os.symlink("/etc", folder / "data")
    (folder / "data.dvc").write_text(OUT.format(path="data/passwd"))
    return "data.dvc"


def _symlink_to_another_folder(folder: Path) -> str:  # inside the repository, outside the model folder
    os.symlink("../digits-classifier", folder / "data")
    (folder / "data.dvc").write_text(OUT.format(path="data/model.pkl"))
    return "data.dvc"


def _stage_wdir(folder: Path) -> str:  # dvc.lock paths are relative to the stage's wdir in dvc.yaml
    (folder / "dvc.yaml").write_text("stages:\n  train:\n    wdir: ../../..\n    cmd: python train.py\n"
                                     "    outs: [etc/passwd]\n")
    (folder / "dvc.lock").write_text("schema: '2.0'\nstages:\n  train:\n    cmd: python train.py\n"
                                     "    outs:\n    - path: etc/passwd\n      md5: 0123456789abcdef0123456789abcdef\n"
                                     "      size: 10\n      hash: md5\n")
    return "dvc.lock"


def _nul(folder: Path) -> str:
    (folder / "model.pkl.dvc").write_text(OUT.format(path='"model.pkl\\0"'))
    return "model.pkl.dvc"


@pytest.mark.parametrize("plant", [lambda f: _wdir(f, "../../.."), lambda f: _wdir(f, "/"), _symlinked_output,
                                   _symlinked_folder, _symlink_to_another_folder, _stage_wdir, _nul],
                         ids=["wdir-up", "wdir-absolute", "symlinked-output", "symlinked-folder",
                              "symlink-to-another-model", "stage-wdir", "nul-byte"])
def test_an_output_that_leaves_its_folder_by_wdir_or_a_committed_symlink_is_refused_everywhere(template_repo, plant):
    """DVC resolves a pointer's outputs from its `wdir:` (and a dvc.lock's from the stage's wdir in dvc.yaml), and
    writes through symlinks git committed: the same refusal as '..', at render, plan and build."""
    folder = template_repo / "models/iris-classifier"
    pointer = f"models/iris-classifier/{plant(folder)}"
    commit_all(git.Repo(template_repo), "an output leaves the folder")

    render = reconciler(template_repo, "render", "dev")
    assert render.returncode == 3, render.stderr  # partial: the other model rendered
    assert pointer in render.stderr and "outs.path" in render.stderr
    assert "outside the model folder" in render.stderr or "NUL" in render.stderr
    assert "digits-classifier" in render.stdout and "iris-classifier-" not in render.stdout

    plan = reconciler(template_repo, "plan", "--base", "HEAD~1", "--head", "HEAD", "--format", "json")
    assert plan.returncode == 3, plan.stdout + plan.stderr
    assert pointer in plan.stdout and "outs.path" in plan.stdout

    build = reconciler(template_repo, "build", "--model", "iris-classifier")
    assert build.returncode == 1, build.stdout + build.stderr
    assert pointer in build.stdout + build.stderr and "outs.path" in build.stdout + build.stderr
    assert not (template_repo.parent / "bentoml" / "bentos" / "iris-classifier").exists()


@pytest.mark.parametrize("linked", ["environments/dev/secrets/iris-classifier", "environments/dev/secrets"])
def test_a_secrets_folder_linked_out_of_the_repository_is_refused_and_never_read(template_repo, tmp_path, linked):
    """environments/<env>/secrets/<model>/ (or secrets/ itself) committed as a symlink to a folder outside: the files
    there were read as the model's SOPS Secrets (a sealed file outside would have been decrypted and applied)."""
    outside = tmp_path / "outside"
    (outside / "iris-classifier").mkdir(parents=True)
    for folder in (outside, outside / "iris-classifier"):
        (folder / "creds.yaml").write_text('password: "hunter2-outside\n')
    link = template_repo / linked
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(outside / "iris-classifier" if linked.endswith("iris-classifier") else outside, link)
    commit_all(git.Repo(template_repo), "secrets linked out")
    # the reader itself refuses (whoever calls it), naming the link, before listing or reading anything
    with pytest.raises(UnsafePathError, match="outside the repository") as info:
        read_sealed(template_repo, "dev", "iris-classifier")
    assert linked in str(info.value) and "creds.yaml" not in str(info.value)
    # and the command: the environment's folder check refuses it first, an error of the environment
    render = reconciler(template_repo, "render", "dev")
    assert render.returncode == 1, render.stderr
    assert "symlink" in render.stderr and "outside the repository" in render.stderr and linked in render.stderr
    assert "hunter2" not in render.stdout + render.stderr and "creds.yaml" not in render.stderr
