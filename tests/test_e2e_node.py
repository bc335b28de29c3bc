"""End to end on a real node: the example models' Bentos built into real images here (`reconciler build --env dev`
with podman FROM the local base, pushed to a real registry, digests in images.lock.json), `reconciler sync dev`
to a real cluster (tests/node_fixtures.py), Pods that start from those images, pass their real readiness probes
and answer /predict through their Service with the X-Model-Version of the Pod annotations.

Every command is the project's CLI as a subprocess from the repository root, as a user runs it; nothing in the
reconciler knows it is under test. The build environment (tests/node_fixtures.build_env) only says where podman's
base image and registry are.
"""

from __future__ import annotations

import json
import urllib.request

import pytest

from tests.node_fixtures import E2ERepo, NodeCluster

pytestmark = [pytest.mark.node, pytest.mark.xdist_group("node")]

MODELS = ("iris-classifier", "digits-classifier")
# one valid request per example model: iris takes rows of 4 measurements, digits rows of 64 pixels
REQUESTS = {"iris-classifier": {"features": [[5.1, 3.5, 1.4, 0.2]]},
            "digits-classifier": {"images": [[0.0] * 64]}}


@pytest.fixture(scope="module")
def e2e_repo(e2e_repos):
    repo = e2e_repos("dev")
    yield repo
    repo.close()


def ready_pods(cluster: NodeCluster, namespace: str, model: str) -> list[dict]:
    pods = [p for p in cluster.pods(namespace, f"gitops.ml/model={model}")
            if not p["metadata"].get("deletionTimestamp")]
    return [p for p in pods if any(c["type"] == "Ready" and c["status"] == "True"
                                   for c in p.get("status", {}).get("conditions", []))]


def post(url: str, body: dict, timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def service_url(cluster: NodeCluster, namespace: str, model: str) -> str:
    svc = cluster.get("service", "-n", namespace, model)
    return f"http://{svc['spec']['clusterIP']}:{svc['spec']['ports'][0]['port']}"


def version_of(header: str) -> dict[str, str]:
    return dict(part.strip().split("=", 1) for part in header.split(";"))


def test_the_example_models_run_as_real_pods_from_images_built_here(e2e_repo: E2ERepo):
    cluster, ns = e2e_repo.cluster, e2e_repo.namespace
    lock = json.loads((e2e_repo.root / "images.lock.json").read_text())
    report = e2e_repo.sync("--wait", "--timeout", "300")
    assert report["ok"] if "ok" in report else True, report
    for model in MODELS:
        pods = ready_pods(cluster, ns, model)
        assert pods, f"no Ready pod of {model}"
        pod = pods[0]
        image = pod["spec"]["containers"][0]["image"]
        registry_repo, digest = image.split("@")
        assert registry_repo == f"{cluster.registry.host}/models/{model}"
        assert digest in {d for tag, d in lock["images"].items() if tag.startswith(registry_repo + ":")}, \
            "the pod runs the digest images.lock.json pins"
        # the kubelet pulled exactly that image
        assert pod["status"]["containerStatuses"][0]["imageID"].endswith(digest)
        # through the Service (kube-proxy's ClusterIP), a real prediction with the version of the pod annotations
        url = service_url(cluster, ns, model) + "/predict"
        status, headers, body = answer(cluster, url, REQUESTS[model])
        assert status == 200, body
        assert isinstance(json.loads(body), list)
        version = version_of(headers["X-Model-Version"] if "X-Model-Version" in headers
                             else headers["x-model-version"])
        notes = pod["metadata"]["annotations"]
        assert version["hash"] == notes["gitops.ml/model-hash"]
        assert version["commit"] == notes["gitops.ml/git-commit"]
        assert version["weights-md5"] == notes["gitops.ml/weights-md5"]


def answer(cluster: NodeCluster, url: str, body: dict) -> tuple[int, dict[str, str], bytes]:
    """The first answer that is not a connection error or a 5xx (kube-proxy programs a new Service within a
    second or two of its endpoints becoming ready)."""
    return cluster.wait_for(f"an answer from {url}", lambda: _try_post(url, body), 60)


def _try_post(url: str, body: dict):
    try:
        status, headers, data = post(url, body, timeout=5)
    except OSError:
        return None
    return (status, headers, data) if status < 500 else None
