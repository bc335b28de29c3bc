"""The long-running reconciler: catch-up decisions, resume after a crash, force-push, the Lease.

Git is real (a bare "remote" and a clone that pushes to it, made with GitPython); the cluster is the real
API server (envtest) through the real client; each test keeps its state in a fresh namespace, and the
template's environments are renamed to fresh namespaces too.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import git
import pytest

from reconciler import labels
from reconciler.cluster.kube import KubeClient, RetryPolicy
from reconciler.run.lease import LeaderGuard, LeaseLock
from reconciler.run.loop import Reconciler, RunConfig, next_step, reconcile_once
from reconciler.run.record import Failure, Record, load_record
from reconciler.source.git import GitMirror
from reconciler.errors import KubeError
from reconciler.results import ObjectRef
from reconciler.errors import ReconcilerError
from reconciler.sync.engine import SyncResult
from tests.conftest import PROJECT as PROJECT_TEMPLATE, TEMPLATE_MODELS, commit_all, copy_template
from tests.envtest_fixtures import isolate_environments

FAST = RetryPolicy(attempts=3, initial=0.01, cap=0.02)


@pytest.fixture(autouse=True)
def _images_file(tmp_path, monkeypatch):
    monkeypatch.setenv("RECONCILER_IMAGES_FILE", str(tmp_path / "images.json"))


@pytest.fixture
def state_ns(new_namespace) -> str:
    """The namespace holding the reconciler's state ConfigMaps and its Lease, fresh per test."""
    return new_namespace("state")


@pytest.fixture
def kube(envtest):
    client = KubeClient.from_kubeconfig(envtest.kubeconfig, retry=FAST, sleep=lambda s: None)
    yield client
    client.close()


@pytest.fixture
def remote(tmp_path, envtest):
    """(bare remote path, a working clone that pushes to it) holding the template, one commit on main, its
    environments in fresh namespaces (``remote.namespaces``)."""
    work = copy_template(tmp_path / "work")
    namespaces = isolate_environments(work)
    repo = git.Repo.init(work, initial_branch="main")
    commit_all(repo, "template")
    bare = tmp_path / "remote.git"
    git.Repo.init(bare, bare=True, initial_branch="main")
    repo.create_remote("origin", str(bare))
    repo.git.push("origin", "main")
    repo.namespaces = namespaces  # type: ignore[attr-defined]
    yield bare, repo
    envtest.delete_namespaces(namespaces.values())


def push(repo: git.Repo, message: str, change=None, force: bool = False) -> str:
    path = Path(repo.working_dir) / "CHANGES.md"
    if change is None:
        path.write_text((path.read_text() if path.exists() else "") + message + "\n")
    else:
        change(Path(repo.working_dir))
    sha = commit_all(repo, message)
    repo.git.push("origin", "main", *(["--force"] if force else []))
    return sha


class FakeHistory:
    def __init__(self, chain: list[str]) -> None:
        self.chain = chain

    def is_ancestor(self, a: str, b: str) -> bool:
        return a in self.chain and b in self.chain and self.chain.index(a) <= self.chain.index(b)

    def between(self, a: str, b: str) -> list[str]:
        return self.chain[self.chain.index(a) + 1:self.chain.index(b) + 1]


# -- pure decisions ------------------------------------------------------------------------------

