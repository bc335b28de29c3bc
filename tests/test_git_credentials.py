"""The register step pushes its proposal branch with the environment's git credentials Secret.

The push runs `python -m pipelines.propose` exactly as the register pod does, against a remote that
demands credentials (real `git http-backend` behind Basic auth: tests/git_http.py), with the Secret's
keys as files in a folder, as the pod's read-only mount holds them."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import git
import pytest
import yaml

from pipelines import gitauth
from pipelines.train import train_workflow
from tests.git_http import GitHTTP

MODEL = "iris-classifier"
TOKEN = "ghp_Th1sIsTheMountedT0ken"
COMMIT = "4f2c9d1e8b7a6c5d4e3f2a1b0c9d8e7f6a5b4c3d"
HASH = "sha256:" + "0123456789abcdef" * 4
REPO_ROOT = Path(__file__).resolve().parents[1]


def _propose(repo: Path, credentials: Path | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in (gitauth.CREDENTIALS_ENV, "GITHUB_TOKEN")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    if credentials is not None:
        env[gitauth.CREDENTIALS_ENV] = str(credentials)  # what the register step's env says
    return subprocess.run([sys.executable, "-m", "pipelines.propose", "--repo-root", str(repo), "--model", MODEL],
                          capture_output=True, text=True, env=env, timeout=120)


@pytest.fixture
def remote(template_repo, tmp_path):
    served = tmp_path / "srv"
    served.mkdir()
    git.Repo.clone_from(str(template_repo), served / "models.git", bare=True)
    with GitHTTP(served, gitauth.DEFAULT_USERNAME, TOKEN) as server:
        git.Repo(template_repo).create_remote("origin", server.url("models.git"))
        yield server, git.Repo(served / "models.git")


def test_the_register_push_authenticates_with_the_mounted_token_and_never_shows_it(template_repo, tmp_path, remote):
    server, bare = remote
    mount = tmp_path / "mount"  # the Secret's keys, as the read-only volume holds them
    mount.mkdir()
    (mount / gitauth.TOKEN).write_text("wrong-token\n")
    mount.chmod(stat.S_IRUSR | stat.S_IXUSR)

    # no credentials: refused, and it fails rather than waiting for a terminal prompt
    refused = _propose(template_repo, None)
    assert refused.returncode == 1 and "terminal prompts disabled" in refused.stderr
    # a wrong token: refused by the server
    (mount / gitauth.TOKEN).chmod(0o600)
    wrong = _propose(template_repo, mount)
    assert wrong.returncode == 1 and "wrong-token" not in wrong.stderr + wrong.stdout
    assert [b.name for b in bare.branches] == ["main"]

    (mount / gitauth.TOKEN).write_text(TOKEN + "\n")
    (mount / gitauth.TOKEN).chmod(stat.S_IRUSR)  # defaultMode 0400, as the workflow mounts it
    pushed = _propose(template_repo, mount)
    assert pushed.returncode == 0, pushed.stderr
    md5 = yaml.safe_load((template_repo / "models" / MODEL / "model.pkl.dvc").read_text())["outs"][0]["md5"]
    branch = f"train/{MODEL}-{md5[:12]}"
    assert branch in [b.name for b in bare.branches]
    tip = bare.commit(branch)
    assert md5 in (tip.tree / f"models/{MODEL}/model.pkl.dvc").data_stream.read().decode()
    assert any(h and h.startswith("Basic ") for h in server.auth_seen)
    # the token is nowhere: not in the output, the repository's config or its remote URL, nothing left on disk
    assert TOKEN not in pushed.stdout + pushed.stderr
    assert TOKEN not in (template_repo / ".git" / "config").read_text()
    assert not list(Path(os.environ.get("TMPDIR", "/tmp")).glob("gitops-git-*/askpass"))


def test_the_workflow_mounts_the_secret_in_the_register_step_only_by_name():
    doc = yaml.safe_load(train_workflow(model=MODEL, model_hash=HASH, commit=COMMIT,
                                        repo_url="https://github.com/example/models-gitops.git", dvc_remote="s3",
                                        dvc_remotes={"s3": "s3://models/dvc"},
                                        git_credentials_secret="models-git-push").to_yaml())
    templates = {t["name"]: t for t in doc["spec"]["templates"]}
    register = templates["register"]
    assert register["volumes"] == [{"name": "git-credentials",
                                    "secret": {"secretName": "models-git-push", "defaultMode": 0o400}}]
    assert register["container"]["volumeMounts"] == [{"name": "git-credentials", "mountPath": gitauth.MOUNT_PATH,
                                                      "readOnly": True}]
    assert {"name": gitauth.CREDENTIALS_ENV, "value": gitauth.MOUNT_PATH} in register["container"]["env"]
    for name, template in templates.items():
        if name != "register":
            assert "volumes" not in template and "volumeMounts" not in (template.get("container") or {}), name
    assert "pipelines.propose" in register["container"]["args"][0]


def test_ssh_deploy_key_needs_known_hosts_and_keeps_host_checking_strict(tmp_path):
    mount = tmp_path / "mount"
    mount.mkdir()
    (mount / gitauth.SSH_KEY).write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nx\n-----END OPENSSH PRIVATE KEY-----\n")
    (mount / gitauth.SSH_KEY).chmod(0o644)  # looser than ssh accepts: a private copy is used
    with pytest.raises(gitauth.CredentialsError, match="known_hosts") as err:
        with gitauth.git_environment("git@github.com:example/models.git", mount):
            pass
    assert "ssh-keyscan" in err.value.fix
    (mount / gitauth.KNOWN_HOSTS).write_text("github.com ssh-ed25519 AAAA\n")
    with gitauth.git_environment("ssh://git@github.com/example/models.git", mount) as env:
        command = env["GIT_SSH_COMMAND"]
        key = Path(command.split("-i ", 1)[1].split(" ", 1)[0])
        assert stat.S_IMODE(key.stat().st_mode) == 0o600 and key.read_text() == (mount / gitauth.SSH_KEY).read_text()
        assert "StrictHostKeyChecking=yes" in command and f"UserKnownHostsFile={mount / gitauth.KNOWN_HOSTS}" in command
        assert "BEGIN OPENSSH" not in command
    assert not key.exists()  # the private copy is removed after the push


@pytest.mark.parametrize("url, error", [
    ("https://github.com/example/models.git", "no 'token' file"),
    ("http://git.example.com/models.git", "plain http"),
])
def test_a_token_is_only_sent_where_it_belongs(tmp_path, url, error):
    mount = tmp_path / "mount"
    mount.mkdir()
    if "plain" in error:
        (mount / gitauth.TOKEN).write_text(TOKEN)
    with pytest.raises(gitauth.CredentialsError, match=error):
        with gitauth.git_environment(url, mount):
            pass


def test_the_environment_names_the_secret_and_a_bad_name_is_a_spec_error():
    from pydantic import ValidationError

    from reconciler.catalog.specs import Pipelines

    assert Pipelines.model_validate({"gitCredentialsSecret": "models-git-push"}).git_credentials_secret == "models-git-push"
    with pytest.raises(ValidationError, match="not a Kubernetes object name"):
        Pipelines.model_validate({"gitCredentialsSecret": "Bad Name!"})
