"""The one reconcile pass (reconciler.run.reconcile): every failure names its stage, and `reconciler run` and
`reconciler sync` record it the same way.

The decisions (the record after a pass) are pure and tested without a server. The stages that fail before
the cluster is reached (source, catalog) run on a real git repository with a cluster that fails the
test if it is touched: nothing may be written when the pass fails there. The rest runs on envtest, the command
as a subprocess.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import git
import pytest

from reconciler.run.loop import Reconciler, RunConfig
from reconciler.run.reconcile import Stage, environment_failure, next_record, reconcile_pass
from reconciler.run.record import Failure, Record, load_record
from reconciler.results import Action, ObjectRef, ObjectResult
from reconciler.sync.engine import SyncResult
from reconciler.sync.planner import SyncOptions
from tests.conftest import commit_all

RECONCILER = str(Path(sys.executable).with_name("reconciler"))


@pytest.fixture(autouse=True)
def _images_file(tmp_path, monkeypatch):
    monkeypatch.setenv("RECONCILER_IMAGES_FILE", str(tmp_path / "images.json"))


# -- the record after a pass: pure ---------------------------------------------------------------

def _applied(model: str = "iris") -> SyncResult:
    ref = ObjectRef("apps/v1", "Deployment", "dev", model)
    return SyncResult("dev", "dev", objects=[ObjectResult(ref, Action.configured, model)], commit="c2")


def test_a_failed_pass_keeps_the_applied_commit_and_records_its_stage():
    before = Record("c1", True, "t1", "1 configured", requested="r1", handled="r0")
    failed = SyncResult("dev", "dev", model_errors={"iris": ["kustomize: bad patch"]}, commit="c2", stage="render")
    record = next_record(before, "c2", failed, "t2")
    assert (record.commit, record.ok, record.time) == ("c1", True, "t1")  # what runs is still c1
    assert record.failure == Failure("c2", "every model failed; iris: kustomize: bad patch", "t2", "render")
    assert record.failure.describe().startswith("render: every model failed")
    assert (record.requested, record.handled) == ("r1", "r1")  # the loop's pass answers the pending request


def test_a_pass_that_applied_records_its_commit_and_clears_the_failure():
    before = Record("c1", True, failure=Failure("c2", "boom", "t1", "sync"), pinned_head="c9", requested="r1")
    record = next_record(before, "c2", _applied(), "t2", handles_request=False)
    assert (record.commit, record.ok, record.failure, record.pinned_head) == ("c2", True, None, "")
    assert (record.requested, record.handled) == ("r1", "")  # a manual sync leaves the request to `run`
    assert next_record(before, "c1", _applied(), "t2", pinned_head="c9").pinned_head == "c9"


def test_a_failure_without_a_stage_is_a_sync_failure_and_a_partial_pass_is_no_environment_failure():
    from reconciler.errors import KubeError

    down = SyncResult("dev", "dev", error=KubeError("connection refused"), commit="c2")
    assert next_record(None, "c2", down, "t").failure.stage == "sync"
    partial = _applied()
    partial.model_errors["wine"] = ["bad"]
    assert environment_failure(partial) is None
    assert next_record(None, "c2", partial, "t").commit == "c2"


# -- stages that fail before the cluster ---------------------------------------------------------

class NoCluster:
    """Fails the test on any use: a pass that failed at source or catalog must not reach the cluster. (A render
    failure of every model still syncs the environment's shared objects, so it meets the real server below.)"""

    def __getattr__(self, name: str):
        raise AssertionError(f"the pass touched the cluster ({name}) after a stage failed")


def test_source_and_catalog_failures_are_named_and_touch_no_cluster(template_repo: Path):
    repo = git.Repo(template_repo)
    unknown = reconcile_pass(NoCluster(), template_repo, "no-such-revision", "dev", SyncOptions())
    assert (unknown.stage, unknown.commit) == (Stage.source.value, None) and "no-such-revision" in str(unknown.error)

    spec = template_repo / "environments/dev/environment.yaml"
    good = spec.read_text()
    spec.write_text(good + "\nnoSuchField: 1\n")
    broken_spec = commit_all(repo, "an unknown field in dev's environment spec")
    at_catalog = reconcile_pass(NoCluster(), template_repo, broken_spec, "dev", SyncOptions())
    assert (at_catalog.stage, at_catalog.commit) == (Stage.catalog.value, broken_spec), at_catalog.as_dict()
    assert "noSuchField" in str(at_catalog.error)



# -- `run` and `sync` record a failure the same way (envtest) --------------------------------------

def test_run_and_sync_record_a_render_failure_alike(envtest, envtest_repo, new_namespace, tmp_path):
    root, state_ns = envtest_repo.root, new_namespace("state")
    kube = envtest.client()
    reconciler = Reconciler(kube, RunConfig(repo_url=str(root), branch="main", workdir=tmp_path / "mirror",
                                            environments=["dev"], state_namespace=state_ns, identity="one",
                                            listen=None, lease_duration=30))
    (first,) = reconciler.tick()
    assert first.result.ok or not first.result.model_errors, first.result.as_dict()
    (root / "environments/dev/patches/deployment.yaml").write_text("{ not: [yaml")
    broken = commit_all(git.Repo(root), "break the dev overlay")

    (failed,) = reconciler.tick()
    assert (failed.commit, failed.result.stage, failed.result.commit) == (broken, "render", broken)
    by_run = load_record(kube, "dev", state_ns)
    assert (by_run.commit, by_run.failure.commit, by_run.failure.stage) == (first.commit, broken, "render")
    text = reconciler.metrics.exposition()[1].decode()
    assert 'reconciler_reconcile_failures_total{environment="dev",stage="render"} 1.0' in text

    state = kube.get(ObjectRef("v1", "ConfigMap", state_ns, "reconciler-state-dev"))
    kube.delete(ObjectRef("v1", "ConfigMap", state_ns, state["metadata"]["name"]))
    done = subprocess.run([RECONCILER, "sync", "dev", "--kubeconfig", str(envtest.kubeconfig), "--context", "envtest",
                           "--state-namespace", state_ns, "--format", "json"], cwd=root, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode != 0, done.stdout + done.stderr
    assert '"stage": "render"' in done.stdout
    by_sync = load_record(kube, "dev", state_ns)
    assert (by_sync.failure.commit, by_sync.failure.stage) == (broken, "render")
    assert by_sync.failure.error == by_run.failure.error
