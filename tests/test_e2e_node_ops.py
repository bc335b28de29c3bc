"""Sync and drift on running workloads, on the real node (tests/node_fixtures.py): a hand edit of a running
Deployment is drift and `sync --self-heal` puts it back; `rollback` restores the previous Pods; an image that
cannot start (a crash at start-up) or cannot be pulled is Degraded in `status` with the container's reason; the
prune of a removed model terminates its Pods. The tests run in this order on one repository, as an operator's
day would go; each leaves the cluster as the next one expects it.

The broken releases are real model changes built into real images (or, for the unpullable one, a lock entry
naming a digest the registry does not hold): nothing in the reconciler knows about them.
"""

from __future__ import annotations

import json

import pytest

from tests.node_fixtures import E2ERepo, NodeCluster
from tests.test_e2e_node import REQUESTS, answer, ready_pods, service_url, version_of

pytestmark = [pytest.mark.node, pytest.mark.xdist_group("node")]

IRIS, DIGITS = "iris-classifier", "digits-classifier"
CRASH = '''
import os as _os  # e2e: a release that cannot start in its container (the build imports it outside one)

if _os.environ.get("BENTOML_CONTAINERIZED") == "true":
    raise SystemExit("e2e: this release cannot start")
'''


@pytest.fixture(scope="module")
def ops(e2e_repos):
    repo = e2e_repos("ops")
    repo.sync("--wait", "--timeout", "300")
    yield repo
    repo.close()


def deployment(repo: E2ERepo, model: str) -> dict:
    return repo.cluster.get("deployment", "-n", repo.namespace, f"{model}-cpu-general")


def image_of(obj: dict) -> str:
    return obj["spec"]["template"]["spec"]["containers"][0]["image"]


def serving_hash(repo: E2ERepo, model: str) -> str:
    """The model hash the model's Service answers with (X-Model-Version)."""
    _, headers, _ = answer(repo.cluster, service_url(repo.cluster, repo.namespace, model) + "/predict",
                           REQUESTS[model])
    return version_of(headers.get("X-Model-Version") or headers["x-model-version"])["hash"]


def settled_on(repo: E2ERepo, model: str, image: str, timeout: float = 240) -> list[dict]:
    """Wait until every pod of the model runs `image` and one is Ready (the rollout finished)."""
    def done():
        pods = [p for p in repo.cluster.pods(repo.namespace, f"gitops.ml/model={model}")
                if not p["metadata"].get("deletionTimestamp")]
        ready = ready_pods(repo.cluster, repo.namespace, model)
        return pods and ready and all(image_of({"spec": {"template": p}}) == image for p in pods) and ready
    return repo.cluster.wait_for(f"{model} running only {image}", done, timeout)


def status(repo: E2ERepo) -> dict:
    proc = repo.cli("status", "dev", "--kubeconfig", str(repo.cluster.kubeconfig), "--context", "envtest",
                    "-f", "json", check=False)
    data = json.loads(proc.stdout)
    return data[0] if isinstance(data, list) else data


def model_status(repo: E2ERepo, model: str) -> dict:
    return next(m for m in status(repo)["models"] if m["model"] == model)


def test_a_hand_edit_is_drift_and_self_heal_puts_it_back(ops: E2ERepo):
    cluster: NodeCluster = ops.cluster
    locked = image_of(deployment(ops, IRIS))
    other = image_of(deployment(ops, DIGITS))  # a real image that runs: the edit itself rolls out
    cluster.kubectl("-n", ops.namespace, "set", "image", f"deployment/{IRIS}-cpu-general", f"bento={other}")
    settled_on(ops, IRIS, other)

    diff = ops.cli("diff", "dev", "--kubeconfig", str(cluster.kubeconfig), "--context", "envtest", check=False)
    assert diff.returncode == 1 and "image" in diff.stdout, diff.stdout
    assert model_status(ops, IRIS)["drifted"], "status shows the hand edit as drift"

    ops.sync("--self-heal")
    assert image_of(deployment(ops, IRIS)) == locked
    settled_on(ops, IRIS, locked)
    assert serving_hash(ops, IRIS) == deployment(ops, IRIS)["spec"]["template"]["metadata"]["annotations"][
        "gitops.ml/model-hash"]


