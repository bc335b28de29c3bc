"""The webhook and metrics endpoint against slow and greedy clients, over real loopback sockets.

No timed assertion: each test waits for the server to act (close, refuse) with a generous client-side
bound, and loops are bounded.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import httpx
import pytest
import yaml

from reconciler.run.webhook import ReconcilerHTTPServer, ServerLimits, signature

SECRET = b"s3cret"
PUSH = json.dumps({"ref": "refs/heads/main", "after": "b" * 40}).encode()
LIMITS = ServerLimits(read_timeout=1.0, header_timeout=1.0, body_timeout=1.0, max_connections=3)
PROJECT = Path(__file__).resolve().parents[1]


@pytest.fixture
def server():
    pushes, outcomes = [], []
    srv = ReconcilerHTTPServer(("127.0.0.1", 0), secret=SECRET, branch="main", on_push=pushes.append,
                               metrics=lambda: ("text/plain", b"up 1\n"), count=outcomes.append,
                               limits=LIMITS, metrics_token="tok").start()
    srv.pushes, srv.outcomes = pushes, outcomes
    yield srv
    srv.stop()


def connect(srv) -> socket.socket:
    sock = socket.create_connection(srv.server_address[:2], timeout=30)  # a bound, not an expectation
    return sock


def closed_by_server(sock: socket.socket) -> bool:
    """Read until the server closes the connection (b'' or a reset); False if it never does (30 s bound)."""
    try:
        while True:
            if not sock.recv(4096):
                return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def test_a_body_shorter_than_declared_is_cut_off(server):
    sock = connect(server)
    sock.sendall(b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576\r\nX-GitHub-Event: push\r\n\r\n0123456789")
    assert closed_by_server(sock)
    assert server.pushes == []


def test_headers_dribbled_byte_by_byte_hit_the_header_deadline(server):
    sock = connect(server)
    sock.sendall(b"POST /webhook HTTP/1.1\r\n")
    sent = 0
    closed = False
    for _ in range(400):  # bounded: 400 bytes at 0.05 s each would outlast header_timeout many times over
        try:
            sock.sendall(b"X")
        except OSError:
            closed = True
            break
        sent += 1
        sock.settimeout(0.05)
        try:
            if sock.recv(1) == b"":
                closed = True
                break
        except socket.timeout:
            pass
        except ConnectionResetError:
            closed = True
            break
    assert closed, "the server kept reading headers forever"
    assert "timeout_header" in server.outcomes


def test_connections_past_the_cap_get_503_at_once(server):
    idle = [connect(server) for _ in range(LIMITS.max_connections)]
    try:
        for sock in idle:  # make sure each is accepted and holds a slot (a request line, no headers end)
            sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        extra = None
        for _ in range(50):  # bounded: the accept loop may not have handed out every slot yet
            extra = connect(server)
            reply = extra.recv(4096)
            if reply.startswith(b"HTTP/1.1 503"):
                break
            extra.close()
            extra = None
        assert extra is not None, "no connection was refused past max_connections"
        assert "overloaded" in server.outcomes
    finally:
        for sock in idle:
            sock.close()
    # the slots come back: a normal request succeeds afterwards
    for _ in range(50):
        response = httpx.get(f"{server.url}/healthz", timeout=30)
        if response.status_code == 200:
            break
    assert response.status_code == 200


def test_a_repeated_delivery_is_acknowledged_without_work(server):
    headers = {"X-GitHub-Event": "push", "X-GitHub-Delivery": "abc-123", "X-Hub-Signature-256": signature(SECRET, PUSH)}
    first = httpx.post(f"{server.url}/webhook", content=PUSH, headers=headers, timeout=30)
    second = httpx.post(f"{server.url}/webhook", content=PUSH, headers=headers, timeout=30)
    assert first.status_code == 202 and second.status_code == 200 and "already handled" in second.text
    assert len(server.pushes) == 1 and server.outcomes.count("duplicate") == 1


def test_metrics_want_the_bearer_token_when_one_is_set(server):
    assert httpx.get(f"{server.url}/metrics", timeout=30).status_code == 401
    assert httpx.get(f"{server.url}/metrics", headers={"Authorization": "Bearer nope"}, timeout=30).status_code == 401
    ok = httpx.get(f"{server.url}/metrics", headers={"Authorization": "Bearer tok"}, timeout=30)
    assert ok.status_code == 200 and ok.text == "up 1\n"
    assert httpx.get(f"{server.url}/healthz", timeout=30).status_code == 200  # probes need no token


def test_the_cli_binds_loopback_and_the_cluster_manifest_binds_all_interfaces():
    from typer.main import get_command

    from reconciler.cli import app
    from reconciler.run.loop import RunConfig

    group = get_command(app)
    run = group.get_command(None, "run")  # the command table loads a command on first use
    listen = next(p for p in run.params if p.name == "listen")
    assert listen.default.startswith("127.0.0.1:")
    probes = next(p for p in run.params if p.name == "probe_listen")
    assert probes.default.startswith("127.0.0.1:")  # the probe port too; the cluster manifest says 0.0.0.0
    assert RunConfig.__dataclass_fields__["listen"].default[0] == "127.0.0.1"
    docs = list(yaml.safe_load_all((PROJECT / "environments/reconciler/deployment.yaml").read_text()))
    args = [a for d in docs if d and d.get("kind") == "Deployment"
            for c in d["spec"]["template"]["spec"]["containers"] for a in c.get("args", [])]
    assert "--listen=0.0.0.0:8080" in args
