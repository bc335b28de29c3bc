"""A real canary on the real node (tests/node_fixtures.py): Debian's Prometheus scrapes BentoML's own /metrics
of the model Pods (file_sd targets written from the API server's Pods with the labels the rendered PodMonitor's
podTargetLabels give them: Debian builds Prometheus without Kubernetes discovery); a bounded load generator sends requests on loopback to the model's
ClusterIP Service (a new connection per request, so kube-proxy spreads them over stable and canary pods as the
replicas router intends); `reconciler sync dev --prometheus-url` is run pass after pass, as `reconciler run`
would, until the canary ends. A healthy new version is promoted; a version failing half its requests and a
slower one are rolled back; each a real model change built into a real image (.github/e2e/change_model.py).

The canary policy is the test environment's, made for its traffic (~15 requests/s on a loaded 2-core machine):
short intervals and the minimum-sample guard sized like the e2e-canary job's. The tests assert promoted / rolled
back and what runs afterwards, not the judge's figures; those are printed (with -s) and recorded in
benchmarks/README-canary.md.
"""

from __future__ import annotations

import http.client
import json
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.envtest import PROJECT
from tests.fake_metrics import PROMETHEUS, _free_port
from tests.node_fixtures import E2E_SLO, E2ERepo, NodeCluster, record_time
from tests.requirements import missing
from tests.test_e2e_node import REQUESTS, ready_pods

pytestmark = [pytest.mark.node, pytest.mark.xdist_group("node")]

MODEL = "iris-classifier"
CANARY_POLICY = {"router": "replicas", "steps": [50, 100], "interval": "30s", "failureThreshold": 1,
                 "progressDeadline": "5m", "minRequests": 50, "latencyTolerance": 1.0,
                 "detectErrorIncrease": 99, "detectLatencyIncrease": 2.0, "power": 0.55,
                 # the Pods are Ready through their real probes before a weight counts; 15 s of warm-up after
                 # that is plenty for a Bento (the default 60 s, twice per healthy rollout, was 2 min of waiting)
                 "warmup": "15s"}
SLO = E2E_SLO  # every e2e repository's models carry it: one image per model content serves all three modules
CANARY_TIMEOUT = 300  # seconds for one canary to end, far above the ~1.5 min a healthy one takes


class LoadGenerator:
    """Bounded load on loopback: `rate` requests/s to one URL, each on a new connection, from one thread."""

    def __init__(self, host: str, port: int, body: dict, rate: float = 15.0) -> None:
        self.host, self.port, self.body, self.rate = host, port, json.dumps(body).encode(), rate
        self.counts: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "LoadGenerator":
        assert self.host.startswith(("10.", "127.")), "traffic goes only to this test's own cluster addresses"
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        period = 1.0 / self.rate
        next_at = time.monotonic()
        while not self._stop.is_set():
            try:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=5)
                conn.request("POST", "/predict", body=self.body, headers={"Content-Type": "application/json"})
                self.counts[str(conn.getresponse().status)] += 1
                conn.close()
            except OSError:
                self.counts["error"] += 1
            next_at += period
            self._stop.wait(max(0.0, next_at - time.monotonic()))


class PodTargets:
    """What the rendered PodMonitor tells prometheus-operator, done by hand: Debian's Prometheus is built without
    Kubernetes service discovery, so the model pods of one namespace are written as file_sd targets (pod IP, port
    `http`) with the PodMonitor's podTargetLabels (gitops.ml/model, track, pool -> gitops_ml_*), the namespace
    and the pod name, refreshed every second from the API server while the canaries run."""

    def __init__(self, cluster: NodeCluster, namespace: str, path: Path) -> None:
        self.kube, self.namespace, self.path = cluster.plane.client(), namespace, path
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.write()

    def targets(self) -> list[dict]:
        groups = []
        for pod in self.kube.list("v1", "Pod", self.namespace):
            labels, status = pod["metadata"].get("labels") or {}, pod.get("status") or {}
            ports = [p["containerPort"] for c in pod["spec"]["containers"] for p in c.get("ports") or []
                     if p.get("name") == "http"]
            if not labels.get("gitops.ml/model") or not status.get("podIP") or not ports \
                    or pod["metadata"].get("deletionTimestamp"):
                continue
            groups.append({"targets": [f"{status['podIP']}:{ports[0]}"], "labels": {
                "gitops_ml_model": labels["gitops.ml/model"], "gitops_ml_track": labels.get("gitops.ml/track", ""),
                "gitops_ml_pool": labels.get("gitops.ml/pool", ""), "namespace": self.namespace,
                "pod": pod["metadata"]["name"]}})
        return sorted(groups, key=lambda g: g["labels"]["pod"])

    def write(self) -> None:
        text = json.dumps(self.targets(), indent=1)
        if not self.path.exists() or self.path.read_text() != text:
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(text)
            tmp.replace(self.path)

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            try:
                self.write()
            except Exception:  # a transient API error: next round
                continue

    def __enter__(self) -> "PodTargets":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.kube.close()