def test_next_step_is_always_the_newest_commit():
    h = FakeHistory(["a", "b", "c", "d"])
    assert next_step(None, "d", h).commit == "d"
    assert next_step(Record("d", True), "d", h) is None
    assert next_step(Record("d", True), "d", h, resync=True).reason == "periodic resync"
    assert next_step(Record("d", False), "d", h).reason.startswith("retrying")
    step = next_step(Record("a", True), "d", h)  # three merges behind: the head only, never b or c
    assert step.commit == "d" and "2 intermediate commits not replayed" in step.reason
    rewritten = next_step(Record("x", True), "d", h)
    assert rewritten.commit == "d" and "force-push" in rewritten.reason
    # a failed head is retried; a newer commit supersedes it at once
    failed = Record("a", True, failure=Failure("c", "overlay broken", "2026-12-01T21:00:00Z"))
    assert next_step(failed, "c", h).commit == "c" and "retrying" in next_step(failed, "c", h).reason
    assert next_step(failed, "d", h).commit == "d" and "supersedes failed c" in next_step(failed, "d", h).reason
    # the very first pass failed: nothing applied yet, the failure is retried, a newer head tried
    first = Record("", False, failure=Failure("a", "boom", "t"))
    assert next_step(first, "a", h).commit == "a" and next_step(first, "b", h).commit == "b"


# -- reconcile_once with real git ----------------------------------------------------------------

class Recorder:
    """A sync function that records what it was asked to reconcile (and can crash or fail)."""

    def __init__(self, crash_on: str | None = None, fail_on: str | None = None) -> None:
        self.calls: list[str] = []
        self.crash_on, self.fail_on = crash_on, fail_on

    def __call__(self, kube, repo, commit, env, options):
        if commit == self.crash_on:
            raise KeyboardInterrupt("killed")
        self.calls.append(commit)
        result = SyncResult(env, "models-" + env, commit=commit)
        if commit == self.fail_on:
            result.error = ReconcilerError("API unavailable")
        return result


def test_only_the_newest_merge_is_reconciled_and_recorded(remote, kube, state_ns, tmp_path):
    bare, work = remote
    mirror = GitMirror(str(bare), "main", tmp_path / "mirror")
    first = mirror.fetch()
    sync = Recorder()
    reconcile_once(kube, mirror.path, first, mirror, ["dev"], state_namespace=state_ns, sync=sync)
    assert sync.calls == [first]
    shas = [push(work, f"merge {i}") for i in range(3)]
    head = mirror.fetch()
    assert head == shas[-1]
    out = reconcile_once(kube, mirror.path, head, mirror, ["dev"], state_namespace=state_ns, sync=sync)
    assert sync.calls == [first, head] and "not replayed" in out[0].reason
    assert load_record(kube, "dev", state_ns) == Record(head, True, load_record(kube, "dev", state_ns).time, "nothing",
                                                          policy="automated (prune: on, self-heal: off)")
    # up to date: nothing more
    reconcile_once(kube, mirror.path, head, mirror, ["dev"], state_namespace=state_ns, sync=sync)
    assert len(sync.calls) == 2


def test_a_restarted_reconciler_resumes_from_the_recorded_commit(remote, kube, state_ns, tmp_path):
    bare, work = remote
    mirror = GitMirror(str(bare), "main", tmp_path / "mirror")
    base = mirror.fetch()
    reconcile_once(kube, mirror.path, base, mirror, ["dev"], state_namespace=state_ns, sync=Recorder())
    head = push(work, "merge")
    with pytest.raises(KeyboardInterrupt):
        reconcile_once(kube, mirror.path, mirror.fetch(), mirror, ["dev"], state_namespace=state_ns,
                       sync=Recorder(crash_on=head))
    assert load_record(kube, "dev", state_ns).commit == base
    # a new process (fresh mirror clone, fresh client) resumes
    mirror2 = GitMirror(str(bare), "main", tmp_path / "mirror2")
    again = Recorder()
    reconcile_once(kube, mirror2.path, mirror2.fetch(), mirror2, ["dev"], state_namespace=state_ns, sync=again)
    assert again.calls == [head]
    assert load_record(kube, "dev", state_ns).commit == head