def test_a_rollback_restores_the_previous_pods(ops: E2ERepo):
    before = image_of(deployment(ops, IRIS))
    before_hash = serving_hash(ops, IRIS)
    first = ops.head()
    service = ops.root / "models" / IRIS / "service.py"
    service.write_text(service.read_text() + f"\n# e2e: a new version ({ops.namespace})\n")
    ops.commit("iris: a new version")
    assert ops.build(IRIS)["ok"]
    ops.commit("images: lock the new iris")
    ops.sync()
    after = image_of(deployment(ops, IRIS))
    assert after != before
    settled_on(ops, IRIS, after)
    assert serving_hash(ops, IRIS) != before_hash

    ops.cli("rollback", "dev", "--to", first, "--kubeconfig", str(ops.cluster.kubeconfig), "--context", "envtest")
    assert image_of(deployment(ops, IRIS)) == before
    settled_on(ops, IRIS, before)
    assert serving_hash(ops, IRIS) == before_hash


def test_images_that_cannot_start_are_degraded_with_the_containers_reason(ops: E2ERepo):
    # iris: a release that exits at start-up in its container (built, pushed, locked like any other)
    service = ops.root / "models" / IRIS / "service.py"
    service.write_text(service.read_text() + CRASH)
    ops.commit("iris: a release that cannot start")
    assert ops.build(IRIS)["ok"]
    # digits: the lock names a digest the registry does not hold (an image deleted from the registry)
    lock_file = ops.root / "images.lock.json"
    lock = json.loads(lock_file.read_text())
    tagged = next(t for t in lock["images"] if f"/{DIGITS}:" in t)
    lock["images"][tagged] = "sha256:" + "0" * 64
    lock.get("commits", {}).pop(tagged, None)
    lock_file.write_text(json.dumps(lock, indent=2) + "\n")
    ops.commit("images: a crashing iris, an unpullable digits")
    ops.sync()

    def degraded():
        iris, digits = model_status(ops, IRIS), model_status(ops, DIGITS)
        return (iris["health"] == "degraded" and digits["health"] == "degraded") and (iris, digits)
    iris, digits = ops.cluster.wait_for("both models degraded in `status`", degraded, timeout=180, every=3)
    assert "CrashLoopBackOff" in iris["healthMessage"] and "last exit" in iris["healthMessage"], iris
    assert any(r in digits["healthMessage"] for r in ("ImagePullBackOff", "ErrImagePull")), digits
    # the old pods still serve: a rolling update with maxUnavailable 0 never took them down
    assert ready_pods(ops.cluster, ops.namespace, IRIS) and ready_pods(ops.cluster, ops.namespace, DIGITS)


def test_prune_of_a_removed_model_terminates_its_pods(ops: E2ERepo):
    serving = {p["metadata"]["name"] for p in ready_pods(ops.cluster, ops.namespace, DIGITS)}
    assert serving
    ops.git("rm", "-r", "-q", f"models/{DIGITS}")
    ops.commit("retire digits")
    report = ops.sync()
    assert report["summary"].get("pruned", 0) >= 1, report

    def terminated():
        pods = ops.cluster.pods(ops.namespace, f"gitops.ml/model={DIGITS}")
        # the serving pods are gone; a pod the kubelet is still pulling a missing image for (the previous test's
        # unpullable release) stays Terminating until that pull gives up, but it is being deleted
        return not serving & {p["metadata"]["name"] for p in pods} \
            and all(p["metadata"].get("deletionTimestamp") for p in pods)
    ops.cluster.wait_for(f"the pods of {DIGITS} to terminate", terminated, timeout=180)
    assert ops.cluster.kubectl("-n", ops.namespace, "get", "deployment", f"{DIGITS}-cpu-general",
                               check=False).returncode != 0
    assert ops.cluster.pods(ops.namespace, f"gitops.ml/model={IRIS}"), "the other model is untouched"
