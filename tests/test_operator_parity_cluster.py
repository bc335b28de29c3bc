"""Operator parity (`argocd app get` / `flux get`, `flux suspend|resume|events`) on a real API server (envtest
with its controller-manager), the commands run as a user runs them: the installed `reconciler`, from the
repository root, default flags but the cluster's.

* `status`: the sync policy `reconciler run` recorded, every owned object with its sync state and health
  (an object hand-edited is OutOfSync, the others Synced), and the source revision as the remote has it now
  (a commit pushed to the upstream branch and not yet fetched makes the environment out of sync);
* `suspend` / `resume`: recorded in the state ConfigMap; `run` leaves a suspended environment alone and
  `sync` refuses it with the way out; after `resume` the next pass catches up;
* `events`: what the reconciler did (its own Events) and what the cluster did with its objects (the
  Deployment controller's ScalingReplicaSet), newest first.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import git

from reconciler.run.loop import GitMirror, reconcile_once
from reconciler.run.record import load_record, state_ref, suspended

BIN = Path(sys.executable).parent
ENV = "dev"


def run(root: Path, state_namespace: str, *args: str, ok: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess:
    env = {**os.environ, "RECONCILER_STATE_NAMESPACE": state_namespace}
    done = subprocess.run([str(BIN / "reconciler"), *args], cwd=root, env=env, capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL)
    assert done.returncode in ok, f"reconciler {' '.join(args)}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def test_status_suspend_resume_and_events(envtest_repo, kcm, kube, new_namespace, tmp_path):
    root, namespace = envtest_repo.root, envtest_repo.namespaces[ENV]
    state_ns = new_namespace("state")
    cluster = ["--kubeconfig", str(kcm.kubeconfig), "--context", "envtest"]
    repo = git.Repo(root)
    # the checkout follows an upstream branch, as a clone from GitHub does
    remote = tmp_path / "remote.git"
    git.Repo.clone_from(root, remote, bare=True)
    repo.create_remote("origin", str(remote)).fetch()
    repo.git.branch("--set-upstream-to", "origin/main")
    first = repo.head.commit.hexsha
    mirror = GitMirror(str(root), "main", root)
    [done] = reconcile_once(kube, root, first, mirror, [ENV], state_namespace=state_ns)
    assert done.result.ok, done.result.as_dict()

    # status: the policy `run` recorded, the remote's revision, every owned object with its sync and health
    [status] = json.loads(run(root, state_ns, "status", ENV, "-f", "json", *cluster).stdout)
    assert (status["syncPolicy"], status["suspended"], status["sync"]) == (
        "automated (prune: on, self-heal: off)", None, "synced")
    assert status["head"] == first and "origin/main" in status["source"] and "fetched from the remote" in status["source"]
    resources = {r["object"]: r for m in status["models"] for r in m["resources"]}
    inventory = {f"{o['kind']}/{namespace}/{o['metadata']['name']}" for kind in ("Service", "Deployment")
                 for o in kube.list("apps/v1" if kind == "Deployment" else "v1", kind, namespace)}
    assert inventory <= set(resources), (inventory, resources)
    assert {r["sync"] for r in resources.values()} == {"Synced"}
    assert all(r["health"] == "healthy" for o, r in resources.items() if o.startswith("Service/"))
    assert all(r["health"] in ("healthy", "progressing") for r in resources.values()), resources
    [digits] = [o for o in resources if o.startswith("Deployment/") and "digits" in o]
    text = run(root, state_ns, "status", ENV, *cluster).stdout
    assert "sync policy: automated (prune: on, self-heal: off)" in text and f"{digits}  Synced" in text, text

    # a hand edit makes that object OutOfSync, and only it
    subprocess.run([str(BIN / "kubectl"), "--kubeconfig", str(kcm.kubeconfig), "-n", namespace, "label",
                    digits.replace(f"/{namespace}/", "/").lower(), "hand=edited"], check=True, capture_output=True)
    [status] = json.loads(run(root, state_ns, "status", ENV, "-f", "json", *cluster).stdout)
    out_of_sync = {r["object"] for m in status["models"] for r in m["resources"] if r["sync"] != "Synced"}
    assert out_of_sync == {digits} and status["drifted"]

    # a commit pushed to the upstream branch, not fetched here: the environment is out of sync with the remote
    other = git.Repo.clone_from(remote, tmp_path / "other")
    with other.config_writer() as config:
        config.set_value("user", "name", "Other").set_value("user", "email", "other@example.com")
    spec = Path(other.working_dir) / "models/digits-classifier/model.yaml"
    spec.write_text(spec.read_text().replace("  replicas: 2\n", "  replicas: 3\n"))
    other.git.commit("-am", "digits: 3 replicas")
    other.git.push("origin", "main")
    second = other.head.commit.hexsha
    assert repo.head.commit.hexsha == first
    [status] = json.loads(run(root, state_ns, "status", ENV, "-f", "json", *cluster).stdout)
    assert (status["head"], status["localHead"], status["sync"]) == (second, first, "out of sync")
    text = run(root, state_ns, "status", ENV, *cluster).stdout
    assert f"at {second[:12]}, fetched from the remote now; local checkout at {first[:12]}" in text, text

    # suspend: recorded in the state ConfigMap; `run` leaves the new commit alone, `sync` refuses
    said = run(root, state_ns, "suspend", ENV, "--reason", "incident 42", *cluster).stdout
    assert f"suspended {ENV}" in said and "incident 42" in said
    assert "incident 42" in (suspended(kube.get(state_ref(ENV, state_ns))) or "")
    repo.remotes.origin.pull("main")
    assert repo.head.commit.hexsha == second
    assert reconcile_once(kube, root, second, mirror, [ENV], state_namespace=state_ns) == []
    assert load_record(kube, ENV, state_ns).commit == first
    refused = run(root, state_ns, "sync", ENV, *cluster, ok=(1,))
    assert f"{ENV} is suspended" in refused.stderr and f"reconciler resume {ENV}" in refused.stderr, refused.stderr
    assert "would" in run(root, state_ns, "sync", ENV, "--dry-run", *cluster).stdout  # a dry run is allowed
    [status] = json.loads(run(root, state_ns, "status", ENV, "-f", "json", *cluster).stdout)
    assert "incident 42" in status["suspended"] and status["sync"] == "out of sync"
    assert "SUSPENDED" in run(root, state_ns, "status", ENV, *cluster).stdout

    # resume: the next pass catches up
    run(root, state_ns, "resume", ENV, *cluster)
    assert suspended(kube.get(state_ref(ENV, state_ns))) is None
    [again] = reconcile_once(kube, root, second, mirror, [ENV], state_namespace=state_ns)
    assert again.commit == second and again.result.ok, again.result.as_dict()
    [status] = json.loads(run(root, state_ns, "status", ENV, "-f", "json", *cluster).stdout)
    assert (status["deployed"], status["sync"], status["suspended"]) == (second, "synced", None)

    # events: the reconciler's own, newest first, and the Deployment controller's about its Deployments
    deadline = time.monotonic() + 60
    while True:
        events = json.loads(run(root, state_ns, "events", ENV, "-f", "json", *cluster).stdout)
        if any(e["reason"] == "ScalingReplicaSet" for e in events) or time.monotonic() > deadline:
            break
        time.sleep(2)
    own = [e["reason"] for e in events if e["source"] == "reconciler"]
    assert own[:3] == ["Synced", "Resumed", "Suspended"] and own[-1] == "Synced", own
    assert all(e["time"] >= later["time"] for e, later in zip(events, events[1:], strict=False)), "newest first"
    scaling = [e for e in events if e["reason"] == "ScalingReplicaSet"]
    assert scaling and all(e["object"].startswith("Deployment/") for e in scaling), events
    text = run(root, state_ns, "events", ENV, *cluster).stdout
    assert "Suspended" in text and "incident 42" in text and "ScalingReplicaSet" in text
