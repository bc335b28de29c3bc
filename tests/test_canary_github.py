"""A finished canary's report goes back to GitHub: a commit status (context reconciler/<env>/<model>) and a PR
comment with the decision table and the chart, against a local HTTP stand-in of GitHub's REST API
(statuses, commit -> pulls, issue comments) that records every request."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from reconciler.errors import ReconcilerError
from reconciler.report.github import publish, report_markdown, status_context
from reconciler.rollout.machine import Observations, step
from reconciler.rollout.metrics import VersionMetrics
from reconciler.rollout.state import Phase, Policy, RolloutState


class GitHubStandIn:
    """Answers like api.github.com for the three calls; ``requests`` keeps (method, path, body, auth)."""

    def __init__(self, pulls: list[int] | None = None, refuse: int | None = None) -> None:
        self.requests: list[tuple[str, str, object, str | None]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def _answer(self, code: int, body: object) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                outer.requests.append(("GET", self.path, None, self.headers.get("Authorization")))
                if self.path.endswith("/pulls"):
                    return self._answer(200, [{"number": n} for n in (pulls or [])])
                return self._answer(404, {"message": "Not Found"})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                outer.requests.append(("POST", self.path, body, self.headers.get("Authorization")))
                if refuse:
                    return self._answer(refuse, {"message": "Resource not accessible by integration"})
                return self._answer(201, {"id": len(outer.requests), **body})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def github():
    stand_in = GitHubStandIn(pulls=[42])
    yield stand_in
    stand_in.close()


def finished(error_rate: float) -> RolloutState:
    policy = Policy(steps=(50, 100), interval_seconds=60, min_requests=10, max_error_rate=0.05,
                    detect_error_increase=99, power=0.55)  # scripted intervals: the guard lets each through
    state = RolloutState("iris", "prod", policy, stable_revision="v1")
    _, state = step(state, Observations("v2"), 0)
    _, state = step(state, Observations("v2"), 10)
    now = 70.0
    for _ in range(6):
        obs = Observations("v2", stable=VersionMetrics("stable", requests_per_second=10, error_rate=0.001, p95_ms=100,
                                                       requests=600, errors=0.6),
                           canary=VersionMetrics("canary", requests_per_second=10, error_rate=error_rate, p95_ms=100,
                                                 requests=600, errors=600 * error_rate),
                           achieved_weight=float(state.canary_weight), promoted_ready=True)
        _, state = step(state, obs, now)
        now += 60
    return state


def test_promoted_canary_sets_a_success_status_and_comments_on_its_pull_request(github) -> None:
    state = finished(0.001)
    assert state.phase is Phase.promoted
    out = publish(state, repo="acme/models", sha="abc123", token="t0ken", api=github.url,
                  chart_url="https://example.com/artifacts/iris-prod.png")
    (m1, p1, status, auth), (m2, p2, _, _), (m3, p3, comment, _) = github.requests
    assert (m1, p1) == ("POST", "/repos/acme/models/statuses/abc123") and auth == "Bearer t0ken"
    assert status["state"] == "success" and status["context"] == "reconciler/prod/iris" == status_context(state)
    assert len(status["description"]) <= 140 and status["description"].startswith("promoted v2")
    assert (m2, p2) == ("GET", "/repos/acme/models/commits/abc123/pulls")
    assert (m3, p3) == ("POST", "/repos/acme/models/issues/42/comments") and out.pull_request == 42
    body = comment["body"]
    assert "`v1` -> `v2`" in body and "![rollout chart](https://example.com/artifacts/iris-prod.png)" in body
    assert "| decision |" in body and "| promote |" in body and "| advance | 100% |" in body


def test_rolled_back_canary_is_a_failure_status_with_the_reason(github) -> None:
    state = finished(0.2)
    assert state.phase is Phase.rolled_back
    publish(state, repo="acme/models", sha="def456", token="t", api=github.url, pull_request=7)
    status = github.requests[0][2]
    assert status["state"] == "failure" and "errors vs limit" in status["description"]
    assert [r[1] for r in github.requests] == ["/repos/acme/models/statuses/def456",
                                               "/repos/acme/models/issues/7/comments"]  # no PR lookup when given


def test_a_refusal_names_the_permission_to_grant() -> None:
    refusing = GitHubStandIn(refuse=403)
    try:
        with pytest.raises(ReconcilerError, match="HTTP 403") as info:
            publish(finished(0.001), repo="acme/models", sha="abc", token="t", api=refusing.url)
        assert "statuses: write" in str(info.value)
    finally:
        refusing.close()


def test_markdown_cells_cannot_break_the_table() -> None:
    state = finished(0.001)
    record = state.history[-1]
    state = state.evolve(history=(*state.history[:-1], record.__class__(**{**record.__dict__,
                                                                             "reasons": ("a | b\nc",)})))
    row = report_markdown(state).splitlines()[-1]
    assert "a \\| b ⏎ c" in row and row.count(" | ") == 6


def test_a_sync_pass_that_ends_a_canary_reports_it_with_the_chart(github, tmp_path) -> None:
    from types import SimpleNamespace

    from reconciler.report.github import report_finished
    from reconciler.rollout.machine import Promote

    state = finished(0.001)
    ended = SimpleNamespace(model="iris", environment="prod", state=state, actions=[Promote("v2", None)])
    running = SimpleNamespace(model="digits", environment="prod", state=state, actions=[])
    result = SimpleNamespace(commit="c0ffee" * 6, model_errors={}, objects=[], rollouts=[ended, running])
    env = {"RECONCILER_GITHUB_TOKEN": "t", "GITHUB_REPOSITORY": "acme/models", "RECONCILER_GITHUB_API": github.url,
           "RECONCILER_REPORT_DIR": str(tmp_path), "RECONCILER_REPORT_URL": "https://reports.example/r"}
    notes = report_finished(result, env)
    assert notes == [f"canary iris: reported to acme/models@{'c0ffee' * 2} (reconciler/prod/iris, PR #42)"]
    charts = list(tmp_path.glob("*.png"))
    assert len(charts) == 1 and charts[0].read_bytes()[:4] == b"\x89PNG"
    comment = github.requests[-1][2]["body"]
    assert f"https://reports.example/r/{charts[0].name}" in comment
    assert report_finished(result, {}) == []  # not configured: nothing is sent


# --------------------------------------------------------------------------- the chart in the rendered branch


def _git(*args: str, cwd=None) -> str:
    import subprocess

    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True,
                          env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t",
                               "GIT_COMMITTER_EMAIL": "t@x", "HOME": str(cwd or "."), "PATH": "/usr/bin:/bin"}
                          ).stdout.strip()


@pytest.fixture
def remote_with_rendered_branch(tmp_path):
    """A bare remote holding main and rendered/prod (as `reconciler hydrate --branch-prefix rendered/` left it),
    and the reconciler's clone of it, which has only main locally."""
    bare, seed, clone = tmp_path / "remote.git", tmp_path / "seed", tmp_path / "clone"
    _git("init", "--bare", "-b", "main", str(bare), cwd=tmp_path)
    _git("init", "-b", "main", str(seed), cwd=tmp_path)
    (seed / "README.md").write_text("models\n")
    _git("add", "-A", cwd=seed)
    _git("commit", "-m", "main", cwd=seed)
    _git("checkout", "--orphan", "rendered/prod", cwd=seed)
    _git("rm", "-rf", "--quiet", ".", cwd=seed)
    (seed / "prod").mkdir()
    (seed / "prod" / "kustomization.yaml").write_text("resources: [iris.yaml]\n")
    _git("add", "-A", cwd=seed)
    _git("commit", "-m", "Render prod", cwd=seed)
    _git("push", str(bare), "main", "rendered/prod", cwd=seed)
    _git("clone", "-q", str(bare), str(clone), cwd=tmp_path)
    return bare, clone


