"""Throughput and p95 latency of ONE replica of each example model, measured under `bentoml serve`.

    .venv/bin/python benchmarks/serve_load.py                       # both example models, this machine's CPU
    .venv/bin/python benchmarks/serve_load.py --model iris-classifier --levels 1,4,16 --seconds 10
    .venv/bin/python benchmarks/serve_load.py --model iris-classifier --base-url http://127.0.0.1:3000  # a pod

Each model is served the way its pod serves it: `bentoml serve service.py:<Class>` in its folder, with the
environment the renderer gives the container (reconciler.render.manifests.serving_env: BENTOML_PORT,
BENTOML_CONFIG_OVERRIDES for serving.concurrency, MODEL_MAX_BATCH_SIZE / MODEL_MAX_LATENCY_MS for
serving.batching), once without batching and once with `--batching SIZE:LATENCY` (default 16:100ms). A closed-loop
load generator (asyncio + httpx, in this process) keeps C requests in flight for `--seconds` at each level C of
`--levels`, after a 1 s warm-up that is not counted, and records completed requests per second, p50 and p95.

Bounded and local on purpose: every request goes to a loopback address (a `--base-url` elsewhere is refused;
reach a pod with `kubectl port-forward`), each level has a fixed duration and at most 256 requests in flight, and
the server this script starts is stopped at the end. The load generator shares the machine's cores with the
server: on a 2-core machine that caps the figures (the table says the load average it ran at).

The weights must be there (README command 1 trains them; or `reconciler pipeline run train --model M`).
Results: benchmarks/README-serving.md. Nothing here is asserted by the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlparse

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reconciler.catalog.effective import EffectiveServing  # noqa: E402
from reconciler.catalog.load import ModelEntry  # noqa: E402
from reconciler.catalog.specs import Batching, ModelSpec  # noqa: E402
from reconciler.render.manifests import serving_env  # noqa: E402

import yaml  # noqa: E402

MAX_IN_FLIGHT = 256
# one request body per example model: a row the model accepts (shape as its service documents)
PAYLOADS = {
    "iris-classifier": {"features": [[5.1, 3.5, 1.4, 0.2]]},
    "digits-classifier": {"images": [[0, 0, 5, 13, 9, 1, 0, 0, 0, 0, 13, 15, 10, 15, 5, 0, 0, 3, 15, 2, 0, 11, 8, 0,
                                      0, 4, 12, 0, 0, 8, 8, 0, 0, 5, 8, 0, 0, 9, 8, 0, 0, 4, 11, 0, 1, 12, 7, 0,
                                      0, 2, 14, 5, 10, 12, 0, 0, 0, 0, 6, 13, 10, 0, 0, 0]]},
}


@dataclass
class Level:
    model: str
    mode: str           # plain | batched
    concurrency: int    # requests kept in flight
    seconds: float
    completed: int
    errors: int
    error_codes: dict[str, int]  # HTTP status (or the exception's name) -> count
    rps: float
    p50_ms: float | None
    p95_ms: float | None


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def _drive(url: str, body: dict, concurrency: int, seconds: float,
                 warmup: float = 1.0) -> tuple[int, dict[str, int], list[float]]:
    """C workers, each sending its next request when the last one answers; counts only after the warm-up."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    completed = 0
    start = time.perf_counter()
    counting_from, stop = start + warmup, start + warmup + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30.0) as client:
        async def worker() -> None:
            nonlocal completed
            while time.perf_counter() < stop:
                sent = time.perf_counter()
                try:
                    code = str((await client.post(url, json=body)).status_code)
                except httpx.HTTPError as exc:
                    code = type(exc).__name__
                done = time.perf_counter()
                if sent >= counting_from and done <= stop:
                    if code == "200":
                        completed += 1
                        latencies.append((done - sent) * 1000.0)
                    else:
                        errors[code] = errors.get(code, 0) + 1
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return completed, errors, latencies


def measure(model: str, mode: str, base: str, levels: list[int], seconds: float) -> list[Level]:
    url = f"{base.rstrip('/')}/predict"
    rows = []
    for c in levels:
        completed, errors, lat = asyncio.run(_drive(url, PAYLOADS[model], c, seconds))
        rows.append(Level(model, mode, c, seconds, completed, sum(errors.values()), errors, round(completed / seconds, 1),
                          _round(_quantile(lat, 0.5)), _round(_quantile(lat, 0.95))))
        print(f"  {model:18} {mode:7} C={c:<4} {rows[-1].rps:8.1f} req/s  p50 {rows[-1].p50_ms} ms  "
              f"p95 {rows[-1].p95_ms} ms  errors {errors or 0}", flush=True)
    return rows


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(model: str) -> ModelEntry:
    folder = ROOT / "models" / model
    spec = ModelSpec.model_validate(yaml.safe_load((folder / "model.yaml").read_text()))
    return ModelEntry(model, folder, spec)


