"""Test helpers: a synthetic BentoML /metrics endpoint and a real Prometheus scraping it.

``FakeBentoMetrics`` serves the exposition text a BentoML service would (request counter with
``http_response_code`` / ``endpoint``, request-duration histogram), one series set per
(model, track, pool), with the pod labels Prometheus would have attached (gitops_ml_*). Every
scrape advances each series by its configured per-scrape traffic, so rates are deterministic.

``run_prometheus`` starts Debian's /usr/bin/prometheus on 127.0.0.1 with an ephemeral port, a temp
config and data dir, scraping every second; it is killed on exit.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0)
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


@dataclass
class Series:
    """Traffic of one version: per scrape, `requests` requests of which `errors` fail with 500,
    each taking `latency` seconds."""

    model: str
    track: str
    pool: str
    requests: int
    errors: int
    latency: float
    namespace: str = "models-prod"
    total_ok: int = 0
    total_err: int = 0
    buckets: dict[float, int] = field(default_factory=lambda: {b: 0 for b in BUCKETS})
    duration_sum: float = 0.0

    def advance(self) -> None:
        self.total_ok += self.requests - self.errors
        self.total_err += self.errors
        for b in BUCKETS:
            if self.latency <= b:
                self.buckets[b] += self.requests
        self.duration_sum += self.latency * self.requests

    def exposition(self) -> list[str]:
        base = (f'service_name="svc",endpoint="/predict",gitops_ml_model="{self.model}",'
                f'gitops_ml_track="{self.track}",gitops_ml_pool="{self.pool}",namespace="{self.namespace}"')
        lines = [f'bentoml_service_request_total{{{base},http_response_code="200"}} {self.total_ok}']
        if self.total_err:
            lines.append(f'bentoml_service_request_total{{{base},http_response_code="500"}} {self.total_err}')
        total = self.total_ok + self.total_err
        for b in BUCKETS:
            lines.append(f'bentoml_service_request_duration_seconds_bucket{{{base},le="{b}"}} {self.buckets[b]}')
        lines.append(f'bentoml_service_request_duration_seconds_bucket{{{base},le="+Inf"}} {total}')
        lines.append(f"bentoml_service_request_duration_seconds_sum{{{base}}} {self.duration_sum}")
        lines.append(f"bentoml_service_request_duration_seconds_count{{{base}}} {total}")
        return lines


class FakeBentoMetrics:
    def __init__(self, series: list[Series]) -> None:
        self.series = series
        self.scrapes = 0
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                if self.path != "/metrics":
                    self.send_error(404)
                    return
                body = outer.render().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def render(self) -> str:
        with self._lock:
            self.scrapes += 1
            for s in self.series:
                s.advance()
            lines = ["# TYPE bentoml_service_request_total counter",
                     "# TYPE bentoml_service_request_duration_seconds histogram"]
            for s in self.series:
                lines.extend(s.exposition())
            return "\n".join(lines) + "\n"

    @property
    def address(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{host}:{port}"

    def __enter__(self) -> "FakeBentoMetrics":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def run_prometheus(workdir: Path, target: str | list[tuple[str, dict[str, str]]], *, ready_timeout: float = 20.0,
                   labels: dict[str, str] | None = None) -> Iterator[str]:
    """Start Prometheus scraping `target` every second; yield its base URL; kill it afterwards. `labels` are
    attached to every scraped series (what a PodMonitor's podTargetLabels and the namespace do on a cluster);
    several targets, each with its own labels (pods of several tracks), as (address, labels) pairs (an address
    may come twice with other labels)."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "prometheus.yml"
    targets = [(target, labels or {})] if isinstance(target, str) else target
    static = [{"targets": [address], **({"labels": dict(own)} if own else {})} for address, own in targets]
    config.write_text(json.dumps({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "bento", "honor_labels": True, "static_configs": static}]}))
    port = _free_port()
    log = (workdir / "prometheus.log").open("wb")
    proc = subprocess.Popen([PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'data'}",
                             f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"prometheus exited with {proc.returncode}: "
                                   f"{(workdir / 'prometheus.log').read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"prometheus not ready after {ready_timeout}s")
            time.sleep(0.1)
        yield url
    finally:
        proc.kill()
        proc.wait(timeout=10)
        log.close()


def wait_for(predicate, *, timeout: float, poll: float = 0.25, what: str = "condition"):
    """Poll `predicate` until it returns a truthy value; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(poll)
