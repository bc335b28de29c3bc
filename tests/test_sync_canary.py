"""`reconciler sync` in an environment with canaries on: a changed model image starts a canary
instead of replacing the stable version, and what the canary holds is neither applied nor pruned.
On the real API server (envtest)."""

from __future__ import annotations

import json

import git
import pytest
from typer.testing import CliRunner

from reconciler.cli.main import app
from reconciler.results import ObjectRef
from tests.conftest import commit_all


@pytest.fixture(autouse=True)
def _images_file(tmp_path, monkeypatch):
    monkeypatch.setenv("RECONCILER_IMAGES_FILE", str(tmp_path / "images.json"))
    monkeypatch.delenv("RECONCILER_PROMETHEUS_URL", raising=False)


def sync_staging(repo, envtest, *extra: str) -> dict:
    result = CliRunner().invoke(app, ["sync", "staging", "--repo", str(repo), "--kubeconfig",
                                      str(envtest.kubeconfig), "--context", "envtest", "--format", "json", *extra])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return json.loads(result.stdout)


def get(envtest, kind: str, name: str, ns: str):
    return envtest.client().get(ObjectRef("v1" if kind == "ConfigMap" else "apps/v1", kind, ns, name))


def image_of(deployment: dict) -> str:
    return deployment["spec"]["template"]["spec"]["containers"][0]["image"]


def test_a_changed_image_starts_a_canary_and_keeps_stable(envtest_repo, envtest):
    ns = envtest_repo.namespaces["staging"]
    first = sync_staging(envtest_repo.root, envtest)
    assert first["summary"].get("created", 0) >= 4, first
    stable_before = get(envtest, "Deployment", "iris-classifier-gpu-a10g", ns)
    assert stable_before is not None

    service = envtest_repo.root / "models/iris-classifier/service.py"
    service.write_text(service.read_text() + "\n# a new model version\n")
    commit_all(git.Repo(envtest_repo.root), "iris: new version")
    second = sync_staging(envtest_repo.root, envtest)

    stable = get(envtest, "Deployment", "iris-classifier-gpu-a10g", ns)
    canary = get(envtest, "Deployment", "iris-classifier-gpu-a10g-canary", ns)
    assert image_of(stable) == image_of(stable_before), "the stable version must not be replaced without analysis"
    assert canary is not None and image_of(canary) != image_of(stable)
    state = get(envtest, "ConfigMap", "rollout-iris-classifier", ns)
    assert state is not None and json.loads(state["data"]["state.json"])["phase"] in {"initializing", "progressing"}
    # the other model, unchanged, had nothing to roll out
    assert get(envtest, "Deployment", "digits-classifier-inf2-canary", ns) is None
    # nothing the canary holds was pruned
    assert "pruned" not in second["summary"], second

    # without metrics the canary never promotes: another pass keeps stable on the old image
    sync_staging(envtest_repo.root, envtest)
    stable_after = get(envtest, "Deployment", "iris-classifier-gpu-a10g", ns)
    assert image_of(stable_after) == image_of(stable_before)


def test_a_dry_run_says_canaries_were_not_evaluated(envtest_repo, envtest):
    ns = envtest_repo.namespaces["staging"]
    sync_staging(envtest_repo.root, envtest)
    report = sync_staging(envtest_repo.root, envtest, "--dry-run")
    assert any("canaries were not evaluated" in n for n in report["notes"]), report["notes"]
    assert get(envtest, "Deployment", "iris-classifier-gpu-a10g-canary", ns) is None


def test_a_shared_prometheus_outage_holds_every_canary_and_is_reported_once(envtest_repo, envtest):
    """Issue 21: both models' canaries are analysed through one Prometheus that does not answer: each holds its
    weight (a measurement error, neither a pass nor a failure), and the pass reports the outage once, for the
    environment, naming both models; neither model's own line repeats the error."""
    import socket

    from reconciler.rollout.outage import POINTER

    with socket.socket() as s:  # a port nothing listens on: connections are refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    sync_staging(envtest_repo.root, envtest)
    for model in ("iris-classifier", "digits-classifier"):
        service = envtest_repo.root / f"models/{model}/service.py"
        service.write_text(service.read_text() + "\n# a new model version\n")
    commit_all(git.Repo(envtest_repo.root), "both: new versions")
    sync_staging(envtest_repo.root, envtest, "--prometheus-url", url)  # both canaries start (nothing to analyse yet)
    out = sync_staging(envtest_repo.root, envtest, "--prometheus-url", url, "--prometheus-deadline", "2")
    notes = out["notes"]
    outage = [n for n in notes if n.startswith("metrics outage:")]
    assert len(outage) == 1, notes
    assert url in outage[0] and "digits-classifier, iris-classifier" in outage[0], outage
    per_model = [n for n in notes if n.startswith("canary ")]
    assert per_model and all(url not in n for n in per_model), notes
    assert sum(POINTER in n for n in per_model) == 2, notes
    ns = envtest_repo.namespaces["staging"]
    for model in ("iris-classifier", "digits-classifier"):  # held: the stable versions stay
        state = json.loads(get(envtest, "ConfigMap", f"rollout-{model}", ns)["data"]["state.json"])
        assert state["phase"] in {"initializing", "progressing"} and state["promotions"] == 0