def prometheus_config(targets: Path, workdir: Path) -> Path:
    config = {"global": {"scrape_interval": "2s", "evaluation_interval": "2s"},
              "scrape_configs": [{"job_name": "models", "metrics_path": "/metrics", "honor_labels": False,
                                  "file_sd_configs": [{"files": [str(targets)], "refresh_interval": "1s"}]}]}
    path = workdir / "prometheus.yml"
    path.write_text(json.dumps(config))  # YAML is a superset of JSON
    return path


@pytest.fixture(scope="module")
def canary_env(e2e_repos, tmp_path_factory):
    """The dev environment with canaries on (replicas router), its first deployment Ready, a real Prometheus
    scraping its pods and load on the model's Service; yields (repo, prometheus URL, load generator)."""
    binary = shutil.which("prometheus") or PROMETHEUS
    if not Path(binary).exists():
        missing("no prometheus binary: apt-get install -y --no-install-recommends prometheus")
    repo: E2ERepo = e2e_repos("canary", canary=True, defaults={"accelerator": "cpu", "canary": CANARY_POLICY,
                                                                "slo": SLO},
)
    repo.sync("--wait", "--timeout", "300")
    cluster = repo.cluster
    work = tmp_path_factory.mktemp("prometheus")
    pod_targets = PodTargets(cluster, repo.namespace, work / "targets.json")
    config = prometheus_config(pod_targets.path, work)
    port = _free_port()
    log = (work / "prometheus.log").open("wb")
    proc = subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={work / 'data'}",
                             f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    svc = cluster.get("service", "-n", repo.namespace, MODEL)
    try:
        with pod_targets, LoadGenerator(svc["spec"]["clusterIP"], svc["spec"]["ports"][0]["port"],
                                        REQUESTS[MODEL]) as load:
            # the stable pods' BentoML histogram is in Prometheus before any canary starts
            cluster.wait_for("Prometheus to have the stable pods' request counts", lambda: query(
                url, f'sum(bentoml_service_request_total{{gitops_ml_model="{MODEL}",gitops_ml_track="stable"}})'),
                timeout=90, every=2)
            yield repo, url, load
    finally:
        proc.kill()
        proc.wait(timeout=10)
        log.close()
        repo.close()


def query(url: str, promql: str) -> float | None:
    try:
        result = httpx.get(f"{url}/api/v1/query", params={"query": promql}, timeout=5).json()["data"]["result"]
    except (httpx.HTTPError, KeyError, ValueError):
        return None
    return float(result[0]["value"][1]) if result else None


def rollout_state(repo: E2ERepo) -> dict | None:
    proc = repo.cluster.kubectl("-n", repo.namespace, "get", "configmap", f"rollout-{MODEL}", "-o", "json", check=False)
    return json.loads(json.loads(proc.stdout)["data"]["state.json"]) if proc.returncode == 0 else None


