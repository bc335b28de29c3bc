"""`reconciler rollout ...` against the real API server (envtest: the state is a ConfigMap there), and the
report (JSON, rich, PNG)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from reconciler.rollout import store
from reconciler.rollout.machine import Observations, step
from reconciler.rollout.metrics import VersionMetrics
from reconciler.report.rollout import report_json, write_png
from reconciler.rollout.state import Phase, Policy, RolloutState
from reconciler.cli.main import app

runner = CliRunner()


def scripted_state() -> RolloutState:
    """A rollout that advanced twice on healthy metrics and then held once on an error spike."""
    state = RolloutState("iris", "prod", Policy(steps=(10, 50, 100), interval_seconds=60, max_p95_latency_ms=300,
                                                 detect_error_increase=99, power=0.55),
                         stable_revision="v1")
    _, state = step(state, Observations("v2"), 0)
    _, state = step(state, Observations("v2"), 10)
    for i, canary_err in enumerate((0.002, 0.05), start=1):
        obs = Observations("v2", stable=VersionMetrics("stable", requests_per_second=90, error_rate=0.001, p95_ms=110,
                                                       requests=5400, errors=5.4),
                           canary=VersionMetrics("canary", requests_per_second=10, error_rate=canary_err,
                                                 p95_ms=110 + i * 2, requests=600, errors=600 * canary_err),
                           achieved_weight=10.0 if i == 1 else 50.0)
        _, state = step(state, obs, 10 + 60 * i)
    return state


@pytest.fixture
def env_repo(tmp_path: Path, envtest, kube, namespace) -> tuple[Path, object, str]:
    env_dir = tmp_path / "repo" / "environments" / "prod"
    env_dir.mkdir(parents=True)
    (env_dir / "environment.yaml").write_text(
        f"name: prod\ncluster: {{context: envtest, kubeconfig: {envtest.kubeconfig}}}\nnamespace: {namespace}\n"
        "registry: r.example/models\npools: [cpu-general]\ncanary: true\n")
    return tmp_path / "repo", kube, namespace


def test_report_rows_have_weights_metrics_decision_and_why() -> None:
    data = report_json(scripted_state())
    assert [r["decision"] for r in data["history"]] == ["start", "advance", "advance", "hold"]
    advance, hold = data["history"][2], data["history"][3]
    assert (advance["stable_weight"], advance["canary_weight"]) == (50, 50)
    assert advance["canary"]["error_rate"] == 0.002 and advance["stable"]["p95_ms"] == 110
    assert any(r.startswith("FAILED errors vs limit: canary ") and "vs 1.000%" in r for r in hold["reasons"])
    assert hold["reasons"][1].startswith("decided by errors vs stable on 1200 canary requests")
    assert data["failed_checks"] == 1 and data["phase"] == "progressing"
    # the weight the router really achieved is reported beside the one the step set
    assert [r["achieved_weight"] for r in data["history"]][2:] == [10.0, 50.0] and data["achieved_weight"] == 50.0


def test_png_chart_is_written(tmp_path: Path) -> None:
    path = write_png(scripted_state(), tmp_path / "rollout.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def test_status_text_json_and_png(env_repo, tmp_path: Path) -> None:
    repo, kube, ns = env_repo
    store.save(kube, scripted_state(), ns, None)
    result = runner.invoke(app, ["rollout", "status", "iris", "prod", "--repo", str(repo)])
    assert result.exit_code == 0, result.output
    assert "iris" in result.output and "progressing" in result.output and "hold" in result.output
    assert "50/50" in result.output
    chart = tmp_path / "chart.png"
    result = runner.invoke(app, ["rollout", "status", "iris", "prod", "--repo", str(repo), "--format", "json",
                                 "--png", str(chart)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["canary_weight"] == 50 and data["history"][-1]["decision"] == "hold"
    assert chart.read_bytes()[:4] == b"\x89PNG"


def test_pause_resume_promote_abort_write_the_state(env_repo) -> None:
    repo, kube, ns = env_repo
    store.save(kube, scripted_state(), ns, None)
    args = ["iris", "prod", "--repo", str(repo), "--context", "envtest"]

    assert runner.invoke(app, ["rollout", "pause", *args]).exit_code == 0
    assert store.load(kube, "iris", ns).state.paused
    assert "already paused" in runner.invoke(app, ["rollout", "pause", *args]).output
    assert runner.invoke(app, ["rollout", "resume", *args]).exit_code == 0
    assert not store.load(kube, "iris", ns).state.paused

    result = runner.invoke(app, ["rollout", "promote", *args])
    assert result.exit_code == 0 and "next reconcile" in result.output
    state = store.load(kube, "iris", ns).state
    assert state.requested == "promote"
    actions, state = step(state, Observations("v2"), 1000)  # what the next reconcile does with it
    assert state.phase is Phase.promoting  # the new version scales to full size before the old goes
    actions, state = step(state, Observations("v2", promoted_ready=True), 1010)
    assert state.phase is Phase.promoted
    store.save(kube, state, ns, store.load(kube, "iris", ns).resource_version)

    result = runner.invoke(app, ["rollout", "abort", *args])
    assert result.exit_code == 1 and "no canary in progress (phase promoted)" in result.output


def test_unknown_rollout_and_bad_kubeconfig_fail_clearly(env_repo, tmp_path: Path) -> None:
    repo, _, _ = env_repo
    result = runner.invoke(app, ["rollout", "status", "nope", "prod", "--repo", str(repo)])
    assert result.exit_code == 1 and "no rollout recorded for nope in prod" in result.output
    result = runner.invoke(app, ["rollout", "status", "iris", "prod", "--repo", str(repo),
                                 "--kubeconfig", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 1 and "kubeconfig" in result.output.lower()
    result = runner.invoke(app, ["rollout", "status", "iris", "qa", "--repo", str(repo)])
    assert result.exit_code == 1 and "environments/qa/environment.yaml" in result.output
