"""The long-running reconciler: catch-up decisions, resume after a crash, force-push, the Lease.

Git is real (a bare "remote" and a clone that pushes to it, made with GitPython); the cluster is the
API stand-in through the real client.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import git
import pytest

from reconciler import labels
from reconciler.cluster.kube import KubeClient, RetryPolicy
from reconciler.run.lease import LeaderGuard, LeaseLock
from reconciler.run.loop import GitMirror, Reconciler, Record, RunConfig, load_record, plan_catchup, reconcile_once
from reconciler.errors import KubeError
from reconciler.results import ObjectRef
from reconciler.sync.engine import SyncResult
from tests.conftest import commit_all, copy_template

STATE_NS = "model-gitops"
FAST = RetryPolicy(attempts=3, initial=0.01, cap=0.02)


@pytest.fixture(autouse=True)
def _images_file(tmp_path, monkeypatch):
    monkeypatch.setenv("RECONCILER_IMAGES_FILE", str(tmp_path / "images.json"))


@pytest.fixture
def kube(kube_api):
    client = KubeClient.from_kubeconfig(kube_api.kubeconfig_path, retry=FAST, sleep=lambda s: None)
    client.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": STATE_NS}})
    return client


@pytest.fixture
def remote(tmp_path):
    """(bare remote path, a working clone that pushes to it) holding the template, one commit on main."""
    work = copy_template(tmp_path / "work")
    repo = git.Repo.init(work, initial_branch="main")
    commit_all(repo, "template")
    bare = tmp_path / "remote.git"
    git.Repo.init(bare, bare=True, initial_branch="main")
    repo.create_remote("origin", str(bare))
    repo.git.push("origin", "main")
    return bare, repo


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

def test_plan_catchup_decisions():
    h = FakeHistory(["a", "b", "c", "d"])
    assert [s.commit for s in plan_catchup(None, "d", h)] == ["d"]
    assert plan_catchup(Record("d", True), "d", h) == []
    assert [s.reason for s in plan_catchup(Record("d", True), "d", h, resync=True)] == ["periodic resync"]
    assert plan_catchup(Record("d", False), "d", h)[0].reason.startswith("retrying")
    assert [s.commit for s in plan_catchup(Record("a", True), "d", h)] == ["b", "c", "d"]
    assert [s.commit for s in plan_catchup(Record("a", True), "d", h, max_catchup=2)] == ["d"]
    rewritten = plan_catchup(Record("x", True), "d", h)
    assert [s.commit for s in rewritten] == ["d"] and "force-push" in rewritten[0].reason


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
            result.error = "API unavailable"
        return result


def test_each_new_merge_is_reconciled_in_order_and_recorded(remote, kube, tmp_path):
    bare, work = remote
    mirror = GitMirror(str(bare), "main", tmp_path / "mirror")
    first = mirror.fetch()
    sync = Recorder()
    reconcile_once(kube, mirror.path, first, mirror, ["dev"], state_namespace=STATE_NS, sync=sync)
    assert sync.calls == [first]
    shas = [push(work, f"merge {i}") for i in range(3)]
    head = mirror.fetch()
    assert head == shas[-1]
    reconcile_once(kube, mirror.path, head, mirror, ["dev"], state_namespace=STATE_NS, sync=sync)
    assert sync.calls == [first, *shas]
    assert load_record(kube, "dev", STATE_NS) == Record(head, True, load_record(kube, "dev", STATE_NS).time, "nothing")
    # up to date: nothing more
    reconcile_once(kube, mirror.path, head, mirror, ["dev"], state_namespace=STATE_NS, sync=sync)
    assert len(sync.calls) == 4


def test_crash_mid_catchup_resumes_from_the_last_recorded_commit(remote, kube, tmp_path):
    bare, work = remote
    mirror = GitMirror(str(bare), "main", tmp_path / "mirror")
    base = mirror.fetch()
    reconcile_once(kube, mirror.path, base, mirror, ["dev"], state_namespace=STATE_NS, sync=Recorder())
    shas = [push(work, f"merge {i}") for i in range(3)]
    head = mirror.fetch()
    with pytest.raises(KeyboardInterrupt):
        reconcile_once(kube, mirror.path, head, mirror, ["dev"], state_namespace=STATE_NS,
                       sync=Recorder(crash_on=shas[1]))
    assert load_record(kube, "dev", STATE_NS).commit == shas[0]
    # a new process (fresh mirror clone, fresh client) resumes
    mirror2 = GitMirror(str(bare), "main", tmp_path / "mirror2")
    again = Recorder()
    reconcile_once(kube, mirror2.path, mirror2.fetch(), mirror2, ["dev"], state_namespace=STATE_NS, sync=again)
    assert again.calls == shas[1:]


def test_environment_wide_failure_is_not_recorded_and_retried(remote, kube, tmp_path):
    bare, work = remote
    mirror = GitMirror(str(bare), "main", tmp_path / "mirror")
    base = mirror.fetch()
    reconcile_once(kube, mirror.path, base, mirror, ["dev"], state_namespace=STATE_NS, sync=Recorder())
    a, b = push(work, "a"), push(work, "b")
    out = reconcile_once(kube, mirror.path, mirror.fetch(), mirror, ["dev"], state_namespace=STATE_NS,
                         sync=Recorder(fail_on=a))
    assert [o.commit for o in out] == [a]  # stopped at the failure
    cm = kube.get(ObjectRef("v1", "ConfigMap", STATE_NS, "reconciler-state-dev"))
    assert cm["data"]["commit"] == base and "API unavailable" in cm["data"]["lastError"]
    retry = Recorder()
    reconcile_once(kube, mirror.path, mirror.fetch(), mirror, ["dev"], state_namespace=STATE_NS, sync=retry)
    assert retry.calls == [a, b]


def test_force_push_converges_to_the_new_head_with_real_sync(remote, kube, kube_api, tmp_path):
    bare, work = remote
    mirror = GitMirror(str(bare), "main", tmp_path / "mirror")
    reconcile_once(kube, mirror.path, mirror.fetch(), mirror, ["dev"], state_namespace=STATE_NS)
    old = push(work, "scale iris", change=lambda root: (root / "models/iris-classifier/model.yaml").write_text(
        (root / "models/iris-classifier/model.yaml").read_text().replace("memory: 1Gi", "memory: 3Gi")))
    out = reconcile_once(kube, mirror.path, mirror.fetch(), mirror, ["dev"], state_namespace=STATE_NS)
    assert out[-1].result.ok and out[-1].commit == old
    # rewrite history: drop that commit, and retire digits instead
    work.git.reset("--hard", "HEAD~1")
    new = push(work, "retire digits", change=lambda root: shutil.rmtree(root / "models/digits-classifier"), force=True)
    head = mirror.fetch()
    assert head == new and not mirror.is_ancestor(old, head)
    out = reconcile_once(kube, mirror.path, head, mirror, ["dev"], state_namespace=STATE_NS)
    assert [o.commit for o in out] == [new] and "force-push" in out[0].reason
    assert out[0].result.ok, out[0].result.as_dict()
    deps = kube_api.server.objects("Deployment", "models-dev")
    assert {d["metadata"]["labels"][labels.MODEL] for d in deps} == {"iris-classifier"}
    memory = deps[0]["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"]
    assert memory == "1Gi"  # the rewritten-away change is gone too
    assert load_record(kube, "dev", STATE_NS).commit == new


# -- the Lease -----------------------------------------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_lease_acquire_renew_expire_takeover(kube):
    clock = Clock()
    a = LeaseLock(kube, "lead", STATE_NS, "replica-a", duration=10, clock=clock)
    b = LeaseLock(kube, "lead", STATE_NS, "replica-b", duration=10, clock=clock)
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


def test_lease_write_race_is_lost_on_resource_version(kube):
    clock = Clock()
    a = LeaseLock(kube, "race", STATE_NS, "a", duration=5, clock=clock)
    assert a.try_acquire_or_renew()
    stale = kube.get(a.ref)
    clock.t += 1
    assert a.try_acquire_or_renew()  # bumps resourceVersion
    stale["spec"]["holderIdentity"] = "intruder"
    with pytest.raises(KubeError) as err:
        kube.replace(stale)
    assert err.value.status == 409
    assert kube.get(a.ref)["spec"]["holderIdentity"] == "a"


def test_leader_guard_refuses_writes_without_the_lease(kube):
    clock = Clock()
    follower = LeaseLock(kube, "g", STATE_NS, "f", duration=5, clock=clock)
    LeaseLock(kube, "g", STATE_NS, "leader", duration=5, clock=clock).try_acquire_or_renew()
    follower.try_acquire_or_renew()
    guarded = LeaderGuard(kube, follower)
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": STATE_NS}}
    assert guarded.apply(cm, dry_run=True)  # dry runs and reads pass
    assert guarded.get(ObjectRef("v1", "Namespace", None, STATE_NS))
    with pytest.raises(KubeError, match="not the leader"):
        guarded.apply(cm)


def test_two_reconcilers_only_the_lease_holder_writes(remote, kube_api, tmp_path):
    bare, work = remote
    clients = []
    reconcilers = []
    for name in ("one", "two"):
        client = KubeClient.from_kubeconfig(kube_api.kubeconfig_path, retry=FAST, sleep=lambda s: None)
        client.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": STATE_NS}})
        config = RunConfig(repo_url=str(bare), branch="main", workdir=tmp_path / name, environments=["dev"],
                           state_namespace=STATE_NS, identity=name, listen=None, lease_duration=30)
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
    assert [o.reason for o in out] == ["new merge 1/1"] and out[0].result.ok
    text = one.metrics.exposition()[1].decode()
    assert 'reconciler_reconcile_total{environment="dev",result="success"} 2.0' in text
    assert "reconciler_leader 1.0" in text
    assert "reconciler_leader 0.0" in two.metrics.exposition()[1].decode()
