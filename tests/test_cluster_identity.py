"""Cluster identity on the real API server: a command acts only on the environment's cluster.

Two kubeconfig contexts point at the same envtest server, as a dev and a prod context would point at two
clusters: the context name is what is checked, and the kube-system namespace's UID pins the server itself.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from reconciler.catalog.specs import Cluster as ClusterSpec
from reconciler.cli.main import app
from reconciler.cluster.identity import Target, check_target, check_uid, choose_context
from reconciler.errors import ClusterIdentityError
from reconciler.results import ObjectRef
from reconciler.run.reconcile import reconcile_pass
from reconciler.sync.planner import SyncOptions
from tests.conftest import commit_all

WRONG_UID = "00000000-0000-4000-8000-000000000000"


def spec(context: str, uid: str | None = None) -> ClusterSpec:
    return ClusterSpec(context=context, kubeSystemUID=uid)


# -- pure decisions ------------------------------------------------------------------------------

def test_the_declared_context_is_used_and_the_current_one_never_falls_back():
    pick = dict(current="kind-dev", available=["kind-dev", "prod-eks"], kubeconfig="k")
    assert choose_context("prod", "prod-eks", explicit=None, **pick) == "prod-eks"
    assert choose_context("prod", "prod-eks", explicit="kind-dev", **pick) == "kind-dev"
    with pytest.raises(ClusterIdentityError) as refused:
        choose_context("prod", "prod-eks", explicit=None, current="kind-dev", available=["kind-dev"], kubeconfig="k")
    assert "'prod-eks'" in str(refused.value) and "'kind-dev'" in str(refused.value) and "--context" in str(refused.value)


def test_target_checks():
    server = "https://10.0.0.1"
    check_target("prod", spec("prod-eks"), Target("prod-eks", server))
    check_target("prod", spec("prod-eks"), Target("kind-dev", server, explicit=True))
    check_target("prod", spec("prod-eks"), Target(None, server))  # in-cluster: only the UID pin can tell
    with pytest.raises(ClusterIdentityError, match="'prod-eks'.*'kind-dev'"):
        check_target("prod", spec("prod-eks"), Target("kind-dev", server))
    uid = "11111111-2222-4333-8444-555555555555"
    check_uid("prod", spec("prod-eks", uid), Target(None, server), uid)
    check_uid("prod", spec("prod-eks"), Target(None, server), "anything")  # not pinned
    with pytest.raises(ClusterIdentityError, match=f"{uid}.*in-cluster.*{WRONG_UID}"):
        check_uid("prod", spec("prod-eks", uid), Target(None, server), WRONG_UID)


# -- on the real API server ------------------------------------------------------------------------

def two_contexts(envtest, tmp_path: Path, current: str = "kind-dev") -> Path:
    """A kubeconfig with contexts kind-dev and prod-eks, both for the envtest server."""
    doc = yaml.safe_load(Path(envtest.kubeconfig).read_text())
    base = doc["contexts"][0]["context"]
    doc["contexts"] = [{"name": name, "context": dict(base)} for name in ("kind-dev", "prod-eks")]
    doc["current-context"] = current
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(doc))
    return path


def sync(repo: Path, kubeconfig: Path, *extra: str):
    return CliRunner().invoke(app, ["sync", "prod", "--repo", str(repo), "--kubeconfig", str(kubeconfig),
                                    "--format", "json", *extra])


def deployments(envtest, namespace: str) -> list[str]:
    status, body = envtest.raw("GET", f"/apis/apps/v1/namespaces/{namespace}/deployments")
    return [] if status == 404 else [d["metadata"]["name"] for d in body["items"]]


def without(kubeconfig: Path, context: str) -> Path:
    doc = yaml.safe_load(kubeconfig.read_text())
    doc["contexts"] = [c for c in doc["contexts"] if c["name"] != context]
    kubeconfig.write_text(yaml.safe_dump(doc))
    return kubeconfig


def test_a_prod_sync_under_a_dev_context_refuses_and_with_context_given_proceeds(envtest, envtest_repo, tmp_path):
    repo, ns = envtest_repo.root, envtest_repo.namespaces["prod"]
    kubeconfig = without(two_contexts(envtest, tmp_path), "prod-eks")  # only dev is known, and current
    refused = sync(repo, kubeconfig)
    assert refused.exit_code == 1, refused.output  # failed: nothing was done (README, exit codes)
    assert "'prod-eks'" in refused.output and "'kind-dev'" in refused.output and "--context" in refused.output
    assert deployments(envtest, ns) == []  # nothing written

    proceeded = sync(repo, kubeconfig, "--context", "kind-dev")
    assert proceeded.exception is None or isinstance(proceeded.exception, SystemExit), proceeded.output
    report = json.loads(proceeded.stdout)
    assert report["summary"].get("created"), report
    assert f"cluster: context kind-dev, server {envtest.url}" in proceeded.stderr
    assert deployments(envtest, ns)


def test_the_declared_context_is_chosen_over_the_current_one_and_printed(envtest, envtest_repo, tmp_path):
    kubeconfig = two_contexts(envtest, tmp_path, current="kind-dev")  # prod-eks exists but is not current
    result = sync(envtest_repo.root, kubeconfig, "--dry-run")
    assert result.exit_code in (0, 1), result.output
    assert f"cluster: context prod-eks, server {envtest.url}" in result.stderr


def _pin(repo: Path, uid: str) -> str:
    import git

    import re

    path = repo / "environments/prod/environment.yaml"
    path.write_text(re.sub(r"cluster: \{[^}]*\}", f"cluster: {{context: prod-eks, kubeSystemUID: {uid}}}",
                           path.read_text()))
    assert uid in path.read_text()
    return commit_all(git.Repo(repo), f"pin prod to {uid}")


def test_a_pinned_cluster_identity_refuses_another_cluster_even_in_cluster(envtest, envtest_repo, tmp_path):
    repo, ns = envtest_repo.root, envtest_repo.namespaces["prod"]
    kube = envtest.client()
    real = kube.get(ObjectRef("v1", "Namespace", None, "kube-system"))["metadata"]["uid"]
    _pin(repo, WRONG_UID)
    kubeconfig = two_contexts(envtest, tmp_path, current="prod-eks")
    refused = sync(repo, kubeconfig)
    assert refused.exit_code == 1 and WRONG_UID in refused.stdout and real in refused.stdout
    assert deployments(envtest, ns) == []
    # in-cluster (no context to compare): the pin alone refuses, through the same sync step the loop uses
    in_cluster = reconcile_pass(kube, repo, "HEAD", "prod", SyncOptions(target=Target(None, envtest.url)))
    assert in_cluster.error and WRONG_UID in str(in_cluster.error) and "in-cluster" in str(in_cluster.error)
    assert deployments(envtest, ns) == []
    # --context does not override the pin: it names a context, the UID names the cluster
    assert sync(repo, kubeconfig, "--context", "kind-dev").exit_code == 1

    _pin(repo, real)
    applied = reconcile_pass(kube, repo, "HEAD", "prod", SyncOptions(target=Target(None, envtest.url)))
    assert applied.error is None and applied.summary().counts, applied.as_dict()
    assert deployments(envtest, ns)


def test_rollout_verbs_refuse_another_context(envtest, envtest_repo, tmp_path):
    kubeconfig = without(two_contexts(envtest, tmp_path), "prod-eks")
    for verb in ("status", "promote", "abort", "pause", "resume"):
        result = CliRunner().invoke(app, ["rollout", verb, "iris-classifier", "prod", "--repo", str(envtest_repo.root),
                                          "--kubeconfig", str(kubeconfig)])
        assert result.exit_code == 1 and "'prod-eks'" in result.output and "'kind-dev'" in result.output, result.output
    # with --context given, the command reaches the cluster (no rollout recorded there yet)
    result = CliRunner().invoke(app, ["rollout", "status", "iris-classifier", "prod", "--repo", str(envtest_repo.root),
                                      "--kubeconfig", str(kubeconfig), "--context", "kind-dev"])
    assert result.exit_code == 1 and "no rollout recorded" in result.output
    assert f"cluster: context kind-dev, server {envtest.url}" in result.output
