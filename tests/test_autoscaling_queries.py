"""The request autoscaler's PromQL asked of a real service's metrics.

`bentoml serve` of the iris example (its trained weights, the container environment its rendered Deployment
gives it) is scraped every second by a real Prometheus (Debian's) that attaches the labels a PodMonitor copies
from the pod (gitops_ml_model, gitops_ml_pool, gitops_ml_track) and the namespace; the queries of the rendered
ScaledObjects are then asked of that Prometheus, as KEDA's Prometheus scaler asks them.

KEDA keeps a ScaledObject active while any of its triggers reads above its activationThreshold (0 here), and
sizes it by value / threshold per replica. BentoML counts every HTTP request but /metrics, the kubelet's
readiness and liveness probes too: the queries must read an idle model, probed as the kubelet probes it, as 0.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import yaml

from reconciler.catalog.effective import effective_serving
from reconciler.render.manifests import model_objects
from tests.fake_metrics import PROMETHEUS, _free_port, run_prometheus, wait_for
from tests.requirements import missing
from tests.test_autoscaling import POOLS, ROOT, entry, env_spec

pytestmark = pytest.mark.slow

MODEL, POOL = "iris-classifier", "gpu-a10g"
ROW = {"features": [[5.1, 3.5, 1.4, 0.2]]}


def rendered(serving: dict) -> tuple[str, dict[str, str]]:
    """(the trigger's query, the container's environment) of the iris model on the GPU pool in prod."""
    model = entry(serving, name=MODEL)
    objects = model_objects(model, env_spec(), [POOLS[POOL]], effective_serving(model.spec, env_spec()),
                            {POOL: "r.example/m:1"})
    scaled = next(o for o in objects if o["kind"] == "ScaledObject")
    (trigger,) = scaled["spec"]["triggers"]
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return trigger["metadata"]["query"], {e["name"]: e["value"] for e in container["env"]}


def iris_folder(dest: Path, storage: Path) -> Path:
    """A copy of the iris model folder with its trained weights from the example DVC storage."""
    shutil.copytree(ROOT / "models" / MODEL, dest, ignore=shutil.ignore_patterns("model.pkl", "__pycache__"))
    md5 = yaml.safe_load((dest / "model.pkl.dvc").read_text())["outs"][0]["md5"]
    shutil.copy2(storage / "files" / "md5" / md5[:2] / md5[2:], dest / "model.pkl")
    return dest


@contextmanager
def bentoml_serve(folder: Path, pod_env: dict[str, str], home: Path) -> Iterator[str]:
    """`bentoml serve` of the folder's service on a free loopback port with the pod's environment; yields its
    base URL once /readyz answers 200, and stops the whole process group afterwards."""
    port = _free_port()
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "BENTOML_DO_NOT_TRACK": "true",
           **pod_env, "BENTOML_PORT": str(port), "BENTOML_HOME": str(home)}
    proc = subprocess.Popen([str(Path(sys.executable).parent / "bentoml"), "serve", "service.py:IrisClassifier",
                             "--host", "127.0.0.1", "--port", str(port)], cwd=folder, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"bentoml serve exited: {(proc.stderr.read() or b'').decode()[-2000:]}")
        try:
            return httpx.get(f"{base}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(ready, timeout=180, poll=0.3, what=f"bentoml serve of {folder.name} to answer /readyz")
        yield base
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def served(tmp_path_factory, example_dvc_storage: Path):
    """The iris service under `bentoml serve` with its pod's environment, and a Prometheus scraping it."""
    if not Path(PROMETHEUS).exists():
        missing("no prometheus binary: apt-get install -y --no-install-recommends prometheus")
    work = tmp_path_factory.mktemp("served")
    folder = iris_folder(work / MODEL, example_dvc_storage)
    _, pod_env = rendered({"autoscaling": {"minReplicas": 1, "maxReplicas": 4}, "concurrency": 4})
    labels = {"gitops_ml_model": MODEL, "gitops_ml_pool": POOL, "gitops_ml_track": "stable",
              "namespace": "models-prod"}
    with bentoml_serve(folder, pod_env, work / "bentoml") as base:
        with run_prometheus(work / "prometheus", base.removeprefix("http://"), labels=labels) as prometheus:
            yield base, prometheus