def test_environment_wide_failure_keeps_the_applied_commit_and_is_retried(remote, kube, state_ns, tmp_path):
    bare, work = remote
    mirror = GitMirror(str(bare), "main", tmp_path / "mirror")
    base = mirror.fetch()
    reconcile_once(kube, mirror.path, base, mirror, ["dev"], state_namespace=state_ns, sync=Recorder())
    a = push(work, "a")
    reconcile_once(kube, mirror.path, mirror.fetch(), mirror, ["dev"], state_namespace=state_ns,
                   sync=Recorder(fail_on=a))
    cm = kube.get(ObjectRef("v1", "ConfigMap", state_ns, "reconciler-state-dev"))
    assert (cm["data"]["commit"], cm["data"]["lastFailedCommit"]) == (base, a)
    assert "API unavailable" in cm["data"]["lastError"] and cm["data"]["lastErrorTime"]
    retry = Recorder()
    reconcile_once(kube, mirror.path, mirror.fetch(), mirror, ["dev"], state_namespace=state_ns, sync=retry)
    assert retry.calls == [a]
    assert load_record(kube, "dev", state_ns) == Record(a, True, load_record(kube, "dev", state_ns).time, "nothing",
                                                          policy="automated (prune: on, self-heal: off)")


def test_force_push_converges_to_the_new_head_with_real_sync(remote, kube, state_ns, tmp_path):
    bare, work = remote
    mirror = GitMirror(str(bare), "main", tmp_path / "mirror")
    reconcile_once(kube, mirror.path, mirror.fetch(), mirror, ["dev"], state_namespace=state_ns)
    old = push(work, "scale iris", change=lambda root: (root / "models/iris-classifier/model.yaml").write_text(
        (root / "models/iris-classifier/model.yaml").read_text().replace("memory: 1Gi", "memory: 3Gi")))
    out = reconcile_once(kube, mirror.path, mirror.fetch(), mirror, ["dev"], state_namespace=state_ns)
    assert out[-1].result.ok and out[-1].commit == old
    # rewrite history: drop that commit, and retire digits instead
    work.git.reset("--hard", "HEAD~1")
    new = push(work, "retire digits", change=lambda root: shutil.rmtree(root / "models/digits-classifier"), force=True)
    head = mirror.fetch()
    assert head == new and not mirror.is_ancestor(old, head)
    out = reconcile_once(kube, mirror.path, head, mirror, ["dev"], state_namespace=state_ns)
    assert [o.commit for o in out] == [new] and "force-push" in out[0].reason
    assert out[0].result.ok, out[0].result.as_dict()
    deps = kube.list("apps/v1", "Deployment", work.namespaces["dev"])
    assert {d["metadata"]["labels"][labels.MODEL] for d in deps} == set(TEMPLATE_MODELS) - {"digits-classifier"}
    memory = deps[0]["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"]
    assert memory == "1Gi"  # the rewritten-away change is gone too
    assert load_record(kube, "dev", state_ns).commit == new


# -- the Lease -----------------------------------------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_lease_acquire_renew_expire_takeover(kube, state_ns):
    clock = Clock()
    a = LeaseLock(kube, "lead", state_ns, "replica-a", duration=10, clock=clock)
    b = LeaseLock(kube, "lead", state_ns, "replica-b", duration=10, clock=clock)
    assert a.try_acquire_or_renew() and a.held
    assert not b.try_acquire_or_renew() and not b.held
    lease = kube.get(a.ref)["spec"]
    assert lease["holderIdentity"] == "replica-a" and lease["leaseDurationSeconds"] == 10
    clock.t += 6
    assert a.try_acquire_or_renew()  # renewed
    renewed = kube.get(a.ref)["spec"]
    assert renewed["acquireTime"] == lease["acquireTime"] and renewed["leaseTransitions"] == 0
    clock.t += 6
    assert not b.try_acquire_or_renew()  # b saw a renewal 6 s ago: not expired
    clock.t += 11  # a stopped renewing
    assert not a.held
    assert b.try_acquire_or_renew() and b.held
    taken = kube.get(a.ref)["spec"]
    assert taken["holderIdentity"] == "replica-b" and taken["leaseTransitions"] == 1
    assert not a.try_acquire_or_renew()  # a comes back: it lost
    b.release()
    assert a.try_acquire_or_renew()  # released: taken at once