def start_server(entry: ModelEntry, port: int, batching: Batching | None, home: Path) -> tuple[subprocess.Popen, float]:
    """`bentoml serve` of the model with its pod's environment; (process, seconds until /readyz answered 200)."""
    serving = EffectiveServing(port=port, cpu="1", memory="1Gi", replicas=1, autoscaling=None,
                               concurrency=entry.spec.serving.concurrency, batching=batching)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true",
           **{e["name"]: e["value"] for e in serving_env(entry, serving)}}
    service = entry.spec.service
    bentoml = Path(sys.executable).parent / "bentoml"
    started = time.perf_counter()
    proc = subprocess.Popen([str(bentoml), "serve", service, "--host", "127.0.0.1", "--port", str(port)],
                            cwd=entry.path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = started + 180
    while time.perf_counter() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"bentoml serve {service} exited: {(proc.stderr.read() or b'').decode()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return proc, time.perf_counter() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    stop_server(proc)
    raise RuntimeError(f"bentoml serve {service} was not ready after 180 s")


def stop_server(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def loopback_only(url: str) -> str:
    host = urlparse(url).hostname or ""
    try:
        ok = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        ok = False
    if not ok:
        raise SystemExit(f"--base-url {url!r}: only a loopback address is driven (reach a pod with "
                         "`kubectl port-forward deploy/<model>-<pool> 3000:3000`)")
    return url


def parse_batching(text: str) -> Batching:
    size, _, latency = text.partition(":")
    return Batching.model_validate({"maxBatchSize": int(size), "maxLatency": latency or "5ms"})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="append", choices=sorted(PAYLOADS), help="default: every example model")
    ap.add_argument("--levels", default="1,2,4,8,16,32", help="requests in flight, one level after the other")
    ap.add_argument("--seconds", type=float, default=8.0, help="measured seconds per level (after 1 s warm-up)")
    ap.add_argument("--batching", default="16:100ms", help="SIZE:LATENCY of the batched run; 'off' skips it")
    ap.add_argument("--base-url", help="drive an already running replica (loopback) instead of starting one")
    ap.add_argument("--out", type=Path, help="write the rows as JSON here")
    args = ap.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    if not levels or any(not 0 < c <= MAX_IN_FLIGHT for c in levels):
        raise SystemExit(f"--levels: between 1 and {MAX_IN_FLIGHT} requests in flight")
    models = args.model or sorted(PAYLOADS)
    modes: list[tuple[str, Batching | None]] = [("plain", None)]
    if args.batching != "off":
        modes.append(("batched", parse_batching(args.batching)))
    rows: list[Level] = []
    startups: dict[str, float] = {}
    load_before = os.getloadavg()
    if args.base_url:
        for model in models:
            rows += measure(model, "as-served", loopback_only(args.base_url), levels, args.seconds)
    else:
        for model in models:
            entry = _entry(model)
            if not (entry.path / "model.pkl").is_file():
                raise SystemExit(f"models/{model}/model.pkl is missing: run README command 1, or "
                                 f"`reconciler pipeline run train --model {model}`")
            for mode, batching in modes:
                home = Path(tempfile.mkdtemp(prefix="serve-load-"))
                port = _free_port()
                proc, ready = start_server(entry, port, batching, home)
                startups[f"{model}/{mode}"] = round(ready, 1)
                print(f"{model} ({mode}): ready in {ready:.1f} s", flush=True)
                try:
                    rows += measure(model, mode, f"http://127.0.0.1:{port}", levels, args.seconds)
                finally:
                    stop_server(proc)
                    shutil.rmtree(home, ignore_errors=True)
    load_after = os.getloadavg()
    print()
    print(f"| model | batching | in flight | req/s | p50 ms | p95 ms | errors |  (load {load_before[0]:.1f} -> "
          f"{load_after[0]:.1f}, {os.cpu_count()} cores)")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        codes = ", ".join(f"{n} x {k}" for k, n in sorted(r.error_codes.items())) or "0"
        print(f"| {r.model} | {r.mode} | {r.concurrency} | {r.rps:.1f} | {r.p50_ms} | {r.p95_ms} | {codes} |")
    if args.out:
        args.out.write_text(json.dumps({"levels": [asdict(r) for r in rows], "startup_seconds": startups,
                                        "loadavg": {"before": load_before, "after": load_after},
                                        "cpus": os.cpu_count(), "seconds_per_level": args.seconds}, indent=1))


if __name__ == "__main__":
    main()
