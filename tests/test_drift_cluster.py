"""One definition of drift: `status`, `diff` and `sync` agree, on a real API server (envtest).

After a sync, three hand edits an operator makes with the real kubectl: an env var (`kubectl set env`), a
label (`kubectl label`) and a replica count (`kubectl scale`). All three commands, run as a user runs them
(the installed `reconciler`, from the repository root, default flags but the cluster's), name the same
three fields of the same Deployment (reconciler.sync.server_diff.drift_of: the server's dry run plus what
hand edits added). Scaling a Deployment an autoscaler owns is drift for none of them. A self-healing sync
then removes all three edits, and the three commands agree again: no drift.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import git

from reconciler.results import ObjectRef

BIN = Path(sys.executable).parent
ENV = "dev"


def run(root: Path, state_namespace: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "RECONCILER_STATE_NAMESPACE": state_namespace}
    return subprocess.run([str(BIN / "reconciler"), *args], cwd=root, env=env, capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL)


def kubectl(envtest, *args: str) -> str:
    done = subprocess.run([str(BIN / "kubectl"), "--kubeconfig", str(envtest.kubeconfig), *args],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def drift_paths(root: Path, envtest, state_namespace: str, deployment: str) -> dict[str, set[str]]:
    """The drifted fields of one Deployment, as each command reports them."""
    cluster = ["--kubeconfig", str(envtest.kubeconfig), "--context", "envtest"]
    diff = run(root, state_namespace, "diff", ENV, "--rev", "HEAD", "-f", "json", *cluster)
    assert diff.returncode in (0, 1), diff.stdout + diff.stderr
    from_diff = {c["path"] for o in json.loads(diff.stdout)["objects"] if o["object"].endswith(f"/{deployment}")
                 for c in o["changes"]}
    status = run(root, state_namespace, "status", ENV, "-f", "json", *cluster)
    assert status.returncode == 0, status.stdout + status.stderr
    [env_status] = json.loads(status.stdout)
    from_status = {line.split(": ", 2)[1] for m in env_status["models"] for line in m["drift"]
                   if line.startswith(f"Deployment/{deployment}: ")}
    sync = run(root, state_namespace, "sync", ENV, "--dry-run", "-f", "json", *cluster)
    assert sync.returncode == 0, sync.stdout + sync.stderr
    messages = [o.get("message") or "" for o in json.loads(sync.stdout)["objects"]
                if o["kind"] == "Deployment" and o["name"] == deployment]
    from_sync = {part.split(": ", 1)[0] for m in messages if m.startswith("drifted")
                 for part in m.split(": ", 1)[1].split("; ")}
    return {"diff": from_diff, "status": from_status, "sync": from_sync}


def test_status_diff_and_sync_agree_on_hand_edits(envtest_repo, envtest, kube, new_namespace):
    root, namespace = envtest_repo.root, envtest_repo.namespaces[ENV]
    state_namespace = new_namespace("state")  # where sync records what it deployed, for status
    # digits keeps a fixed replica count in dev (scaleToZero: false): no autoscaler owns its replicas
    spec = root / "models/digits-classifier/model.yaml"
    spec.write_text(spec.read_text().replace("  replicas: 2\n", "  replicas: 2\n  scaleToZero: false\n"))
    repo = git.Repo(root)
    repo.git.commit("-am", "digits: no scale to zero in dev")
    cluster = ["--kubeconfig", str(envtest.kubeconfig), "--context", "envtest"]
    first = run(root, state_namespace, "sync", ENV, *cluster)
    assert first.returncode == 0, first.stdout + first.stderr
    names = [o["metadata"]["name"] for o in kube.list("apps/v1", "Deployment", namespace)]
    [digits] = [n for n in names if n.startswith("digits")]
    [iris] = [n for n in names if n.startswith("iris")]
    none = {"diff": set(), "status": set(), "sync": set()}
    replicas = kube.get(ObjectRef("apps/v1", "Deployment", namespace, digits))["spec"]["replicas"]
    assert drift_paths(root, envtest, state_namespace, digits) == none

    kubectl(envtest, "-n", namespace, "set", "env", f"deployment/{digits}", "DEBUG=1")
    kubectl(envtest, "-n", namespace, "label", f"deployment/{digits}", "hand=edited")
    kubectl(envtest, "-n", namespace, "scale", f"deployment/{digits}", f"--replicas={replicas + 3}")
    kubectl(envtest, "-n", namespace, "scale", f"deployment/{iris}", "--replicas=3")  # KEDA's to set: not drift
    expected = {"spec.template.spec.containers[bento].env[DEBUG]", "metadata.labels.hand", "spec.replicas"}
    assert drift_paths(root, envtest, state_namespace, digits) == {"diff": expected, "status": expected,
                                                                   "sync": expected}
    assert drift_paths(root, envtest, state_namespace, iris) == none

    healed = run(root, state_namespace, "sync", ENV, "--self-heal", *cluster)
    assert healed.returncode == 0, healed.stdout + healed.stderr
    live = json.loads(kubectl(envtest, "-n", namespace, "get", f"deployment/{digits}", "-o", "json"))
    assert "hand" not in live["metadata"]["labels"]
    assert "DEBUG" not in {e["name"] for c in live["spec"]["template"]["spec"]["containers"] for e in c.get("env", [])}
    assert live["spec"]["replicas"] == replicas
    assert drift_paths(root, envtest, state_namespace, digits) == none
    again = run(root, state_namespace, "sync", ENV, "-f", "json", *cluster)
    assert again.returncode == 0, again.stdout + again.stderr
    assert set(json.loads(again.stdout)["summary"]) == {"unchanged"}  # healed: the next pass writes nothing
