"""A steady load of inference requests for the e2e canary (standard library only: it runs in a plain
python image). Every WORKERS threads POST the iris features to TARGET, RATE requests per second in
total, and a summary of response codes is printed every REPORT seconds.

Environment: TARGET (URL), HOST (the Host header: the model's route hostname, `<model>.<namespace>.<routeDomain>`;
default: the URL's host), RATE (requests/s, default 20), WORKERS (default 4), REQUESTS (stop after
this many; default: run forever), REPORT (seconds between summaries, default 10), BODY (JSON body).
"""

from __future__ import annotations

import collections
import json
import os
import threading
import time
import urllib.error
import urllib.request

DEFAULT_BODY = json.dumps({"features": [[5.1, 3.5, 1.4, 0.2]]})


def one_request(target: str, body: bytes, timeout: float = 10.0, host: str | None = None) -> str:
    """The outcome of one request: the HTTP status as text, or the kind of connection failure."""
    headers = {"Content-Type": "application/json", **({"Host": host} if host else {})}
    request = urllib.request.Request(target, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # the configured target
            response.read()
            return str(response.status)
    except urllib.error.HTTPError as exc:
        return str(exc.code)
    except (urllib.error.URLError, OSError) as exc:
        return type(getattr(exc, "reason", exc)).__name__


def run(target: str, rate: float, workers: int, requests: int | None, report: float, body: bytes,
        out=print, host: str | None = None) -> collections.Counter:
    counts: collections.Counter = collections.Counter()
    lock = threading.Lock()
    budget = [requests]
    interval = workers / rate

    def worker() -> None:
        next_at = time.monotonic()
        while True:
            with lock:
                if budget[0] is not None:
                    if budget[0] <= 0:
                        return
                    budget[0] -= 1
            outcome = one_request(target, body, host=host)
            with lock:
                counts[outcome] += 1
            next_at += interval
            time.sleep(max(0.0, next_at - time.monotonic()))

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(workers)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        deadline = time.monotonic() + report
        for t in threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
        with lock:
            out(json.dumps({"target": target, "responses": dict(sorted(counts.items()))}), flush=True)
    return counts


def main() -> None:
    env = os.environ
    run(env["TARGET"], float(env.get("RATE", "20")), int(env.get("WORKERS", "4")),
        int(env["REQUESTS"]) if env.get("REQUESTS") else None, float(env.get("REPORT", "10")),
        env.get("BODY", DEFAULT_BODY).encode(), host=env.get("HOST") or None)


if __name__ == "__main__":
    main()
