"""What a Prometheus that drips its answer costs one analysis pass: per-read timeout against the deadline.

A loopback server (tests/drip.py: no real Prometheus can be made to drip) sends each answer one byte every
`--interval` seconds. Measured, wall time:

1. httpx with `timeout=10` (a per-read timeout, what main had): one query (skipped with --skip-per-read:
   it lasts len(answer) x interval seconds).
2. reconciler.net with a `--deadline` second deadline: one query.
3. a pass's analysis: PrometheusAnalysis.collect of `--canaries` canaries x 2 tracks (6 instant queries and
   a range query each) through one PrometheusClient, as one sync pass makes them.

    .venv/bin/python benchmarks/deadline_bench.py --deadline 2 --canaries 5
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx

from reconciler import net
from reconciler.errors import MetricsError
from reconciler.rollout.prometheus import PrometheusAnalysis, PrometheusClient
from tests.drip import Drip


def timed(fn) -> tuple[float, str]:
    start = time.monotonic()
    try:
        fn()
        outcome = "answered"
    except (httpx.HTTPError, MetricsError) as exc:
        outcome = type(exc).__name__
    return time.monotonic() - start, outcome


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between bytes")
    parser.add_argument("--deadline", type=float, default=2.0)
    parser.add_argument("--canaries", type=int, default=5)
    parser.add_argument("--skip-per-read", action="store_true")
    args = parser.parse_args()
    with Drip(interval=args.interval) as drip:
        print(f"answer: {len(drip.response)} bytes at one byte per {args.interval:g} s")
        if not args.skip_per_read:
            seconds, outcome = timed(lambda: httpx.get(drip.url + "/api/v1/query", timeout=10))
            print(f"httpx timeout=10 (per read), one query: {seconds:.2f} s, {outcome}")
        with net.client(args.deadline) as client:
            seconds, outcome = timed(lambda: client.get(drip.url + "/api/v1/query"))
        print(f"reconciler.net deadline={args.deadline:g} s, one query: {seconds:.2f} s, {outcome}")
        before = drip.connections
        analysis = PrometheusAnalysis(PrometheusClient(drip.url, deadline=args.deadline))
        start = time.monotonic()
        outcomes = []
        for i in range(args.canaries):
            for track in ("stable", "canary"):
                outcomes.append(timed(lambda i=i, track=track: analysis.collect(
                    model=f"m{i}", track=track, now=time.time(), interval_seconds=300))[1])
        analysis.client.close()
        print(f"a pass's analysis, {args.canaries} canaries x 2 tracks: {time.monotonic() - start:.2f} s, "
              f"{outcomes.count('MetricsError')}/{len(outcomes)} inconclusive, "
              f"{drip.connections - before} connection(s) to Prometheus")


if __name__ == "__main__":
    main()
