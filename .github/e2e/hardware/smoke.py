"""Smoke-test one built model image on this machine's hardware: run it with the device of its pool
kind, wait for /readyz, send one prediction, check the X-Model-Version header.

    python .github/e2e/hardware/smoke.py --image REF --kind gpu --input features --width 4 --hash HASH

--kind cpu needs only docker (the e2e-canary job runs it); gpu needs the NVIDIA driver and container
toolkit (`--gpus all`); inferentia needs the Neuron driver (`/dev/neuron0`). An accelerator image whose
artifact cannot load on the device fails its readiness probe (pipelines/serving.py) instead of falling
back to the CPU, so a ready container here is one that serves from its accelerator.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request

HEADER = "X-Model-Version"


def device_args(kind: str) -> list[str]:
    """`docker run` flags that give the container its pool kind's device (as the pool's pods get it). Pure."""
    if kind == "cpu":
        return []
    if kind == "gpu":
        return ["--gpus", "all"]
    if kind == "inferentia":
        # the Neuron runtime pins DMA buffers: the device, IPC_LOCK and an unlimited memlock (pools.yaml inf2)
        return ["--device", "/dev/neuron0", "--cap-add", "IPC_LOCK", "--ulimit", "memlock=-1:-1"]
    raise ValueError(f"unknown pool kind {kind!r}: use cpu, gpu or inferentia")


def parse_version(header: str | None) -> dict[str, str]:
    """`hash=<h>; commit=<c>; weights-md5=<m>` -> {"hash": h, "commit": c, "weights-md5": m}. Pure."""
    out: dict[str, str] = {}
    for part in (header or "").split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key:
            out[key] = value
    return out


def version_problems(version: dict[str, str], expected_hash: str | None) -> list[str]:
    problems = [f"{HEADER} has no {key}" for key in ("hash", "commit", "weights-md5")
                if version.get(key) in (None, "", "unknown")]
    if expected_hash and version.get("hash") and not expected_hash.startswith(version["hash"]) \
            and not version["hash"].startswith(expected_hash):
        problems.append(f"{HEADER} hash {version['hash']} is not the built model's {expected_hash}")
    return problems


def _http(url: str, body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # the local container
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image", required=True)
    parser.add_argument("--kind", required=True, choices=["cpu", "gpu", "inferentia"])
    parser.add_argument("--input", default="features", help="the API's input parameter name")
    parser.add_argument("--width", type=int, default=4, help="features per row")
    parser.add_argument("--hash", default=None, help="the model content hash the image must report")
    parser.add_argument("--port", type=int, default=3300)
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args(argv)

    run = ["docker", "run", "-d", "--rm", "-p", f"127.0.0.1:{args.port}:3000", *device_args(args.kind), args.image]
    print(" ".join(run), flush=True)
    container = subprocess.run(run, capture_output=True, text=True, check=True).stdout.strip()
    problems: list[str] = []
    try:
        base, deadline, ready = f"http://127.0.0.1:{args.port}", time.monotonic() + args.timeout, False
        while time.monotonic() < deadline and not ready:
            try:
                ready = _http(f"{base}/readyz")[0] == 200
            except OSError:
                pass
            if not ready:
                time.sleep(3)
        if not ready:
            problems.append(f"/readyz not 200 within {args.timeout:.0f}s (an accelerator image that cannot load "
                            "its artifact stays unready by design: see the container log below)")
        else:
            body = json.dumps({args.input: [[0.0] * args.width]}).encode()
            status, headers, payload = _http(f"{base}/predict", body)
            print(f"/predict -> {status} {payload[:200]!r}; {HEADER}: {headers.get(HEADER)}", flush=True)
            if status != 200:
                problems.append(f"/predict answered {status}")
            problems += version_problems(parse_version(headers.get(HEADER)), args.hash)
            if args.kind == "gpu":
                smi = subprocess.run(["docker", "exec", container, "nvidia-smi", "-L"], capture_output=True, text=True)
                print(smi.stdout or smi.stderr, flush=True)
                if smi.returncode != 0:
                    problems.append("nvidia-smi fails inside the -cuda image: no GPU reached the container")
    finally:
        logs = subprocess.run(["docker", "logs", "--tail", "80", container], capture_output=True, text=True)
        print(logs.stdout[-6000:], logs.stderr[-6000:], sep="\n", flush=True)
        subprocess.run(["docker", "rm", "-f", container], capture_output=True)
    for p in problems:
        print(f"problem: {p}", flush=True)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