def test_the_report_is_committed_to_the_rendered_branch_and_pushed(remote_with_rendered_branch) -> None:
    from reconciler.report.commit import commit_report

    bare, clone = remote_with_rendered_branch
    state = finished(0.001)
    done = commit_report(clone, state, prefix="rendered/", remote="origin", source_commit="c0ffee" * 6)
    assert done.pushed and done.branch == "rendered/prod" and done.markdown == "reports/iris/v2.md"
    assert _git("rev-parse", "rendered/prod", cwd=bare) == done.commit
    # the manifests Argo CD / Flux sync are untouched; the report sits beside them under reports/
    files = set(_git("ls-tree", "-r", "--name-only", "rendered/prod", cwd=bare).splitlines())
    assert files == {"prod/kustomization.yaml", "reports/iris/v2.md", "reports/iris/v2.png"}
    markdown = _git("show", "rendered/prod:reports/iris/v2.md", cwd=bare)
    assert markdown.startswith("### Canary of `iris` in `prod`: promoted") and "![rollout chart](v2.png)" in markdown
    assert "Source-Commit: " + "c0ffee" * 6 in _git("log", "-1", "--format=%B", "rendered/prod", cwd=bare)
    import subprocess

    png = subprocess.run(["git", "show", "rendered/prod:reports/iris/v2.png"], cwd=bare, capture_output=True).stdout
    assert png[:4] == b"\x89PNG"
    # a second canary of the same model adds its report; the first stays
    later = state.evolve(canary_revision="v3")
    commit_report(clone, later, prefix="rendered/", remote="origin")
    files = set(_git("ls-tree", "-r", "--name-only", "rendered/prod", cwd=bare).splitlines())
    assert {"reports/iris/v2.md", "reports/iris/v3.md", "prod/kustomization.yaml"} <= files


