"""Wait for the e2e canary to end, and check how it ended (the project's own `reconciler rollout status`).

    python .github/e2e/wait_rollout.py rollout iris-classifier e2e --from STABLE --expect promoted
    python .github/e2e/wait_rollout.py traffic iris-classifier --prometheus http://127.0.0.1:9090

`rollout` polls `reconciler rollout status MODEL ENV --format json` until the canary that replaces the
stable revision STABLE ends; exit 0 when it ended as expected, 1 otherwise (and on a pause, which would
otherwise hang the job). `traffic` waits until Prometheus has request counts for the model with the pod
labels the canary queries select on (proof that the rendered PodMonitor scrapes it).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass


@dataclass(frozen=True)
class Verdict:
    done: bool
    ok: bool
    message: str


def verdict(report: dict, old_stable: str, expect: str) -> Verdict:
    """What a rollout report says about the canary replacing `old_stable` (pure)."""
    phase, canary, stable = report.get("phase"), report.get("canary_revision"), report.get("stable_revision")
    where = f"phase {phase}, step {report.get('step')}/{len(report.get('steps') or [])}, " \
            f"weight {report.get('canary_weight')}% (achieved {report.get('achieved_weight')})"
    if canary in (None, old_stable) and stable == old_stable:
        return Verdict(False, False, f"no canary yet ({where})")
    ended = None
    if phase == "promoted" or (phase == "stable" and stable not in (None, old_stable)):
        ended = "promoted"
    elif phase == "rolled_back" and canary not in (None, old_stable):
        ended = "rolled_back"
    if ended is not None:
        ok = ended == expect
        return Verdict(True, ok, f"{canary or stable} {ended} (expected {expect}): {report.get('outcome')}")
    if report.get("paused"):
        return Verdict(True, False, f"paused ({report.get('pause_reason')}); expected {expect} ({where})")
    return Verdict(False, False, f"canary {canary} in progress ({where})")


def status_command(model: str, env: str, repo: str = ".") -> list[str]:
    """The project's command that reports the rollout (tests/test_e2e_jobs.py checks it exists)."""
    return ["reconciler", "rollout", "status", model, env, "--format", "json", "--repo", repo]


def rollout(args: argparse.Namespace) -> int:
    deadline = time.monotonic() + args.timeout
    last = None
    while time.monotonic() < deadline:
        proc = subprocess.run(status_command(args.model, args.env, args.repo), capture_output=True, text=True)
        if proc.returncode == 0:
            last = json.loads(proc.stdout)
            v = verdict(last, args.from_revision, args.expect)
            print(v.message, flush=True)
            if v.done:
                return 0 if v.ok else 1
        else:
            print(f"rollout status failed (exit {proc.returncode}): {proc.stderr.strip()}", flush=True)
        time.sleep(args.poll)
    print(f"timed out after {args.timeout:.0f}s; last report:\n{json.dumps(last, indent=2)}", flush=True)
    return 1


def traffic_query(model: str) -> str:
    return f'sum(rate(bentoml_service_request_total{{gitops_ml_model="{model}",gitops_ml_track="stable"}}[1m]))'


def traffic(args: argparse.Namespace) -> int:
    deadline = time.monotonic() + args.timeout
    query = traffic_query(args.model)
    while time.monotonic() < deadline:
        url = f"{args.prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": query})
        try:
            with urllib.request.urlopen(url, timeout=10) as response:  # the configured Prometheus
                result = json.loads(response.read())["data"]["result"]
        except (OSError, KeyError, ValueError) as exc:
            print(f"Prometheus not answering yet: {exc}", flush=True)
            result = []
        value = float(result[0]["value"][1]) if result else 0.0
        print(f"{query} = {value:.2f}/s", flush=True)
        if value > 0:
            return 0
        time.sleep(args.poll)
    print("no scraped traffic: check the PodMonitor, the Prometheus targets page and the loadgen logs", flush=True)
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("rollout")
    r.add_argument("model")
    r.add_argument("env")
    r.add_argument("--from", dest="from_revision", required=True, help="the stable revision the canary replaces")
    r.add_argument("--expect", choices=["promoted", "rolled_back"], required=True)
    r.add_argument("--repo", default=".")
    r.add_argument("--timeout", type=float, default=1200)
    r.add_argument("--poll", type=float, default=10)
    t = sub.add_parser("traffic")
    t.add_argument("model")
    t.add_argument("--prometheus", default="http://127.0.0.1:9090")
    t.add_argument("--timeout", type=float, default=300)
    t.add_argument("--poll", type=float, default=10)
    args = parser.parse_args(argv)
    return rollout(args) if args.command == "rollout" else traffic(args)


if __name__ == "__main__":
    sys.exit(main())
