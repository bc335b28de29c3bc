"""Sync at scale on the real API server (envtest) and on the stand-in, side by side: 1,000 models x 3 environments.

Measures, through the real client and the real executor (reconciler.sync.engine.sync_environment):
  1. the first apply (everything created),
  2. a no-op pass (nothing changed in git): requests, writes (must be 0), time,
  3. a one-model change (one model's Deployment changes in every environment): requests, writes, time.

Desired objects are generated directly (Service + Deployment + HPA per model, labelled and hashed the
way the renderer does), so the figures are the sync's, not kustomize's.

    .venv/bin/python benchmarks/sync_bench.py [--models 1000] [--envs 3] [--concurrency 8] [--server both]

On the real server (etcd + kube-apiserver v1.36 from $KUBEBUILDER_ASSETS or .cache/envtest, started by
tests/envtest.py, no controller-manager), requests are counted by verb from the API server's audit log.
Peak memory is the reconciler process's own maximum RSS (the control plane runs in other processes).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reconciler import labels  # noqa: E402
from reconciler.cluster.kube import KubeClient  # noqa: E402
from reconciler.render.environment import with_content_hash  # noqa: E402
from reconciler.sync.engine import sync_environment  # noqa: E402
from reconciler.sync.planner import SyncOptions  # noqa: E402
from tests.envtest import ControlPlane  # noqa: E402
from tests.kubeapi.server import KubeApiServer  # noqa: E402


def model_objects(model: str, env: str, ns: str, image: str) -> list[dict]:
    common = {labels.MANAGED_BY: labels.MANAGER, labels.MODEL: model, labels.ENVIRONMENT: env,
              labels.POOL: "cpu-general"}
    sel = {labels.MODEL: model, labels.POOL: "cpu-general"}
    name = f"{model}-cpu-general"
    return [with_content_hash(o) for o in (
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns, "labels": dict(common)},
         "spec": {"selector": sel, "ports": [{"name": "http", "port": 80, "targetPort": 3000}]}},
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": name, "namespace": ns, "labels": dict(common)},
         "spec": {"replicas": 1, "selector": {"matchLabels": sel},
                  "template": {"metadata": {"labels": {**common, **sel}},
                               "spec": {"containers": [{"name": "bento", "image": image,
                                                        "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}}]}}}},
        {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
         "metadata": {"name": name, "namespace": ns, "labels": dict(common)},
         "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                  "minReplicas": 1, "maxReplicas": 4,
                  "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                                                                "target": {"type": "Utilization", "averageUtilization": 70}}}]}},
    )]


def desired_for(env: str, n: int, changed: str | None = None) -> dict[str, list[dict]]:
    ns = f"models-{env}"
    return {f"model-{i:04d}": model_objects(f"model-{i:04d}", env, ns,
                                            "r/m:2" if f"model-{i:04d}" == changed else "r/m:1")
            for i in range(n)}


def peak_rss_mib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def run_passes(kube: KubeClient, envs: list[str], n: int, options: SyncOptions, counter) -> dict:
    """The four passes; ``counter()`` starts counting and returns a function giving the counts since."""
    def one(changed: str | None = None) -> dict:
        desired = {env: desired_for(env, n, changed) for env in envs}  # generated outside the timing
        counts = counter()
        started = time.perf_counter()
        summaries = {}
        for env in envs:
            result = sync_environment(kube, env, f"models-{env}", desired[env], options=options)
            assert result.error is None and not result.model_errors, result.as_dict()
            summaries[env] = result.summary().as_dict()
        elapsed = time.perf_counter() - started
        return {"seconds": round(elapsed, 2), **counts(), "peak_rss_mib": peak_rss_mib(), "results": summaries}

    return {"first_apply": one(), "noop_pass": one(), "one_model_change": one("model-0042"),
            "noop_after_change": one("model-0042")}


def on_standin(envs: list[str], n: int, options: SyncOptions) -> dict:
    with KubeApiServer(simulate_rollouts=False, watch_history=1000) as server:
        kube = KubeClient.from_api_client(_client(server))

        def counter():
            server.stats.reset()

            def counts() -> dict:
                stats = server.stats.snapshot()
                return {"requests": stats["total"], "reads": stats["reads"], "writes": stats["writes"],
                        "dry_runs": stats["dry_runs"]}
            return counts

        return run_passes(kube, envs, n, options, counter)


def on_envtest(envs: list[str], n: int, options: SyncOptions) -> dict:
    with tempfile.TemporaryDirectory(prefix="sync-bench-") as tmp, ControlPlane.start(Path(tmp), crds=[]) as plane:
        kube = KubeClient.from_kubeconfig(plane.kubeconfig)
        kube.api_client.rest_client.pool_manager.connection_pool_kw["maxsize"] = 16

        def counter():
            mark = plane.audit.mark()

            def counts() -> dict:
                events = plane.audit.since(mark, user="admin")
                by_verb = Counter(e.verb + (" (dry run)" if e.dry_run else "") for e in events)
                return {"requests": len(events), "writes": sum(e.write for e in events),
                        "dry_runs": sum(e.dry_run for e in events), "by_verb": dict(sorted(by_verb.items()))}
            return counts

        report = run_passes(kube, envs, n, options, counter)
        report["server"] = kube.request("GET", "/version")[1]["gitVersion"]
        return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--envs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--server", choices=["envtest", "standin", "both"], default="both")
    args = parser.parse_args()
    envs = ["dev", "staging", "prod", "qa", "perf"][:args.envs]
    options = SyncOptions(concurrency=args.concurrency)
    report: dict = {"models": args.models, "environments": len(envs), "objects_per_env": 3 * args.models,
                    "concurrency": args.concurrency}
    if args.server in ("envtest", "both"):
        report["envtest"] = on_envtest(envs, args.models, options)
    if args.server in ("standin", "both"):
        report["standin"] = on_standin(envs, args.models, options)
    print(json.dumps(report, indent=2))


def _client(server: KubeApiServer):
    from kubernetes import client

    cfg = client.Configuration(host=server.url)
    cfg.retries = False
    cfg.connection_pool_maxsize = 16
    return client.ApiClient(cfg)


if __name__ == "__main__":
    main()
