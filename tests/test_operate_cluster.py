"""status, diff, history, rollback, the on-demand trigger and notifications on a REAL API server (envtest).

One environment (dev) of a copy of the template, reconciled by the loop's own `reconcile_once`, then
inspected and steered through the CLI commands an operator types. Notifications go to a local HTTP
stand-in of the GitHub statuses API and of a Slack webhook (no GitHub here: a recording server is the
only way to see what would be posted).
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import git
import pytest
from typer.testing import CliRunner

from reconciler.cli import app
from reconciler.results import ObjectRef
from reconciler.run import history
from reconciler.run.loop import GitMirror, Reconciler, RunConfig, reconcile_once
from reconciler.run.record import load_record, request_reconcile
from reconciler.run.notify import Notifier
from reconciler.run.status import gather

ENV = "dev"


class Recorder(BaseHTTPRequestHandler):
    """A stand-in of POST /repos/{owner}/{repo}/statuses/{sha} and of a Slack incoming webhook."""

    def do_POST(self) -> None:  # http.server API
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        self.server.calls.append((self.path, self.headers.get("Authorization"), body))  # type: ignore[attr-defined]
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def recorder():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    server.calls = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new))


def _commit(root: Path, message: str) -> str:
    repo = git.Repo(root)
    repo.git.add("-A")
    repo.git.commit("-m", message)
    return repo.head.commit.hexsha


def _cli(*args: str) -> object:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def test_status_diff_history_rollback_and_notifications(envtest_repo, envtest, kube, new_namespace, recorder):
    root, namespace = envtest_repo.root, envtest_repo.namespaces[ENV]
    state_ns = new_namespace("state")
    mirror = GitMirror(str(root), "main", root)  # the repository itself: history from its own commits
    url = f"http://127.0.0.1:{recorder.server_address[1]}"
    notify = Notifier(github_repo="acme/models", github_token="t0ken", github_api=url, webhook_url=f"{url}/slack",
                      status_url="https://reconciler.example/{environment}")
    common = ["--repo", str(root), "--kubeconfig", str(envtest.kubeconfig), "--context", "envtest"]
    state = ["--state-namespace", state_ns]

    # digits keeps a fixed replica count in dev (dev scales idle models to zero, and a ScaledObject's
    # Deployment replicas are KEDA's, never drift): the hand-scaling below must be drift
    _edit(root / "models/digits-classifier/model.yaml", "  replicas: 2\n", "  replicas: 2\n  scaleToZero: false\n")
    first = _commit(root, "digits: no scale to zero in dev")
    outcomes = reconcile_once(kube, root, first, mirror, [ENV], state_namespace=state_ns, notify=notify)
    assert [o.commit for o in outcomes] == [first] and outcomes[0].result.ok, outcomes[0].result.as_dict()

    # notifications: pending then success for the commit, context reconciler/dev, linking to the status
    statuses = [(path, auth, body) for path, auth, body in recorder.calls if "/statuses/" in path]
    assert [(p, a, b["state"], b["context"]) for p, a, b in statuses] == [
        (f"/repos/acme/models/statuses/{first}", "Bearer t0ken", "pending", "reconciler/dev"),
        (f"/repos/acme/models/statuses/{first}", "Bearer t0ken", "success", "reconciler/dev")]
    assert statuses[-1][2]["target_url"] == "https://reconciler.example/dev"

    # status right after: synced, no drift
    status = gather(kube, root, ENV, state_namespace=state_ns)
    assert (status.deployed, status.head, status.sync_state, status.drifted) == (first, first, "synced", False)
    assert {"iris-classifier", "digits-classifier"} <= set(status.models)
    assert all(m.objects > 0 and m.health in ("healthy", "progressing") for m in status.models.values())

    # drift: someone scales the digits Deployment by hand; only that field shows (server defaults do not)
    deployments = [o for o in kube.list("apps/v1", "Deployment", namespace) if o["metadata"]["name"].startswith("digits")]
    assert len(deployments) == 1
    name = deployments[0]["metadata"]["name"]
    desired_replicas = deployments[0]["spec"]["replicas"]
    kube.patch(ObjectRef("apps/v1", "Deployment", namespace, name), {"spec": {"replicas": desired_replicas + 4}},
               field_manager="kubectl-edit")
    status = gather(kube, root, ENV, state_namespace=state_ns)
    assert status.models["digits-classifier"].drift == [
        f"Deployment/{name}: spec.replicas: {desired_replicas + 4} -> {desired_replicas}"]
    assert not status.models["iris-classifier"].drift
    shown = _cli("status", ENV, "-f", "json", *common, *state)
    assert shown.exit_code == 0, shown.output
    [as_json] = json.loads(shown.stdout)
    assert (as_json["deployed"], as_json["sync"], as_json["drifted"]) == (first, "synced", True)
    markdown = _cli("status", ENV, "--format", "markdown", *common, *state)
    assert f"| `{ENV}` | `{first[:12]}` | `{first[:12]}` | synced | yes |" in markdown.stdout

    # diff of a git change: field level, from the server's dry run
    _edit(root / "models/digits-classifier/model.yaml", "replicas: 2", "replicas: 6")
    second = _commit(root, "digits: 6 replicas")
    diff = _cli("diff", ENV, "--rev", second, *common)
    assert diff.exit_code == 1, diff.output
    assert f"would change  Deployment/{namespace}/{name}" in diff.stdout
    assert f"spec.replicas: {desired_replicas + 4} -> 3" in diff.stdout
    assert "iris" not in diff.stdout.split("differ", 1)[1]
    as_json = json.loads(_cli("diff", ENV, "--rev", second, "-f", "json", *common).stdout)
    assert [o["changes"] for o in as_json["objects"]] == [[{"path": "spec.replicas", "live": desired_replicas + 4,
                                                             "desired": 3}]]

    # the loop takes the new commit; history lists both syncs
    outcomes = reconcile_once(kube, root, second, mirror, [ENV], state_namespace=state_ns, notify=notify)
    assert [o.commit for o in outcomes] == [second]
    listed = _cli("history", ENV, "-f", "json", *common, *state)
    assert [(e["id"], e["commit"], e["action"]) for e in json.loads(listed.stdout)] == [(1, first, "sync"), (2, second, "sync")]

    # rollback to history id 1: synced, recorded, pinned; the loop does not undo it at the same head
    back = _cli("rollback", ENV, "--to", "1", *common, *state)
    assert back.exit_code == 0, back.output
    assert f"rolled back {ENV} to {first[:12]}" in back.stdout
    assert kube.get(ObjectRef("apps/v1", "Deployment", namespace, name))["spec"]["replicas"] == desired_replicas
    record = load_record(kube, ENV, state_ns)
    assert (record.commit, record.pinned_head) == (first, second)
    assert reconcile_once(kube, root, second, mirror, [ENV], state_namespace=state_ns) == []
    assert [e.action for e in history.load(kube, ENV, state_ns)] == ["sync", "sync", "rollback"]
    assert gather(kube, root, ENV, state_namespace=state_ns, head=second).sync_state.startswith("rolled back")

    # an on-demand request re-syncs the rolled-back commit, once
    request_reconcile(kube, ENV, state_ns, "2026-12-01T22:30:00Z")
    outcomes = reconcile_once(kube, root, second, mirror, [ENV], state_namespace=state_ns)
    assert [o.commit for o in outcomes] == [first] and "re-syncing" in outcomes[0].reason
    assert reconcile_once(kube, root, second, mirror, [ENV], state_namespace=state_ns) == []

    # a newer commit ends the pin
    _edit(root / "models/digits-classifier/model.yaml", "replicas: 6", "replicas: 4")
    third = _commit(root, "digits: 4 replicas")
    outcomes = reconcile_once(kube, root, third, mirror, [ENV], state_namespace=state_ns, notify=notify)
    assert [o.commit for o in outcomes] == [third]
    record = load_record(kube, ENV, state_ns)
    assert (record.commit, record.pinned_head) == (third, "")

    # a failing commit: failure status and a webhook message
    _edit(root / f"environments/{ENV}/environment.yaml", "pools: [cpu-general]", "pools: [no-such-pool]")
    broken = _commit(root, "break dev")
    recorder.calls.clear()
    reconcile_once(kube, root, broken, mirror, [ENV], state_namespace=state_ns, notify=notify)
    states = [b["state"] for p, _, b in recorder.calls if p == f"/repos/acme/models/statuses/{broken}"]
    assert states == ["pending", "failure"]
    failed = [b["description"] for p, _, b in recorder.calls if p == f"/repos/acme/models/statuses/{broken}"][-1]
    assert failed.startswith(f"{ENV}: catalog: ")  # the commit status names the stage that failed
    [(path, _, slack)] = [c for c in recorder.calls if c[0] == "/slack"]
    assert slack["text"].startswith(f":x: failure in {ENV} at {broken[:12]}") and "no-such-pool" in slack["text"]


def test_the_running_reconciler_wakes_on_a_reconcile_request(envtest_repo, envtest, kube, new_namespace, tmp_path):
    root = envtest_repo.root
    state_ns = new_namespace("state")
    head = git.Repo(root).head.commit.hexsha
    reconcile_once(kube, root, head, GitMirror(str(root), "main", root), [ENV], state_namespace=state_ns)
    config = RunConfig(repo_url=str(root), branch="main", workdir=tmp_path / "mirror", environments=[ENV],
                       state_namespace=state_ns, listen=None)
    reconciler = Reconciler(kube, config)
    watcher = threading.Thread(target=reconciler.watch_requests, daemon=True)
    watcher.start()
    try:
        result = _cli("reconcile", ENV, "--repo", str(root), "--kubeconfig", str(envtest.kubeconfig), "--context", "envtest",
                      "--state-namespace", state_ns)
        assert result.exit_code == 0, result.output
        assert reconciler.wake.wait(60), "the watch did not see the request annotation"
        record = load_record(kube, ENV, state_ns)
        assert record.on_demand
        outcomes = reconciler.tick()
        assert [o.environment for o in outcomes] == [ENV] and "on-demand" in outcomes[0].reason
        assert not load_record(kube, ENV, state_ns).on_demand
    finally:
        reconciler.stop()
        watcher.join(timeout=60)


def test_commands_without_a_cluster_say_so_in_one_sentence_and_print_no_table(template_repo, tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_PORT", raising=False)
    for args in (["sync", ENV], ["sync", ENV, "--dry-run"], ["status"], ["diff", ENV], ["history", ENV],
                 ["rollout", "status", "iris-classifier", ENV]):
        result = CliRunner().invoke(app, [*args, "--repo", str(template_repo)])
        # the exit code table (reconciler/cli/exits.py): 1 failed; `diff` follows `kubectl diff` (2: no diff made)
        assert result.exit_code == (2 if args[0] == "diff" else 1), (args, result.output)
        assert result.stdout == "", (args, result.stdout)  # no table, no partial output
        first, fix = result.stderr.strip().splitlines()[:2]
        assert first == (f"error: no Kubernetes cluster to talk to: there is no kubeconfig at {tmp_path / 'no-kubeconfig'} "
                         "and this is not a pod in a cluster (KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT "
                         "are unset)"), args
        assert "run `reconciler plan`" in fix and "--kubeconfig" in fix


def test_a_dry_run_is_marked_in_title_and_summary(envtest_repo, envtest):
    result = _cli("sync", ENV, "--dry-run", "--repo", str(envtest_repo.root), "--kubeconfig", str(envtest.kubeconfig),
                  "--context", "envtest")
    assert result.exit_code == 0, result.output
    assert f"sync {ENV} ({envtest_repo.namespaces[ENV]}) [dry run]" in result.stdout
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("dry run: would create ") and "created" not in last
