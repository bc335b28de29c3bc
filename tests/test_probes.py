"""No client can starve the kubelet's probes, and no webhook client outlives its deadline.

Real loopback sockets against the reconciler's own servers (Reconciler.start_http, as `reconciler run`
starts them). The hostile clients connect from 127.0.0.1; the kubelet is 127.0.0.2 (Linux routes all
of 127/8 to loopback), as it is another address than an attacker's in a cluster. No timed assertion:
each wait has a generous client-side bound and asserts what the server did.
"""

from __future__ import annotations

import itertools
import json
import socket
import time
from contextlib import ExitStack

import httpx
import pytest
import yaml

from reconciler.run.health import HealthServer, ProbeLimits
from reconciler.run.loop import Reconciler, RunConfig
from reconciler.run.webhook import ReconcilerHTTPServer, ServerLimits, signature
from tests.test_webhook_hardening import PROJECT, closed_by_server

SECRET = b"s3cret"
PUSH = json.dumps({"ref": "refs/heads/main", "after": "c" * 40}).encode()
KUBELET = "127.0.0.2"


class NoKube:
    pass


@pytest.fixture
def reconciler(tmp_path):
    config = RunConfig(repo_url="unused", branch="main", workdir=tmp_path, environments=["dev"], state_namespace="x",
                       listen=("127.0.0.1", 0), probe_listen=("127.0.0.1", 0), webhook_secret=SECRET)
    rec = Reconciler(NoKube(), config)
    rec.start_http()
    yield rec
    rec.stop_http()


def kubelet() -> httpx.Client:
    return httpx.Client(transport=httpx.HTTPTransport(local_address=KUBELET), timeout=30)


def hold(address, count: int, stack: ExitStack, first: bytes = b"") -> list[socket.socket]:
    socks = []
    for _ in range(count):
        sock = stack.enter_context(socket.create_connection(address[:2], timeout=30))
        if first:
            sock.sendall(first)
        socks.append(sock)
    return socks


def test_probes_answer_under_idle_slow_and_many_connections(reconciler) -> None:
    web, probes = reconciler.http.server_address, reconciler.probes.server_address
    reconciler.last_pass = time.monotonic()  # the loop has turned
    with ExitStack() as stack, kubelet() as client:
        hold(web, 64, stack)  # idle: connected, nothing sent
        hold(probes, 64, stack)  # idle on the probe port itself
        slow = hold(web, 16, stack, b"POST /webhook HTTP/1.1\r\n") + hold(probes, 16, stack, b"GET /hea")
        liars = hold(web, 16, stack, b"POST /webhook HTTP/1.1\r\nContent-Length: 1048576\r\n\r\n0123456789")
        for i in range(50):
            for sock in slow:  # the slow ones keep dribbling between probes
                try:
                    sock.sendall(b"X")
                except OSError:
                    pass
            live = client.get(f"{reconciler.probes.url}/healthz")
            ready = client.get(f"{reconciler.probes.url}/readyz")
            assert (live.status_code, ready.status_code) == (200, 200), (i, live.text, ready.text)
        # the webhook port keeps slots for other clients too: one address holds at most max_per_client
        assert client.get(f"{reconciler.http.url}/healthz").status_code == 200
        assert reconciler.probes.evicted > 0  # past the per-client cap, its oldest idle connections were closed
        assert all(closed_by_server(s) for s in liars)


def test_liveness_is_the_loop_and_readiness_waits_for_its_first_turn(reconciler) -> None:
    with kubelet() as client:
        assert client.get(f"{reconciler.probes.url}/healthz").status_code == 200  # starting is alive
        assert client.get(f"{reconciler.probes.url}/readyz").status_code == 503
        reconciler.last_pass = time.monotonic()
        assert client.get(f"{reconciler.probes.url}/readyz").status_code == 200
        reconciler.last_pass = time.monotonic() - 10 * reconciler.config.interval  # the loop stopped turning
        live = client.get(f"{reconciler.probes.url}/healthz")
        assert live.status_code == 503 and "stale" in live.text
        assert client.post(f"{reconciler.probes.url}/healthz").status_code == 404
        assert client.get(f"{reconciler.probes.url}/webhook").status_code == 404


def test_an_idle_probe_connection_is_closed_after_its_head_timeout(reconciler) -> None:
    with socket.create_connection(reconciler.probes.server_address[:2], timeout=30) as sock:
        assert closed_by_server(sock)
    assert reconciler.probes.cut >= 1


# --------------------------------------------------------------------------- the liar, after any sequence

