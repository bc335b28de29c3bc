"""What one Service creation costs the real API server as the cluster's Services grow (issue 25's superlinear cold sync).

A cold sync creates one or two Services per model per environment. Since Kubernetes 1.33 (MultiCIDRServiceAllocator
GA, locked on) the kube-apiserver records each ClusterIP as an IPAddress object, and after creating it computes
its allocation metrics: ``Allocator.createIPAddress`` calls ``a.Used()`` and ``a.Free()`` (which calls ``Used()``
again), and ``Used()`` lists every IPAddress of the cluster from the informer cache with a label selector
(kubernetes/kubernetes pkg/registry/core/service/ipallocator/ipallocator.go). So the n-th ClusterIP Service costs
the server O(n), and creating n Services O(n^2), whoever sends them. A headless Service (``clusterIP: None``)
allocates nothing: the same requests, flat.

This script creates Services in batches on a fresh envtest control plane (etcd + kube-apiserver v1.36 from
$KUBEBUILDER_ASSETS or .cache/envtest), through the project's client, 8 in flight, and prints the server CPU
(kube-apiserver and etcd, from /proc) per batch, for ClusterIP Services and then for headless ones:

    .venv/bin/python benchmarks/service_alloc.py [--batches 5] [--size 1000] [--only clusterip|headless]

CPU per batch is the figure to read (wall depends on the machine's load, printed beside it).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reconciler.cluster.kube import KubeClient
from tests.envtest import ControlPlane

KINDS = ("clusterip", "headless")


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a running process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def service(i: int, headless: bool) -> dict:
    spec: dict = {"selector": {"app": f"m{i}"}, "ports": [{"name": "http", "port": 80, "targetPort": 3000}]}
    if headless:
        spec["clusterIP"] = "None"
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"m{i}", "namespace": "bench"}, "spec": spec}


def run(kind: str, batches: int, size: int) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="service-alloc-") as tmp, ControlPlane.start(Path(tmp), crds=[]) as plane:
        kube = KubeClient.from_kubeconfig(plane.kubeconfig)
        pids = {name: p.pid for name, p in plane.procs.items() if name in ("kube-apiserver", "etcd")}
        kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}}, field_manager="bench")
        with ThreadPoolExecutor(8) as pool:
            for b in range(batches):
                before = {n: process_cpu(p) for n, p in pids.items()}
                started = time.perf_counter()
                list(pool.map(lambda i: kube.apply(service(i, kind == "headless"), field_manager="bench"),
                              range(b * size, (b + 1) * size)))
                cpu = {n: round(process_cpu(p) - before[n], 2) for n, p in pids.items()}
                row = {"kind": kind, "existing": b * size, "created": size,
                       "wall_seconds": round(time.perf_counter() - started, 2), "server_cpu_seconds": cpu,
                       "load": round(os.getloadavg()[0], 1)}
                rows.append(row)
                print(f"{kind:>9} Services {b * size:>6,} -> {(b + 1) * size:>6,}: kube-apiserver "
                      f"{cpu['kube-apiserver']:6.2f} s CPU, etcd {cpu['etcd']:5.2f} s CPU, "
                      f"{row['wall_seconds']:5.1f} s wall at load {row['load']}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=5)
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument("--only", choices=KINDS)
    args = parser.parse_args()
    for kind in [args.only] if args.only else KINDS:
        run(kind, args.batches, args.size)


if __name__ == "__main__":
    main()