def test_lease_write_race_is_lost_on_resource_version(kube, state_ns):
    clock = Clock()
    a = LeaseLock(kube, "race", state_ns, "a", duration=5, clock=clock)
    assert a.try_acquire_or_renew()
    stale = kube.get(a.ref)
    clock.t += 1
    assert a.try_acquire_or_renew()  # bumps resourceVersion
    stale["spec"]["holderIdentity"] = "intruder"
    with pytest.raises(KubeError) as err:
        kube.replace(stale)
    assert err.value.status == 409
    assert kube.get(a.ref)["spec"]["holderIdentity"] == "a"


def test_leader_guard_refuses_writes_without_the_lease(kube, state_ns):
    clock = Clock()
    follower = LeaseLock(kube, "g", state_ns, "f", duration=5, clock=clock)
    LeaseLock(kube, "g", state_ns, "leader", duration=5, clock=clock).try_acquire_or_renew()
    follower.try_acquire_or_renew()
    guarded = LeaderGuard(kube, follower)
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": state_ns}}
    assert guarded.apply(cm, dry_run=True)  # dry runs and reads pass
    assert guarded.get(ObjectRef("v1", "Namespace", None, state_ns))
    with pytest.raises(KubeError, match="not the leader"):
        guarded.apply(cm)


def test_two_reconcilers_only_the_lease_holder_writes(remote, envtest, state_ns, tmp_path):
    bare, work = remote
    clients = []
    reconcilers = []
    for name in ("one", "two"):
        client = KubeClient.from_kubeconfig(envtest.kubeconfig, retry=FAST, sleep=lambda s: None)
        config = RunConfig(repo_url=str(bare), branch="main", workdir=tmp_path / name, environments=["dev"],
                           state_namespace=state_ns, identity=name, listen=None, lease_duration=30)
        clients.append(client)
        reconcilers.append(Reconciler(client, config))
    one, two = reconcilers
    assert one.tick() and one.outcomes[0].result.ok
    assert two.tick() == []  # follower: no fetch, no sync
    writes_before = clients[1].stats.by_method.get("PATCH", 0)
    push(work, "bump", change=lambda root: (root / "models/iris-classifier/model.yaml").write_text(
        (root / "models/iris-classifier/model.yaml").read_text().replace("memory: 1Gi", "memory: 2Gi")))
    assert two.tick() == []
    assert clients[1].stats.by_method.get("PATCH", 0) == writes_before
    out = one.tick()
    assert [o.reason for o in out] == [f"newest commit of the branch, 1 after {one.outcomes[0].commit[:12]}"]
    assert out[0].result.ok
    text = one.metrics.exposition()[1].decode()
    assert 'reconciler_reconcile_total{environment="dev",result="success"} 2.0' in text
    assert "reconciler_leader 1.0" in text
    assert "reconciler_leader 0.0" in two.metrics.exposition()[1].decode()