LIMITS = ServerLimits(read_timeout=1.0, header_timeout=1.0, body_timeout=1.0, max_connections=6, max_per_client=6)
BEFORE = {
    "push": lambda srv: httpx.post(f"{srv.url}/webhook", content=PUSH, timeout=30,
                                   headers={"X-GitHub-Event": "push", "X-Hub-Signature-256": signature(SECRET, PUSH)}),
    "healthz": lambda srv: httpx.get(f"{srv.url}/healthz", timeout=30),
    "bad-signature": lambda srv: httpx.post(f"{srv.url}/webhook", content=PUSH, timeout=30,
                                            headers={"X-GitHub-Event": "push", "X-Hub-Signature-256": "sha256=0"}),
    "too-large": lambda srv: raw(srv, b"POST /webhook HTTP/1.1\r\nContent-Length: 1000000000\r\n\r\nx"),
}


def raw(srv, request: bytes) -> bytes:
    with socket.create_connection(srv.server_address[:2], timeout=30) as sock:
        sock.sendall(request)
        return sock.recv(4096)


@pytest.fixture
def webhook():
    outcomes: list[str] = []
    srv = ReconcilerHTTPServer(("127.0.0.1", 0), secret=SECRET, branch="main", on_push=lambda p: None,
                               metrics=lambda: ("text/plain", b""), count=outcomes.append, limits=LIMITS).start()
    srv.outcomes = outcomes
    yield srv
    srv.stop()


@pytest.mark.parametrize("sequence", list(itertools.permutations(BEFORE, 2)), ids="-then-".join)
def test_a_client_announcing_1_mb_and_dribbling_is_cut_at_the_body_deadline_after_any_sequence(webhook, sequence):
    for name in sequence:
        BEFORE[name](webhook)
    with socket.create_connection(webhook.server_address[:2], timeout=30) as liar:
        liar.sendall(b"POST /webhook HTTP/1.1\r\nContent-Length: 1048576\r\nX-GitHub-Event: push\r\n\r\n0123456789")
        cut = False
        for _ in range(200):  # a byte every 0.1 s: each read returns before read_timeout; 20 s > the 1 s deadline
            try:
                liar.sendall(b"x")
            except OSError:
                cut = True
                break
            liar.settimeout(0.1)
            try:
                if liar.recv(1) == b"":
                    cut = True
                    break
            except socket.timeout:
                pass
            except ConnectionResetError:
                cut = True
                break
        assert cut, "the server kept reading the body past its deadline"
    assert "timeout_body" in webhook.outcomes


def test_the_cluster_manifest_probes_the_probe_port():
    docs = list(yaml.safe_load_all((PROJECT / "environments/reconciler/deployment.yaml").read_text()))
    container = next(c for d in docs if d and d.get("kind") == "Deployment"
                     for c in d["spec"]["template"]["spec"]["containers"])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert f"--probe-listen=0.0.0.0:{ports['probes']}" in container["args"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "probes"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "probes"}
    service = next(d for d in docs if d and d.get("kind") == "Service") if any(
        d and d.get("kind") == "Service" for d in docs) else yaml.safe_load(
        (PROJECT / "environments/reconciler/service.yaml").read_text())
    assert all(p["targetPort"] != "probes" for p in service["spec"]["ports"])  # probes are not exposed


TLS_HELLO = bytes.fromhex("16030100f8010000f40303") + bytes(32) + b"\x00\x02\x13\x01\x01\x00"


def test_idle_connections_from_many_addresses_cannot_fill_the_probe_listener() -> None:
    """10 addresses x 16 idle connections, past the listener's cap (64 here, 512 by default; the head timeout is
    long here so that no idle one times out while the test opens them): each new connection past the cap
    displaces the oldest idle one instead of being refused, so the kubelet's probe, which sends its request at
    once, is answered. Garbage (a TLS ClientHello on the plain-HTTP port, binary noise) is cut or answered 404."""
    limits = ProbeLimits(head_timeout=600, max_per_client=16, max_connections=64)
    probes = HealthServer(("127.0.0.1", 0), live=lambda: (True, "ok"), limits=limits).start()
    host, port = probes.server_address[:2]
    try:
        with ExitStack() as stack, kubelet() as client:
            for address in range(3, 13):
                for _ in range(16):
                    sock = stack.enter_context(socket.socket())
                    sock.bind((f"127.0.0.{address}", 0))
                    sock.settimeout(30)
                    sock.connect((host, port))
            hold(probes.server_address, 4, stack, TLS_HELLO)  # no head ever ends: idle, displaced like the rest
            noise = hold(probes.server_address, 4, stack, bytes(range(256)) + b"\r\n\r\n")
            answers = [client.get(f"{probes.url}/healthz").status_code for _ in range(20)]
            assert answers == [200] * 20
            assert probes.refused == 0 and probes.evicted >= 160 - 64
            for sock in noise:  # answered 404 and closed
                assert sock.recv(4096).startswith(b"HTTP/1.1 404") and closed_by_server(sock)
    finally:
        probes.stop()
