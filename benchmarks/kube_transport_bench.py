"""Client CPU per request of the reconciler's Kubernetes adapter, against the kubernetes client's own path,
in one run on the real API server (envtest), alternating so machine load hits both alike.

``KubeClient`` sends requests on the kubernetes client's urllib3 pool with its own JSON encoding and an
Authorization header re-read at most once a second (reconciler/cluster/kube.py ``_send``). The client's
own path (``ApiClient.param_serialize`` + ``call_api``) runs the kubeconfig's refresh hook on every
request, which re-assigns the host and so re-reads every proxy variable of the environment, and walks the
body through its serialiser. Both send the same server-side dry-run applies of the same objects.

    .venv/bin/python benchmarks/kube_transport_bench.py [--objects 600] [--rounds 3]

Prints client CPU (process time) per request for both paths and their ratio.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from reconciler.cluster.kube import KubeClient
from sync_bench import desired_for
from tests.envtest import ControlPlane


class ClientPath(KubeClient):
    """The same adapter, sending through the kubernetes client's param_serialize + call_api (the path before)."""

    def _send(self, method: str, path: str, query: Any, body: Any, content_type: str | None) -> Any:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type or "application/json"
        api = self.api_client
        serialized = api.param_serialize(method, path, query_params=list(query or []), header_params=headers,
                                         body=body, auth_settings=["BearerToken"])
        response = api.call_api(*serialized, _request_timeout=self.request_timeout)
        response.read()
        return response.response


def cpu_per_request(kube: KubeClient, objects: list[dict]) -> float:
    started = time.process_time()
    for obj in objects:
        kube.apply(obj, dry_run=True)
    return (time.process_time() - started) / len(objects)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="transport-bench-") as tmp, \
            ControlPlane.start(Path(tmp), crds=[]) as plane:
        ours, theirs = KubeClient.from_kubeconfig(plane.kubeconfig), ClientPath.from_kubeconfig(plane.kubeconfig)
        ours.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "models-dev"}})
        objects = [o for objs in desired_for("dev", max(1, args.objects // 3)).values() for o in objs]
        figures: dict[str, list[float]] = {"reconciler": [], "kubernetes-client": []}
        for _ in range(args.rounds):
            figures["reconciler"].append(cpu_per_request(ours, objects))
            figures["kubernetes-client"].append(cpu_per_request(theirs, objects))
    best = {k: min(v) * 1000 for k, v in figures.items()}
    print(json.dumps({"requests_per_round": len(objects), "rounds": args.rounds,
                      "client_cpu_ms_per_request_best": {k: round(v, 3) for k, v in best.items()},
                      "ratio": round(best["kubernetes-client"] / best["reconciler"], 2)}, indent=2))


if __name__ == "__main__":
    main()
