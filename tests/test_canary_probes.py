"""The canary's default queries on real services probed as the kubelet probes them, at a quiet model's traffic.

Three `bentoml serve` of the iris example with its rendered pod environment: the stable version, a canary whose
/predict raises on every request (HTTP 500) and a canary 300 ms slower, each changed as the e2e job changes a
model (.github/e2e/change_model.py). A real Prometheus scrapes them every second with the labels a PodMonitor
copies from the pods. Each gets the probes of its rendered Deployment on their paths at their rendered periods
(readiness every 5 s, liveness every 10 s: 0.3 requests per second) and one prediction every 10 s (0.1 per
second). BentoML counts the probes as requests: three in four of its counted requests are the kubelet's. The
canary analysis must read the predictions only: every /predict of the 5xx canary failed, every one of the slow
canary's took 300 ms, and the guard's sample is the predictions sent.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from reconciler import probes
from reconciler.catalog.effective import effective_serving
from reconciler.render.manifests import model_objects
from reconciler.rollout.judge import judge
from reconciler.rollout.machine import Observations, step
from reconciler.rollout.prometheus import DEFAULT_QUERIES, PrometheusAnalysis, PrometheusClient
from reconciler.rollout.state import Phase, Policy, RolloutState
from tests.fake_metrics import PROMETHEUS, run_prometheus, wait_for
from tests.requirements import missing
from tests.test_autoscaling import POOLS, ROOT, entry, env_spec
from tests.test_autoscaling_queries import MODEL, POOL, ROW, Probing, bentoml_serve, iris_folder

PREDICT_EVERY = 10.0  # seconds between two predictions per version: 0.1 per second, a quiet model
INTERVAL = 60         # seconds of data the analysis reads: ~6 predictions and ~18 probes per version
SLOW_MS = 300
SLOW_MODEL = "iris-slow"  # the slow canary is judged against the same stable pod under a model name of its own


class Predictions:
    """One POST /predict to every version every `every` seconds; the send times, per base URL."""

    def __init__(self, bases: list[str], every: float) -> None:
        self.bases, self.every, self.stop = bases, every, threading.Event()
        self.sent: dict[str, list[tuple[float, int]]] = {b: [] for b in bases}
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        # a connection per request, as from many clients: a reused one raced the server's keep-alive close
        with httpx.Client(timeout=30, headers={"Connection": "close"}) as client:
            while True:
                for base in self.bases:
                    try:
                        status = client.post(f"{base}/predict", json=ROW).status_code
                    except httpx.HTTPError:
                        status = 0  # no answer: sent, never counted by the server (the tests name it if seen)
                    self.sent[base].append((time.time(), status))
                if self.stop.wait(self.every):
                    return

    def between(self, base: str, start: float, end: float) -> list[int]:
        return [status for at, status in self.sent[base] if start < at <= end]

    def __enter__(self) -> "Predictions":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=60)


def rendered_pod() -> tuple[dict[str, str], dict[str, float]]:
    """(the container's environment, {probe path: period}) of the iris model's rendered Deployment."""
    model = entry({"autoscaling": {"minReplicas": 1, "maxReplicas": 4}, "concurrency": 4}, name=MODEL)
    objects = model_objects(model, env_spec(), [POOLS[POOL]], effective_serving(model.spec, env_spec()),
                            {POOL: "r.example/m:1"})
    (container,) = next(o for o in objects if o["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"]
    periods = {container[p]["httpGet"]["path"]: float(container[p]["periodSeconds"])
               for p in ("readinessProbe", "livenessProbe")}
    return {e["name"]: e["value"] for e in container["env"]}, periods


def labels(model: str, track: str) -> dict[str, str]:
    return {"gitops_ml_model": model, "gitops_ml_pool": POOL, "gitops_ml_track": track, "namespace": "models-prod"}


def test_one_vocabulary_of_probe_paths_in_the_pods_the_autoscaler_and_the_canary() -> None:
    """Every probe the template renders is on a path of reconciler.probes, and every query the reconciler writes
    over BentoML's request metrics leaves those paths out; a model's own canary.queries are read as written."""
    queries = []
    for serving in ({"autoscaling": {"minReplicas": 0, "maxReplicas": 4, "metric": "rps", "target": 2}},
                    {"autoscaling": {"minReplicas": 1, "maxReplicas": 4, "metric": "concurrency"}, "concurrency": 4}):
        model = entry(serving, name=MODEL)
        objects = model_objects(model, env_spec(), [POOLS[POOL]], effective_serving(model.spec, env_spec()),
                                {POOL: "r.example/m:1"})
        (container,) = next(o for o in objects if o["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"]
        paths = {container[p]["httpGet"]["path"] for p in ("startupProbe", "readinessProbe", "livenessProbe")}
        assert paths == {probes.LIVENESS, probes.READINESS}, paths
        scaled = next(o for o in objects if o["kind"] == "ScaledObject")
        queries += [t["metadata"]["query"] for t in scaled["spec"]["triggers"]]
    assert len(queries) == 2 and all(probes.NOT_PROBES in q for q in queries), queries  # rps, in-flight
    for key, text in DEFAULT_QUERIES.items():
        assert text.count("bentoml_service_request") == text.count(probes.NOT_PROBES) > 0, (key, text)
    own = "sum(increase(my_requests_total{$selector}[$window]))"
    with PrometheusClient("http://127.0.0.1:9") as client:
        assert PrometheusAnalysis(client, queries={"requests": own}).queries["requests"] == own


@pytest.fixture(scope="module")
def measured(tmp_path_factory, example_dvc_storage: Path) -> Iterator[dict]:
    if not Path(PROMETHEUS).exists():
        missing("no prometheus binary: apt-get install -y --no-install-recommends prometheus")
    work = tmp_path_factory.mktemp("probed")
    pod_env, periods = rendered_pod()
    assert set(periods) <= set(probes.PATHS) and len(periods) == 2, periods  # the vocabulary is what is rendered
    folders = {name: iris_folder(work / name, example_dvc_storage) for name in ("stable", "broken", "slow")}
    for change, flag in (("broken", "--error-rate=1"), ("slow", f"--delay-ms={SLOW_MS}")):
        subprocess.run([sys.executable, str(ROOT / ".github" / "e2e" / "change_model.py"), change,
                        str(folders[change]), flag], check=True, capture_output=True)
    with ExitStack() as stack:
        bases = {name: stack.enter_context(bentoml_serve(folder, pod_env, work / f"home-{name}"))
                 for name, folder in folders.items()}
        address = {name: base.removeprefix("http://") for name, base in bases.items()}
        url = stack.enter_context(run_prometheus(work / "prometheus", [
            (address["stable"], labels(MODEL, "stable")), (address["broken"], labels(MODEL, "canary")),
            (address["stable"], labels(SLOW_MODEL, "stable")), (address["slow"], labels(SLOW_MODEL, "canary"))]))
        kubelet = [stack.enter_context(Probing(base, periods)) for base in bases.values()]
        traffic = stack.enter_context(Predictions(list(bases.values()), PREDICT_EVERY))
        began = time.time()
        wait_for(lambda: time.time() > began + INTERVAL + 3, timeout=INTERVAL + 30, poll=1,
                 what="an analysis interval of traffic")
        now = time.time() - 1  # the last scrape is in
        client = stack.enter_context(PrometheusClient(url))
        yield {"client": client, "now": now, "traffic": traffic, "bases": bases, "kubelet": kubelet}


def collect(measured: dict, model: str, track: str, queries: dict[str, str] | None = None):
    analysis = PrometheusAnalysis(measured["client"], queries=queries or {}, samples=1)
    return analysis.collect(model=model, track=track, pool=POOL, namespace="models-prod", now=measured["now"],
                            interval_seconds=INTERVAL)


# the defaults as they were before the probes were left out: what a model's own canary.queries written the same
# way read (a user's queries are theirs, and keep counting whatever they select)
COUNTING_PROBES = {key: text.replace("," + probes.NOT_PROBES, "") for key, text in DEFAULT_QUERIES.items()}


def sent(measured: dict, name: str) -> list[int]:
    return measured["traffic"].between(measured["bases"][name], measured["now"] - INTERVAL, measured["now"])


@pytest.mark.slow
def test_the_probes_outnumber_a_quiet_models_predictions(measured) -> None:
    """The premise, measured: BentoML counts the kubelet's probes as requests of the pod."""
    predicted = collect(measured, MODEL, "canary")
    everything = collect(measured, MODEL, "canary", COUNTING_PROBES)
    assert everything.requests > 3 * predicted.requests > 0, (everything.requests, predicted.requests)
    assert all(k.sent[p] > 0 for k in measured["kubelet"] for p in k.periods)


@pytest.mark.slow
def test_a_canary_failing_every_prediction_reads_100_percent_errors_and_is_not_promoted(measured) -> None:
    statuses = sent(measured, "broken")
    assert statuses and set(statuses) == {500}, statuses  # every prediction of the broken release failed
    stable, canary = collect(measured, MODEL, "stable"), collect(measured, MODEL, "canary")
    # the sample is the predictions: increase() extrapolates to the window's edges, by less than one request here
    assert canary.requests == pytest.approx(len(statuses), abs=1.5), (canary.requests, statuses)
    assert stable.requests == pytest.approx(len(sent(measured, "stable")), abs=1.5)
    assert canary.error_rate == pytest.approx(1.0) and canary.errors == pytest.approx(canary.requests)
    assert stable.error_rate == 0 and stable.errors == 0
    # counting the probes, the same canary reads a quarter of that: 3 probe requests per prediction
    diluted = collect(measured, MODEL, "canary", COUNTING_PROBES)
    assert diluted.error_rate < 0.4, diluted.error_rate

    policy = Policy(steps=(10, 50, 100), interval_seconds=INTERVAL, failure_threshold=1, max_error_rate=0.05,
                    min_requests=5)
    # 5 of 5 failed predictions are enough against a 5 % limit (measured: p=3.1e-07); counting the probes, 5 of
    # 22 passed that check (p=0.004 above its level 0.0025) and the guard, fed 22 requests, let it through
    verdict = judge(policy, stable, canary)
    assert verdict.failed and any(r.startswith("FAILED errors vs limit") for r in verdict.reasons), verdict.reasons
    state = RolloutState(MODEL, "prod", policy, stable_revision="r1")
    _, state = step(state, Observations("r2"), 0)
    _, state = step(state, Observations("r2"), 1)  # canary ready: weight 10
    _, state = step(state, Observations("r2", stable=stable, canary=canary), 1 + INTERVAL)
    assert state.phase is Phase.rolled_back, state.history[-1]
    assert state.history[-1].canary["error_rate"] == pytest.approx(1.0)


@pytest.mark.slow
def test_a_slower_canary_reads_its_predictions_latency(measured) -> None:
    stable, canary = collect(measured, SLOW_MODEL, "stable"), collect(measured, SLOW_MODEL, "canary")
    assert canary.requests == pytest.approx(len(sent(measured, "slow")), abs=1.5)
    buckets = dict(canary.latency_buckets)
    # every request the analysis counts took the injected 300 ms: none in a bucket up to 0.25 s
    assert buckets[0.25] == 0 and buckets[0.5] == pytest.approx(canary.requests), buckets
    assert canary.p95_ms > SLOW_MS and stable.p95_ms < 100, (canary.p95_ms, stable.p95_ms)
    # counting the probes (a millisecond each), three in four of its requests are fast
    diluted = dict(collect(measured, SLOW_MODEL, "canary", COUNTING_PROBES).latency_buckets)
    assert diluted[0.25] > 0.5 * diluted[0.5], diluted

    policy = Policy(steps=(10, 50, 100), interval_seconds=INTERVAL, failure_threshold=1, max_p95_latency_ms=250,
                    min_requests=5)
    # every counted request slower than 250 ms against the 5 % a p95 allows (measured: p=2.5e-07); counting the
    # probes, 5 of 22 passed that check (p=0.004)
    verdict = judge(policy, stable, canary)
    assert verdict.failed and any(r.startswith("FAILED p95 vs limit") for r in verdict.reasons), verdict.reasons
