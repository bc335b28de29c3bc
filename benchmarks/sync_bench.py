"""Sync at scale on the real API server (envtest): N models (default 1,000; `--models 10000`) x 3 environments.

Measures, through the real client and the real executor (reconciler.sync.engine.sync_environment), on a
real control plane (etcd + kube-apiserver v1.36 from $KUBEBUILDER_ASSETS or .cache/envtest, started by
tests/envtest.py, no controller-manager):
  1. a cold sync (everything created),
  2. a no-op pass (nothing changed in git): requests, writes (must be 0), time,
  3. a one-model change (one model's Deployment changes in every environment),
  4. a no-op pass after that change.

Desired objects are generated directly (Service + Deployment + HPA per model, labelled and hashed the
way the renderer does), so the figures are the sync's, not kustomize's.

    .venv/bin/python benchmarks/sync_bench.py [--models 1000] [--envs 3] [--concurrency 8] [--out FILE.json]

Requests are counted by verb from the API server's audit log (user ``admin``: the reconciler, not the
benchmark's own audit markers). Peak memory is the reconciler process's own maximum RSS (the control
plane runs in other processes); CPU is given for both sides: the reconciler process and the control plane
(kube-apiserver + etcd, from /proc). Wall times depend on what else runs on the machine: the load
average at the start is recorded with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reconciler import labels
from reconciler.cluster.kube import KubeClient
from reconciler.render.environment import with_content_hash
from reconciler.sync.engine import sync_environment
from reconciler.sync.planner import SyncOptions
from tests.envtest import ControlPlane

PASSES = ("cold", "noop", "one_model_change", "noop_after_change")


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


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a running process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_passes(kube: KubeClient, plane: ControlPlane, envs: list[str], n: int, options: SyncOptions) -> dict:
    server_pids = [p.pid for name, p in plane.procs.items() if name in ("kube-apiserver", "etcd")]

    def one(changed: str | None = None) -> dict:
        mark = plane.audit.mark()
        elapsed = cpu = server_cpu = 0.0
        summaries = {}
        for env in envs:  # one environment's objects at a time, as a sync holds them (generated outside the timing)
            desired = desired_for(env, n, changed)
            server_before = sum(process_cpu(p) for p in server_pids)
            cpu_before, started = time.process_time(), time.perf_counter()
            result = sync_environment(kube, env, f"models-{env}", desired, options=options)
            elapsed += time.perf_counter() - started
            cpu += time.process_time() - cpu_before
            server_cpu += sum(process_cpu(p) for p in server_pids) - server_before
            del desired
            assert result.error is None and not result.model_errors, result.as_dict()
            summaries[env] = result.summary().as_dict()
        events = plane.audit.since(mark, user="admin")
        by_verb = Counter(e.verb + (" (dry run)" if e.dry_run else "") for e in events)
        return {"seconds": round(elapsed, 2), "reconciler_cpu_seconds": round(cpu, 2),
                "server_cpu_seconds": round(server_cpu, 2), "requests": len(events),
                "writes": sum(e.write for e in events), "dry_runs": sum(e.dry_run for e in events),
                "by_verb": dict(sorted(by_verb.items())), "peak_rss_mib": peak_rss_mib(), "results": summaries}

    return {"cold": one(), "noop": one(), "one_model_change": one("model-0042"),
            "noop_after_change": one("model-0042")}


def on_envtest(envs: list[str], n: int, options: SyncOptions) -> dict:
    with tempfile.TemporaryDirectory(prefix="sync-bench-") as tmp, ControlPlane.start(Path(tmp), crds=[]) as plane:
        kube = KubeClient.from_kubeconfig(plane.kubeconfig)
        report = run_passes(kube, plane, envs, n, options)
        report["server"] = kube.request("GET", "/version")[1]["gitVersion"]
        return report


def table(report: dict) -> str:
    rows = ["| pass | time | requests by verb | writes | reconciler CPU | server CPU | peak RSS |",
            "|---|--:|---|--:|--:|--:|--:|"]
    for name in PASSES:
        p = report["envtest"][name]
        verbs = " + ".join(f"{n:,} {v}" for v, n in p["by_verb"].items())
        rows.append(f"| {name} | {p['seconds']} s | {verbs} = {p['requests']:,} | {p['writes']:,} | "
                    f"{p['reconciler_cpu_seconds']} s | {p['server_cpu_seconds']} s | {p['peak_rss_mib']} MiB |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--envs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=SyncOptions().concurrency)
    parser.add_argument("--out", type=Path, help="write the results JSON there too")
    args = parser.parse_args()
    envs = ["dev", "staging", "prod", "qa", "perf"][:args.envs]
    options = SyncOptions(concurrency=args.concurrency)
    report: dict = {"models": args.models, "environments": len(envs), "objects_per_env": 3 * args.models,
                    "concurrency": args.concurrency, "cpus": os.cpu_count(),
                    "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
                    "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    report["envtest"] = on_envtest(envs, args.models, options)
    report["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(table(report), file=sys.stderr)
    print(text)


if __name__ == "__main__":
    main()