def ask(prometheus: str, query: str) -> float | None:
    """The query's one value, as KEDA reads it (an empty result is None: KEDA's ignoreNullValues makes it 0)."""
    response = httpx.get(f"{prometheus}/api/v1/query", params={"query": query}, timeout=10)
    assert response.status_code == 200, (query, response.text)  # Prometheus parsed the rendered PromQL
    result = response.json()["data"]["result"]
    assert len(result) <= 1, result  # KEDA needs a single element
    return float(result[0]["value"][1]) if result else None


class Probing:
    """The kubelet's probes: GET each path every `periods[path]` seconds (by default readiness and liveness each
    every 0.25 s, more often than the kubelet sends them). As the kubelet's prober, each probe is a connection of
    its own (no keep-alive) and a failed probe is counted and the next one sent: on a reused connection a busy
    server's keep-alive close raced a probe ("Server disconnected without sending a response"), which ended the
    thread and left a test with a third of its probes (the final CI run at 39c3460)."""

    def __init__(self, base: str, periods: dict[str, float] | None = None) -> None:
        self.base, self.stop = base, threading.Event()
        self.periods = periods or {"/readyz": 0.25, "/livez": 0.25}
        self.sent: dict[str, int] = dict.fromkeys(self.periods, 0)
        self.failed: dict[str, int] = dict.fromkeys(self.periods, 0)  # no answer (the kubelet counts these too)
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        due = dict.fromkeys(self.periods, time.monotonic())
        with httpx.Client(timeout=5, headers={"Connection": "close"}) as client:
            while not self.stop.is_set():
                path = min(due, key=due.__getitem__)
                if self.stop.wait(max(0.0, due[path] - time.monotonic())):
                    return
                try:
                    client.get(f"{self.base}{path}")
                except httpx.HTTPError:
                    self.failed[path] += 1
                self.sent[path] += 1
                due[path] += self.periods[path]

    def __enter__(self) -> "Probing":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)


def test_an_idle_model_reads_zero_while_probed_and_its_requests_read_as_traffic(served):
    base, prometheus = served
    rps_query, _ = rendered({"autoscaling": {"minReplicas": 0, "maxReplicas": 4, "metric": "rps", "target": 0.5}})
    in_flight_query, _ = rendered({"autoscaling": {"minReplicas": 1, "maxReplicas": 4}, "concurrency": 4})
    selector = (f'gitops_ml_model="{MODEL}",gitops_ml_pool="{POOL}",gitops_ml_track="stable",'
                'namespace="models-prod"')
    with Probing(base):
        # BentoML counts the probes (the premise): Prometheus sees them as requests of the stable pod
        wait_for(lambda: (ask(prometheus, f'sum(rate(bentoml_service_request_total{{{selector},'
                                          'endpoint=~"/livez|/readyz"}[1m]))') or 0) > 1,
                 timeout=60, poll=0.5, what="the probes in bentoml_service_request_total")
        # the autoscaler's queries read an idle model as idle: KEDA deactivates it (scale to zero) and an rps
        # target below the probes' rate (0.5 here) does not hold extra replicas
        assert (ask(prometheus, rps_query) or 0.0) == 0.0, rps_query
        assert (ask(prometheus, in_flight_query) or 0.0) == 0.0, in_flight_query
        # requests to the model's API are traffic
        with httpx.Client(timeout=30) as client:
            end = time.monotonic() + 4
            while time.monotonic() < end:
                assert client.post(f"{base}/predict", json=ROW).status_code == 200
        assert wait_for(lambda: (ask(prometheus, rps_query) or 0) > 0.5, timeout=60, poll=0.5,
                        what="the predictions in the rps query")
