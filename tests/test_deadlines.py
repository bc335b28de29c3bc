"""Every outbound call of the reconciler has a deadline for the whole request, not for each read.

The peer is tests/drip.py: a loopback server sending its answer one byte at a time (no real
Prometheus, GitHub, registry or webhook receiver can be made to drip). At 0.2 s a byte the answers
below take 30 s or more to arrive in full; every socket read returns within 0.2 s, so a per-read
timeout would never fire and each call would succeed after the whole drip. Each test asserts the
call failed as a deadline instead, and that the peer saw the client hang up before the end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import git
import httpx
import pytest

from reconciler import net
from reconciler.build.registry import RegistryClient
from reconciler.errors import MetricsError, ReconcilerError, RegistryError
from reconciler.report.github import publish
from reconciler.rollout.controller import _webhook
from reconciler.rollout.prometheus import PrometheusAnalysis, PrometheusClient
from reconciler.rollout.state import Policy, RolloutState
from reconciler.results import ObjectRef
from reconciler.run.notify import Notifier, commit_status
from tests.conftest import commit_all
from tests.drip import BODY, Drip, Flood, answer

REPO_ROOT = Path(__file__).resolve().parents[1]
SLOW = 0.2  # seconds a byte: BODY's answer alone takes ~30 s in full


def cut(drip: Drip) -> bool:
    """The client hung up before the whole answer arrived."""
    return all(sent < len(drip.response) for sent in drip.sent) and drip.connections > 0


@pytest.mark.parametrize("head_at_once", [False, True], ids=["status-line-dripped", "body-dripped"])
def test_a_dripping_peer_is_cut_at_the_deadline_of_the_whole_request(head_at_once: bool) -> None:
    with Drip(interval=SLOW, head_at_once=head_at_once) as drip, net.client(1.0) as client:
        with pytest.raises(net.DeadlineExceeded, match="1 s deadline"):
            client.get(drip.url + "/api/v1/query")
    assert cut(drip) and drip.connections == 1


def test_a_deadline_exceeded_is_an_httpx_error_and_a_prompt_peer_is_answered() -> None:
    assert issubclass(net.DeadlineExceeded, httpx.HTTPError)  # every `except httpx.HTTPError` keeps catching it
    with Drip(interval=0) as prompt, net.client(1.0) as client:
        response = client.get(prompt.url)
    assert response.status_code == 200 and response.content == BODY


def test_proxy_transports_get_the_deadline_too(monkeypatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    with net.client(1.0) as client:
        assert len(client.bounded) >= 2 and all(client.bounded)


def test_a_dripping_prometheus_is_asked_once_per_pass_and_is_inconclusive() -> None:
    with Drip(interval=SLOW) as drip:
        analysis = PrometheusAnalysis(PrometheusClient(drip.url, deadline=1.0))
        with pytest.raises(MetricsError, match="did not answer within its 1 s deadline") as info:
            analysis.collect(model="iris", track="stable", now=1e9, interval_seconds=60)
        assert "RECONCILER_PROMETHEUS_DEADLINE" in str(info.value)
        # the canary's queries of the same pass fail at once: the stalled Prometheus is not asked again
        with pytest.raises(MetricsError, match="not asked again this pass"):
            analysis.collect(model="iris", track="canary", now=1e9, interval_seconds=60)
        analysis.client.close()
    assert drip.connections == 1 and cut(drip)


def test_notifications_to_a_dripping_receiver_are_given_up_not_waited_for(caplog) -> None:
    with Drip(interval=SLOW) as drip:
        notifier = Notifier(github_repo="acme/models", github_token="t", github_api=drip.url,
                            webhook_url=drip.url + "/hook", deadline=1.0)
        assert notifier.status("abc123", commit_status("prod")) is False
        assert notifier.event("failure", "prod", "abc123", "x") is False
    assert drip.connections == 2 and cut(drip)
    assert "deadline" in caplog.text


def test_a_dripping_github_fails_the_report_with_the_deadline(monkeypatch) -> None:
    monkeypatch.setattr("reconciler.report.github.DEADLINE", 1.0)
    state = RolloutState("iris", "prod", Policy(), stable_revision="v1", canary_revision="v2")
    with Drip(interval=SLOW) as drip:
        with pytest.raises(ReconcilerError, match="deadline"):
            publish(state, repo="acme/models", sha="abc", token="t", api=drip.url, pull_request=1)
    assert drip.connections == 1 and cut(drip)


def test_a_dripping_registry_is_a_registry_error() -> None:
    manifest = answer(b"", content_type="application/vnd.oci.image.manifest.v1+json")
    with Drip(interval=SLOW, response=manifest + b" " * 200) as drip:
        with RegistryClient(f"127.0.0.1:{drip.port}", deadline=1.0) as client:
            with pytest.raises(RegistryError, match="deadline"):
                client.image_digest(f"127.0.0.1:{drip.port}/models/iris:abc")
    assert drip.connections == 1 and cut(drip)


def test_a_dripping_confirm_promotion_hook_is_not_a_confirmation() -> None:
    state = RolloutState("iris", "prod", Policy(), stable_revision="v1", canary_revision="v2")
    with Drip(interval=SLOW, response=answer(b"ok" * 40)) as drip:
        assert _webhook(drip.url, deadline=1.0)(state) is False
    assert drip.connections == 1 and cut(drip)


# --------------------------------------------------------------------------- a whole sync pass, on the real API server


def sync(repo, envtest, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "RECONCILER_IMAGES_FILE": str(repo.parent / "images.json")}
    env.pop("RECONCILER_PROMETHEUS_URL", None)
    return subprocess.run([str(Path(sys.executable).parent / "reconciler"), "sync", "staging", "--repo", str(repo), "--kubeconfig",
                           str(envtest.kubeconfig), "--context", "envtest", "--format", "json", *extra],
                          capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=600)


def test_a_sync_pass_with_a_dripping_prometheus_costs_one_deadline_and_holds_the_canary(envtest_repo, envtest) -> None:
    """Two passes start a canary of iris; the third analyses it against a Prometheus that drips. The pass ends
    (the subprocess' own timeout would fail the test long before the drip could finish), Prometheus was
    asked once (one connection, cut before the answer was complete), the analysis is inconclusive
    and the stable version stays."""
    ns = envtest_repo.namespaces["staging"]
    first = sync(envtest_repo.root, envtest)
    assert first.returncode == 0, first.stderr
    service = envtest_repo.root / "models/iris-classifier/service.py"
    service.write_text(service.read_text() + "\n# a new model version\n")
    commit_all(git.Repo(envtest_repo.root), "iris: new version")
    second = sync(envtest_repo.root, envtest)
    assert second.returncode == 0, second.stderr
    stable_image = image_of(envtest, ns, "iris-classifier-gpu-a10g")

    with Drip(interval=1.0) as drip:  # the answer would take ~2 minutes in full
        third = sync(envtest_repo.root, envtest, "--prometheus-url", drip.url, "--prometheus-deadline", "2")
    assert third.returncode == 0, third.stderr
    report = json.loads(third.stdout)
    notes = " ".join(report["notes"]) + json.dumps(report)
    assert "did not answer within its 2 s deadline" in notes, notes
    assert drip.connections == 1 and cut(drip), (drip.connections, drip.sent)
    assert image_of(envtest, ns, "iris-classifier-gpu-a10g") == stable_image


def image_of(envtest, ns: str, name: str) -> str:
    deployment = envtest.client().get(ObjectRef("apps/v1", "Deployment", ns, name))
    assert deployment is not None
    return deployment["spec"]["template"]["spec"]["containers"][0]["image"]


def test_a_peer_that_accepts_and_never_answers_costs_its_deadline() -> None:
    with Drip(interval=3600) as silent, net.client(1.0) as client:
        with pytest.raises(net.DeadlineExceeded):
            client.get(silent.url)
    assert silent.sent == [0]


@pytest.mark.parametrize("gzip", [False, True], ids=["huge-body", "gzip-bomb"])
def test_a_huge_answer_is_cut_at_the_byte_bound_not_read_into_memory(gzip: bool) -> None:
    """256 MiB at full speed (or a gzip bomb of 256 MiB in ~256 KB on the wire) well within the deadline: the
    request fails at the 1 MiB bound, a ResponseTooLarge (an httpx.ReadError every caller already catches)."""
    assert issubclass(net.ResponseTooLarge, httpx.HTTPError)
    with Flood(gzip=gzip) as flood, net.client(30.0, max_bytes=1024 * 1024) as client:
        with pytest.raises(net.ResponseTooLarge, match="1,048,576-byte bound"):
            client.get(flood.url)
    assert flood.sent < 64 * 1024 * 1024  # the client hung up: the peer could not send it all


def test_a_prometheus_flooding_its_answer_is_an_inconclusive_measurement(monkeypatch) -> None:
    monkeypatch.setattr(net, "MAX_BYTES", 1024 * 1024)
    with Flood() as flood, PrometheusClient(flood.url, deadline=30.0) as prometheus:
        with pytest.raises(MetricsError, match="larger than"):
            prometheus.query("up", at=1e9)


def test_a_dripping_argo_server_is_an_argo_error_at_the_deadline(monkeypatch) -> None:
    """hera talks to the Argo server with requests, which only times each read: its session goes through
    reconciler.net too."""
    from reconciler.build import argo

    monkeypatch.setattr(argo, "DEADLINE", 1.0)
    with Drip(interval=SLOW, head_at_once=True) as drip:
        with pytest.raises(ReconcilerError, match="1 s deadline") as info:
            argo.get_workflow("train-x", argo.ArgoConfig(host=drip.url, token="t"))
    assert "ARGO_SERVER" in info.value.fix
    assert cut(drip)
