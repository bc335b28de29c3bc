"""Sync at scale against the API stand-in: 1,000 models x 3 environments.

Measures, through the real client and the real executor (reconciler.sync.engine.sync_environment):
  1. the first apply (everything created),
  2. a no-op pass (nothing changed in git): requests, writes (must be 0), time,
  3. a one-model change (one model's Deployment changes in every environment): requests, writes, time.

Desired objects are generated directly (Service + Deployment + HPA per model, labelled and hashed the
way the renderer does), so the figures are the sync's, not kustomize's.

    .venv/bin/python benchmarks/sync_bench.py [--models 1000] [--envs 3] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reconciler import labels  # noqa: E402
from reconciler.cluster.kube import KubeClient  # noqa: E402
from reconciler.render.environment import with_content_hash  # noqa: E402
from reconciler.sync.engine import sync_environment  # noqa: E402
from reconciler.sync.planner import SyncOptions
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


def measure(server: KubeApiServer, kube: KubeClient, envs: list[str], n: int, options: SyncOptions,
            changed: str | None = None) -> dict:
    desired = {env: desired_for(env, n, changed) for env in envs}  # generated outside the timing
    server.stats.reset()
    started = time.perf_counter()
    summaries = {}
    for env in envs:
        result = sync_environment(kube, env, f"models-{env}", desired[env], options=options)
        assert result.error is None and not result.model_errors, result.as_dict()
        summaries[env] = result.summary().as_dict()
    elapsed = time.perf_counter() - started
    stats = server.stats.snapshot()
    return {"seconds": round(elapsed, 2), "requests": stats["total"], "reads": stats["reads"],
            "writes": stats["writes"], "dry_runs": stats["dry_runs"], "results": summaries}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--envs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    envs = ["dev", "staging", "prod", "qa", "perf"][:args.envs]
    options = SyncOptions(concurrency=args.concurrency)
    with KubeApiServer(simulate_rollouts=False, watch_history=1000) as server:
        kube = KubeClient.from_api_client(_client(server))
        report = {"models": args.models, "environments": len(envs), "objects_per_env": 3 * args.models,
                  "concurrency": args.concurrency}
        report["first_apply"] = measure(server, kube, envs, args.models, options)
        report["noop_pass"] = measure(server, kube, envs, args.models, options)
        report["one_model_change"] = measure(server, kube, envs, args.models, options, changed="model-0042")
        report["noop_after_change"] = measure(server, kube, envs, args.models, options, changed="model-0042")
    print(json.dumps(report, indent=2))


def _client(server: KubeApiServer):
    from kubernetes import client

    cfg = client.Configuration(host=server.url)
    cfg.retries = False
    cfg.connection_pool_maxsize = 16
    return client.ApiClient(cfg)


if __name__ == "__main__":
    main()
