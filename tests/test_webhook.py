"""The reconciler's HTTP endpoint over real HTTP: signed GitHub push webhooks, /metrics, /healthz."""

from __future__ import annotations

import json

import httpx
import pytest

from reconciler.run.metrics import Metrics
from reconciler.run.webhook import ReconcilerHTTPServer, parse_push, signature, verify_signature

SECRET = b"s3cret"


@pytest.fixture
def endpoint():
    pushes = []
    metrics = Metrics()
    server = ReconcilerHTTPServer(("127.0.0.1", 0), secret=SECRET, branch="main", on_push=pushes.append,
                                  metrics=metrics.exposition, health=lambda: (True, "ok (leader)"),
                                  count=lambda o: metrics.webhooks.labels(o).inc()).start()
    yield server, pushes, metrics
    server.stop()


def post(server, body: bytes, sig: str | None, event: str = "push") -> httpx.Response:
    headers = {"X-GitHub-Event": event, "Content-Type": "application/json", "X-GitHub-Delivery": "d-1"}
    if sig is not None:
        headers["X-Hub-Signature-256"] = sig
    return httpx.post(f"{server.url}/webhook", content=body, headers=headers, timeout=5)


PUSH = json.dumps({"ref": "refs/heads/main", "after": "a" * 40, "forced": True}).encode()


def test_signature_check():
    good = signature(SECRET, PUSH)
    assert verify_signature(SECRET, PUSH, good)
    assert not verify_signature(SECRET, PUSH + b" ", good)
    assert not verify_signature(b"other", PUSH, good)
    assert not verify_signature(SECRET, PUSH, good.replace("sha256=", "sha1="))
    assert not verify_signature(SECRET, PUSH, None)
    assert not verify_signature(None, PUSH, good)  # no secret configured: refuse everything
    assert parse_push(PUSH).branch == "main" and parse_push(PUSH).forced


def test_bad_or_missing_signature_is_rejected(endpoint):
    server, pushes, metrics = endpoint
    assert post(server, PUSH, "sha256=" + "0" * 64).status_code == 401
    assert post(server, PUSH, None).status_code == 401
    assert post(server, PUSH, signature(b"wrong", PUSH)).status_code == 401
    assert pushes == []
    assert 'reconciler_webhook_requests_total{outcome="rejected"} 3.0' in httpx.get(f"{server.url}/metrics").text


def test_good_signature_push_is_accepted(endpoint):
    server, pushes, _ = endpoint
    response = post(server, PUSH, signature(SECRET, PUSH))
    assert response.status_code == 202
    assert [(p.branch, p.after, p.delivery) for p in pushes] == [("main", "a" * 40, "d-1")]


def test_other_branches_events_and_bad_payloads_do_not_trigger(endpoint):
    server, pushes, _ = endpoint
    other = json.dumps({"ref": "refs/heads/feature", "after": "b" * 40}).encode()
    assert post(server, other, signature(SECRET, other)).status_code == 202
    assert post(server, PUSH, signature(SECRET, PUSH), event="issues").status_code == 202
    assert post(server, b"{}", signature(SECRET, b"{}"), event="ping").status_code == 200
    assert post(server, b"[1]", signature(SECRET, b"[1]")).status_code == 400
    assert pushes == []


def test_metrics_and_healthz(endpoint):
    server, _, metrics = endpoint
    health = httpx.get(f"{server.url}/healthz")
    assert health.status_code == 200 and "leader" in health.text
    metrics.leader.set(1)
    text = httpx.get(f"{server.url}/metrics").text
    assert "reconciler_leader 1.0" in text and "reconciler_reconcile_duration_seconds" in text
    assert httpx.get(f"{server.url}/nope").status_code == 404


def test_webhook_wakes_the_loop(tmp_path):
    from reconciler.run.loop import Reconciler, RunConfig

    class NoKube:
        pass

    config = RunConfig(repo_url="unused", branch="main", workdir=tmp_path, environments=["dev"],
                       state_namespace="x", listen=("127.0.0.1", 0), webhook_secret=SECRET)
    rec = Reconciler(NoKube(), config)
    http = rec.start_http()
    try:
        assert not rec.wake.is_set()
        assert post(http, PUSH, signature(SECRET, PUSH)).status_code == 202
        assert rec.wake.is_set()
    finally:
        http.stop()
