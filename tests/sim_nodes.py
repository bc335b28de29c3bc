"""Simulated nodes on the real API server, as kwok does: Node objects with the labels, taints and
extended resources of ``environments/pools.yaml``, and a "kubelet" that binds fitting Pending Pods to them
(the ``pods/binding`` subresource, as the scheduler does) and sets their status Ready.

envtest has no scheduler and no kubelet, so without this Pods stay Pending forever. With it, Deployment
availability, canary readiness, the progress deadline and health come from the real controller-manager
(request the ``kcm`` fixture). A Pod whose nodeSelector, tolerations or resource requests fit no node stays
Pending, as it would on a cluster. ``stuck(name_prefix, mode)`` keeps chosen Pods "pending" (never bound)
or "unready" (bound and Running, but never Ready), for failing rollouts on purpose.

    nodes = SimulatedNodes(kube)           # one Node per pool of pools.yaml, unique names
    with nodes.running(namespace):         # a background thread settles Pods until the block ends
        sync(..., wait=True)
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml
from kubernetes.utils import parse_quantity

from reconciler.errors import KubeError
from reconciler.results import ObjectRef
from tests.envtest import PROJECT

POOLS_FILE = PROJECT / "environments" / "pools.yaml"
NODE_CAPACITY = {"cpu": "16", "memory": "64Gi", "pods": "110", "ephemeral-storage": "100Gi"}
DEVICE_COUNT = "4"  # per node, for pools with a device (nvidia.com/gpu, aws.amazon.com/neuron)
HUGEPAGES = "2Gi"   # hugepages-2Mi per node for pools that ask for hugepages


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def node_for_pool(name: str, pool_name: str, pool: dict) -> tuple[dict, dict]:
    """(Node object, its status) for one pool of pools.yaml."""
    labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "type": "simulated",
              **(pool.get("nodeSelector") or {})}
    capacity = dict(NODE_CAPACITY)
    device = pool.get("device") or {}
    if device.get("resource"):
        capacity[device["resource"]] = DEVICE_COUNT
    if pool.get("hugepages2Mi"):
        capacity["hugepages-2Mi"] = HUGEPAGES
    taints = [{k: v for k, v in t.items() if k in ("key", "value", "effect")} for t in pool.get("taints") or []]
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels,
                                                              "annotations": {"simulated/pool": pool_name}},
            "spec": {"taints": taints} if taints else {}}
    status = {"capacity": capacity, "allocatable": capacity, "phase": "Running",
              "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                              "message": "simulated", "lastHeartbeatTime": _now(), "lastTransitionTime": _now()}],
              "nodeInfo": {"kubeletVersion": "v1.36.2-sim", "architecture": "amd64", "operatingSystem": "linux",
                           "containerRuntimeVersion": "sim://1", "kernelVersion": "", "osImage": "simulated",
                           "kubeProxyVersion": "", "machineID": "", "systemUUID": "", "bootID": ""}}
    return node, status


def tolerates(pod_spec: dict, taints: list[dict]) -> bool:
    """Every NoSchedule/NoExecute taint of the node is tolerated by the pod (the scheduler's TaintToleration)."""
    tolerations = pod_spec.get("tolerations") or []
    for taint in taints:
        if taint.get("effect") not in ("NoSchedule", "NoExecute"):
            continue
        ok = False
        for t in tolerations:
            if t.get("effect") and t["effect"] != taint.get("effect"):
                continue
            if t.get("operator") == "Exists":
                ok = not t.get("key") or t["key"] == taint.get("key")
            else:
                ok = t.get("key") == taint.get("key") and (t.get("value") or "") == (taint.get("value") or "")
            if ok:
                break
        if not ok:
            return False
    return True


def pod_requests(pod_spec: dict) -> dict[str, Any]:
    """Summed container requests (limits stand in for missing requests, as the API server defaults them)."""
    total: dict[str, Any] = {"pods": 1}
    for container in pod_spec.get("containers") or []:
        resources = container.get("resources") or {}
        asked = {**(resources.get("limits") or {}), **(resources.get("requests") or {})}
        for key, value in asked.items():
            total[key] = total.get(key, 0) + parse_quantity(value)
    return total


def fits(pod: dict, node: dict, used: dict[str, Any]) -> str | None:
    """None if the pod fits the node, else why not."""
    spec = pod.get("spec") or {}
    node_labels = (node.get("metadata") or {}).get("labels") or {}
    for key, value in (spec.get("nodeSelector") or {}).items():
        if node_labels.get(key) != value:
            return f"nodeSelector {key}={value}"
    if not tolerates(spec, (node.get("spec") or {}).get("taints") or []):
        return "untolerated taint"
    allocatable = (node.get("status") or {}).get("allocatable") or {}
    for key, amount in pod_requests(spec).items():
        have = parse_quantity(allocatable.get(key, "0"))
        if used.get(key, 0) + amount > have:
            return f"insufficient {key}"
    return None


class SimulatedNodes:
    def __init__(self, kube: Any, pools: dict[str, dict] | None = None, *, per_pool: int = 1,
                 pools_file: Path = POOLS_FILE) -> None:
        self.kube = kube
        self.pools = pools if pools is not None else (yaml.safe_load(pools_file.read_text()) or {})["pools"]
        self.suffix = uuid.uuid4().hex[:6]
        self.nodes: list[str] = []
        self.stuck_rules: list[tuple[str, str]] = []  # (pod name prefix, "pending" | "unready")
        self.bound: dict[str, str] = {}  # "ns/pod" -> node
        self._lock = threading.Lock()
        for pool_name, pool in self.pools.items():
            for i in range(per_pool):
                self.add_node(f"sim-{pool_name}-{i}-{self.suffix}", pool_name, pool)

    def add_node(self, name: str, pool_name: str, pool: dict) -> str:
        node, status = node_for_pool(name, pool_name, pool)
        self.kube.create(node)
        self.kube.request("PATCH", f"/api/v1/nodes/{name}/status", body={"status": status},
                          content_type="application/merge-patch+json", what=f"status of node {name}")
        # the TaintNodesByCondition admission plugin taints a new Node not-ready; the node lifecycle
        # controller (off: see ControlPlane.start_controller_manager) would lift it once Ready
        self.kube.patch(ObjectRef("v1", "Node", None, name), {"spec": {"taints": node["spec"].get("taints")}})
        self.nodes.append(name)
        return name

    def stuck(self, name_prefix: str, mode: str = "pending") -> None:
        """Pods whose name starts with ``name_prefix`` stay ``pending`` (never bound) or ``unready``."""
        if mode not in ("pending", "unready"):
            raise ValueError("mode is 'pending' or 'unready'")
        with self._lock:
            self.stuck_rules.append((name_prefix, mode))

    def _mode(self, pod_name: str) -> str:
        with self._lock:
            for prefix, mode in self.stuck_rules:
                if pod_name.startswith(prefix):
                    return mode
        return "ready"

    def delete(self) -> None:
        for name in self.nodes:
            with contextlib.suppress(KubeError):
                self.kube.delete(ObjectRef("v1", "Node", None, name))

    # -- the scheduler + kubelet -------------------------------------------------------------------------

    def settle(self, namespace: str) -> int:
        """One pass: bind every Pending unbound Pod of ``namespace`` that fits a node, mark bound ones
        Running and Ready (or not, if stuck). Returns how many Pods changed."""
        nodes = {n["metadata"]["name"]: n for n in self.kube.list("v1", "Node") if n["metadata"]["name"] in self.nodes}
        pods = self.kube.list("v1", "Pod", namespace)
        used: dict[str, dict[str, Any]] = {name: {} for name in nodes}
        for pod in pods:
            node_name = (pod.get("spec") or {}).get("nodeName")
            if node_name in used and not (pod.get("metadata") or {}).get("deletionTimestamp"):
                for key, amount in pod_requests(pod["spec"]).items():
                    used[node_name][key] = used[node_name].get(key, 0) + amount
        changed = 0
        for pod in pods:
            meta, spec, status = pod["metadata"], pod.get("spec") or {}, pod.get("status") or {}
            if meta.get("deletionTimestamp"):
                with contextlib.suppress(KubeError):  # no kubelet to confirm: finish the deletion
                    self.kube.request("DELETE", f"/api/v1/namespaces/{namespace}/pods/{meta['name']}",
                                      query=[("gracePeriodSeconds", "0")], what="force delete")
                continue
            mode = self._mode(meta["name"])
            node_name = spec.get("nodeName")
            if not node_name:
                if mode == "pending":
                    continue
                target = next((n for n, node in nodes.items() if fits(pod, node, used[n]) is None), None)
                if target is None:
                    continue  # fits nowhere: stays Pending, as on a real cluster
                try:
                    self.kube.request("POST", f"/api/v1/namespaces/{namespace}/pods/{meta['name']}/binding", body={
                        "apiVersion": "v1", "kind": "Binding", "metadata": {"name": meta["name"]},
                        "target": {"apiVersion": "v1", "kind": "Node", "name": target}}, what="bind")
                except KubeError:
                    continue
                for key, amount in pod_requests(spec).items():
                    used[target][key] = used[target].get(key, 0) + amount
                node_name = target
                changed += 1
            if node_name not in nodes:
                continue
            ready = mode == "ready"
            if status.get("phase") == "Running" and _ready(status) == ready:
                continue
            self._set_status(namespace, meta["name"], spec, ready)
            changed += 1
        return changed

    def _set_status(self, namespace: str, name: str, spec: dict, ready: bool) -> None:
        now = _now()
        flag = "True" if ready else "False"
        containers = [{"name": c["name"], "image": c.get("image", ""), "imageID": f"sim://{c.get('image', '')}",
                       "ready": ready, "started": True, "restartCount": 0,
                       "state": {"running": {"startedAt": now}}} for c in spec.get("containers") or []]
        status = {"phase": "Running", "podIP": "10.244.0.10", "hostIP": "10.0.0.1", "startTime": now,
                  "conditions": [{"type": t, "status": s, "lastTransitionTime": now} for t, s in (
                      ("PodScheduled", "True"), ("Initialized", "True"), ("ContainersReady", flag), ("Ready", flag))],
                  "containerStatuses": containers}
        with contextlib.suppress(KubeError):  # the pod may be gone meanwhile
            self.kube.request("PATCH", f"/api/v1/namespaces/{namespace}/pods/{name}/status", body={"status": status},
                              content_type="application/merge-patch+json", what="pod status")

    @contextlib.contextmanager
    def running(self, *namespaces: str, interval: float = 0.2) -> Iterator["SimulatedNodes"]:
        """Settle Pods of ``namespaces`` in a background thread until the block ends."""
        stop = threading.Event()

        def loop() -> None:
            while not stop.is_set():
                for ns in namespaces:
                    with contextlib.suppress(KubeError):
                        self.settle(ns)
                stop.wait(interval)

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            thread.join(timeout=30)


def _ready(status: dict) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])