def test_hydrating_the_branch_again_keeps_the_reports(remote_with_rendered_branch) -> None:
    from reconciler.report.commit import commit_report
    from reconciler.source.git import branch_worktree

    bare, clone = remote_with_rendered_branch
    commit_report(clone, finished(0.001), prefix="rendered/", remote="origin")
    # a writer that replaces the environment's folder keeps reports/ (hydrate itself only ever touches <env>/)
    with branch_worktree(clone, "rendered/prod", keep=("reports",)) as wt:
        assert not (wt.path / "prod").exists() and (wt.path / "reports" / "iris" / "v2.png").exists()
        (wt.path / "prod").mkdir()
        (wt.path / "prod" / "kustomization.yaml").write_text("resources: [iris.yaml, digits.yaml]\n")
        wt.commit("Render prod again")
    files = set(_git("ls-tree", "-r", "--name-only", "rendered/prod", cwd=clone).splitlines())
    assert files == {"prod/kustomization.yaml", "reports/iris/v2.md", "reports/iris/v2.png"}


def test_a_sync_pass_links_the_committed_chart_from_the_comment_and_status(github, remote_with_rendered_branch) -> None:
    from types import SimpleNamespace

    from reconciler.report.github import report_finished
    from reconciler.rollout.machine import Rollback

    bare, clone = remote_with_rendered_branch
    state = finished(0.2)
    ended = SimpleNamespace(model="iris", environment="prod", state=state, actions=[Rollback("v2", "errors")])
    result = SimpleNamespace(commit="c0ffee" * 6, model_errors={}, objects=[], rollouts=[ended])
    env = {"RECONCILER_GITHUB_TOKEN": "t", "GITHUB_REPOSITORY": "acme/models", "RECONCILER_GITHUB_API": github.url,
           "RECONCILER_REPORT_BRANCH_PREFIX": "rendered/"}
    notes = report_finished(result, env, clone)
    assert notes[0] == "canary iris: report committed to rendered/prod (reports/iris/v2.md, pushed)", notes
    at = _git("rev-parse", "rendered/prod", cwd=bare)
    status = next(body for method, path, body, _ in github.requests if path.endswith("/statuses/" + "c0ffee" * 6))
    assert status["state"] == "failure"
    assert status["target_url"] == f"https://github.com/acme/models/blob/{at}/reports/iris/v2.md"
    comment = github.requests[-1][2]["body"]
    assert f"](https://github.com/acme/models/blob/{at}/reports/iris/v2.png?raw=true)" in comment
    # a remote that refuses the push is a note, never a failed sync pass
    _git("remote", "set-url", "origin", str(bare) + "-gone", cwd=clone)
    notes = report_finished(result, env, clone)
    assert len(notes) == 1 and "report to GitHub failed" in notes[0] and "could not fetch" in notes[0]