def release(repo: E2ERepo, change: str, *args: str) -> str:
    """A model change committed, its image built and locked (as a merge does); the new image reference."""
    folder = repo.root / "models" / MODEL
    # each release changes the template's service, not the previous (maybe broken) release
    repo.git("checkout", repo.git("rev-list", "--max-parents=0", "HEAD").strip(), "--", f"models/{MODEL}/service.py")
    subprocess.run([sys.executable, str(PROJECT / ".github" / "e2e" / "change_model.py"), change, str(folder), *args],
                   check=True, capture_output=True)
    # a unique line: each run builds and pushes a new image, so the tier always exercises containerize
    service = folder / "service.py"
    service.write_text(service.read_text() + f"\n# e2e {change} release in {repo.namespace}\n")
    repo.commit(f"{MODEL}: {change} release")
    report = repo.build(MODEL)
    assert report["ok"], report
    repo.commit(f"images: lock the {change} {MODEL}")
    return next(m for m in report["models"] if m["model"] == MODEL)["image"]


def run_canary(repo: E2ERepo, prometheus: str) -> tuple[dict, float, list[dict]]:
    """Sync pass after pass (every 5 s) until the canary of HEAD ends; its final state, seconds, and the passes."""
    started = time.monotonic()
    passes = []
    while time.monotonic() - started < CANARY_TIMEOUT:
        report = repo.sync("--prometheus-url", prometheus, check=False)
        passes.append(report)
        errors = [e for m in report.get("models", {}).values() for e in m.get("errors") or []]
        assert not errors, f"the sync refused the model: {errors}"
        state = rollout_state(repo)
        if state and state.get("phase") in ("promoted", "rolled_back"):
            record_time(f"{repo.namespace}: canary {state['phase']} ({len(passes)} sync passes)",
                        time.monotonic() - started)
            return state, time.monotonic() - started, passes
        time.sleep(5)
    raise AssertionError(f"the canary did not end in {CANARY_TIMEOUT}s: {rollout_state(repo)}\n"
                         f"{repo.cluster.kubectl('get', 'pods', '-A', '-o', 'wide', check=False).stdout}")


def stable_image(repo: E2ERepo) -> str:
    d = repo.cluster.get("deployment", "-n", repo.namespace, f"{MODEL}-cpu-general")
    return d["spec"]["template"]["spec"]["containers"][0]["image"]


def report_figures(label: str, state: dict, seconds: float, load: LoadGenerator) -> None:
    """The judge's figures of the last analysis, printed for benchmarks/README-canary.md (pytest -s)."""
    print(f"\n[e2e canary] {label}: phase {state.get('phase')} after {seconds:.0f}s; load so far {dict(load.counts)}")
    print(json.dumps((state.get("history") or [])[-2:], indent=1, default=str))


def test_a_healthy_version_is_promoted_on_real_metrics(canary_env):
    repo, prometheus, load = canary_env
    before = stable_image(repo)
    image = release(repo, "good", "--label", "a healthy version")
    state, seconds, _ = run_canary(repo, prometheus)
    report_figures("healthy", state, seconds, load)
    assert state["phase"] == "promoted", state
    assert stable_image(repo) == image != before
    repo.cluster.wait_for("the promoted version's pods Ready", lambda: any(
        p["spec"]["containers"][0]["image"] == image for p in ready_pods(repo.cluster, repo.namespace, MODEL)))


def test_a_version_failing_half_its_requests_is_rolled_back(canary_env):
    repo, prometheus, load = canary_env
    before = stable_image(repo)
    release(repo, "broken", "--error-rate", "0.5")
    state, seconds, _ = run_canary(repo, prometheus)
    report_figures("5xx", state, seconds, load)
    assert state["phase"] == "rolled_back", state
    assert stable_image(repo) == before
    # the canary pod is gone, so its series are stale: look back over the test's window
    assert query(prometheus, f'sum(max_over_time(bentoml_service_request_total{{gitops_ml_model="{MODEL}",'
                             'gitops_ml_track="canary",http_response_code=~"5.."}[15m]))'), \
        "the rollback was on the 5xx the real service counted"


def test_a_slower_version_is_rolled_back(canary_env):
    repo, prometheus, load = canary_env
    before = stable_image(repo)
    release(repo, "slow", "--delay-ms", "300")
    state, seconds, _ = run_canary(repo, prometheus)
    report_figures("slow", state, seconds, load)
    assert state["phase"] == "rolled_back", state
    assert stable_image(repo) == before