def _metric(text: str, name: str, **want: str) -> float | None:
    """The value of the series `name` whose labels include `want`, from a Prometheus exposition."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in want.items()):
                return sample.value
    return None


def test_broken_overlay_then_fix_the_next_tick_applies_the_fix_and_the_failure_is_recorded(envtest, envtest_repo,
                                                                                         new_namespace, tmp_path):
    """On the real API server: the loop follows the repository's main branch (a path works as a git URL)."""
    root, models_ns, state_ns = envtest_repo.root, envtest_repo.namespaces["dev"], new_namespace("state")
    work = git.Repo(root)
    kube = envtest.client()
    config = RunConfig(repo_url=str(root), branch="main", workdir=tmp_path / "mirror", environments=["dev"],
                       state_namespace=state_ns, identity="one", listen=None, lease_duration=30)
    reconciler = Reconciler(kube, config)
    (first,) = reconciler.tick()
    assert first.result.error is None and not first.result.model_errors, first.result.as_dict()
    patch = "environments/dev/patches/deployment.yaml"
    (root / patch).write_text("{ not: [yaml")
    broken = commit_all(work, "break the dev overlay")
    (failed,) = reconciler.tick()
    assert failed.commit == broken and not failed.result.ok
    record = load_record(kube, "dev", state_ns)
    assert record.commit == first.commit  # what runs is still the last good commit
    assert record.failure.commit == broken and record.failure.time and patch.split("/")[-1] in record.failure.error
    text = reconciler.metrics.exposition()[1].decode()
    assert _metric(text, "reconciler_environment_ready", environment="dev") == 0
    assert _metric(text, "reconciler_environment_failure_info", environment="dev", commit=broken) == 1
    assert _metric(text, "reconciler_last_failure_timestamp_seconds", environment="dev") > 0
    assert _metric(text, "reconciler_applied_commit_info", environment="dev", commit=first.commit) == 1

    shutil.copy(PROJECT_TEMPLATE / patch, root / patch)
    spec = root / "models/iris-classifier/model.yaml"
    spec.write_text(spec.read_text().replace("memory: 1Gi", "memory: 2Gi"))
    fixed = commit_all(work, "fix the overlay, and give iris more memory")
    (applied,) = reconciler.tick()
    assert applied.commit == fixed and applied.result.error is None and not applied.result.model_errors
    assert "supersedes failed " + broken[:12] in applied.reason
    record = load_record(kube, "dev", state_ns)
    assert (record.commit, record.failure) == (fixed, None)
    status, iris = envtest.raw("GET", f"/apis/apps/v1/namespaces/{models_ns}/deployments/iris-classifier-cpu-general")
    assert status == 200
    assert iris["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"] == "2Gi"
    text = reconciler.metrics.exposition()[1].decode()
    assert _metric(text, "reconciler_environment_ready", environment="dev") == 1
    assert _metric(text, "reconciler_environment_failure_info", environment="dev") is None
    assert _metric(text, "reconciler_applied_commit_info", environment="dev", commit=fixed) == 1
    assert _metric(text, "reconciler_applied_commit_info", environment="dev", commit=first.commit) is None


def test_run_refuses_a_state_namespace_that_is_missing_or_terminating(envtest, kube, new_namespace, tmp_path):
    """Without its namespace the Lease can never be created: `reconciler run` says so and exits, instead of
    turning forever as a follower that logs a 404 while /healthz says ok."""
    from typer.testing import CliRunner

    from reconciler.cli.main import app

    def run(namespace: str):
        return CliRunner().invoke(app, ["run", "--repo-url", str(tmp_path / "unused.git"), "--env", "dev",
                                        "--kubeconfig", str(envtest.kubeconfig), "--context", "envtest",
                                        "--namespace", namespace, "--listen", "127.0.0.1:0",
                                        "--workdir", str(tmp_path / "mirror")])

    missing = run("no-such-state-ns")
    assert missing.exit_code == 1, missing.output
    assert "the state namespace no-such-state-ns does not exist" in missing.output
    assert "kubectl create namespace no-such-state-ns" in missing.output
    assert kube.get(ObjectRef("coordination.k8s.io/v1", "Lease", "no-such-state-ns", "model-gitops-reconciler")) \
        is None
    # a namespace being deleted (a finalizer holds it, as a real cluster's controllers may) is refused too
    ns = new_namespace("state")
    held = ObjectRef("v1", "ConfigMap", ns, "held")
    kube.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "held", "namespace": ns,
                                                                      "finalizers": ["example.com/hold"]}})
    kube.delete(ObjectRef("v1", "Namespace", None, ns))
    try:
        terminating = run(ns)
        assert terminating.exit_code == 1 and f"the state namespace {ns} is being deleted" in terminating.output
    finally:
        kube.patch(held, {"metadata": {"finalizers": None}})
