"""The plan says what sync will do with SOPS Secrets: verified where it holds the key, "not verified" where not.

The real sops binary and age identities (pyrage), as tests/test_secrets.py; the plan is the one a pull
request gets (plan_revisions, rendered from git).
"""

from __future__ import annotations

import git

from reconciler.plan.revisions import EMPTY, plan_revisions
from reconciler.report.plan import plan_markdown
from tests.conftest import commit_all
from tests import test_secrets
from tests.test_secrets import KEY_VAR, MODEL, PASSWORD, encrypt, identity, secret

sealed_repo = test_secrets.sealed_repo  # the same fixture: dev carries an encrypted Secret for iris


def reasons(plan, model: str = MODEL) -> str:
    return " ".join(plan.environments["dev"].models[model].reasons)


def test_with_the_key_the_plan_decrypts_what_it_adds(sealed_repo) -> None:
    root, _, _ = sealed_repo
    plan = plan_revisions(root, EMPTY, "HEAD", ["dev"])
    assert plan.ok and plan.environments["dev"].models[MODEL].error is None
    assert "secret db: added (keys: password, user)" in reasons(plan) and "not verified" not in reasons(plan)
    assert PASSWORD not in plan_markdown(plan)


def test_a_secret_encrypted_for_another_key_is_a_model_error_in_the_plan(sealed_repo) -> None:
    root, ns, _ = sealed_repo
    _, stranger = identity()  # a recipient whose private key the environment does not have
    (root / f"environments/dev/secrets/{MODEL}/db.yaml").write_text(encrypt(secret(ns, PASSWORD), stranger))
    commit_all(git.Repo(root), "db encrypted for the wrong key")
    plan = plan_revisions(root, "HEAD~1", "HEAD", ["dev"])
    assert not plan.ok
    error = plan.environments["dev"].models[MODEL].error or ""
    assert "db.yaml" in error and "wrong key" in error and "sops updatekeys" in error
    assert plan.environments["dev"].models.get("digits-classifier") is None or \
        plan.environments["dev"].models["digits-classifier"].error is None


def test_without_the_key_the_plan_says_not_verified_instead_of_added(sealed_repo, monkeypatch) -> None:
    root, _, _ = sealed_repo
    monkeypatch.delenv(KEY_VAR)
    plan = plan_revisions(root, EMPTY, "HEAD", ["dev"])
    text = reasons(plan)
    assert "secret db: not verified, the plan cannot decrypt it" in text and KEY_VAR in text
    assert "secret db: added" not in text
    assert "not verified" in plan_markdown(plan)
