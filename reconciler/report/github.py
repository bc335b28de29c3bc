"""A finished canary reported where the change came from: a GitHub commit status on the merged commit
(context ``reconciler/<env>/<model>``) and a comment on its pull request with the decision table and the
chart.

GitHub's REST API: ``POST /repos/{repo}/statuses/{sha}`` (state success | failure | pending, a
description of at most 140 characters, a target_url), ``GET /repos/{repo}/commits/{sha}/pulls`` (the
pull requests a commit belongs to) and ``POST /repos/{repo}/issues/{number}/comments``. The chart is a
PNG the caller has put somewhere a reviewer can open (a workflow artifact, or the rendered branch):
``chart_url`` links it.
"""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Mapping
from typing import Any

from reconciler.errors import ReconcilerError
from reconciler.rollout.state import Phase, RolloutState
from pathlib import Path
from reconciler import net
from reconciler.report.commit import blob_url, commit_report
from reconciler.report.markdown import report_markdown
from reconciler.report.rollout import write_png
from reconciler.rollout.machine import Promote, Rollback
import httpx

API = "https://api.github.com"


def status_context(state: RolloutState) -> str:
    return f"reconciler/{state.environment}/{state.model}"


def status_state(state: RolloutState) -> str:
    if state.phase is Phase.promoted:
        return "success"
    if state.phase is Phase.rolled_back:
        return "failure"
    return "pending"


DEADLINE = 20.0  # seconds for one whole GitHub API request


@dataclass
class Published:
    status: dict[str, Any]
    comment: dict[str, Any] | None
    pull_request: int | None


def publish(state: RolloutState, *, repo: str, sha: str, token: str, api: str = API, pull_request: int | None = None,
            chart_url: str | None = None, target_url: str | None = None, transport: Any = None) -> Published:
    """Write the commit status and the PR comment; the PR is looked up from the commit when not given."""

    headers = {"Authorization": f"Bearer {token}", "Accept": "application/vnd.github+json",
               "X-GitHub-Api-Version": "2022-11-28"}
    # each whole request within DEADLINE seconds: a stalled GitHub costs the pass that, not a hang
    with net.client(DEADLINE, base_url=api.rstrip("/"), headers=headers, transport=transport) as client:
        def call(method: str, path: str, body: Any = None) -> Any:
            try:
                response = client.request(method, path, json=body)
            except httpx.HTTPError as exc:
                raise ReconcilerError(f"GitHub API at {api} is unreachable: {exc}",
                                      fix="check the network and RECONCILER_GITHUB_API") from None
            if response.status_code >= 300:
                raise ReconcilerError(f"GitHub refused {method} {path}: HTTP {response.status_code} "
                                      f"{response.text[:200]}",
                                      fix="the token needs statuses: write and pull-requests: write on " + repo)
            return response.json()

        summary = (state.outcome or state.phase.value).replace("\n", " ")
        status = call("POST", f"/repos/{repo}/statuses/{sha}", {
            "state": status_state(state), "context": status_context(state),
            "description": summary if len(summary) <= 140 else summary[:139] + "…",
            **({"target_url": target_url or chart_url} if (target_url or chart_url) else {})})
        number = pull_request
        if number is None:
            pulls = call("GET", f"/repos/{repo}/commits/{sha}/pulls") or []
            number = pulls[0]["number"] if pulls else None
        comment = None
        if number is not None:
            comment = call("POST", f"/repos/{repo}/issues/{number}/comments",
                           {"body": report_markdown(state, chart_url)})
        return Published(status, comment, number)


def report_finished(result: Any, environ: Mapping[str, str], repo_root: Any = None) -> list[str]:
    """Publish every canary of a sync pass that ended in it (promoted or rolled back) on the pass's commit.

    Configured by ``RECONCILER_GITHUB_TOKEN`` and ``GITHUB_REPOSITORY`` (owner/name), optionally
    ``RECONCILER_GITHUB_API`` (GitHub Enterprise; ``GITHUB_SERVER_URL`` for its web links). Where the
    chart goes: with ``RECONCILER_REPORT_BRANCH_PREFIX`` (e.g. ``rendered/``) and the repository clone
    (``repo_root``), the markdown and PNG are committed to ``<prefix><env>`` under ``reports/<model>/``
    and pushed to ``RECONCILER_REPORT_REMOTE`` (default origin; empty: commit only), and the status and
    comment link them at that commit (reconciler.report.commit); else ``RECONCILER_REPORT_DIR`` (where
    the PNG is written, e.g. a volume a workflow uploads) and ``RECONCILER_REPORT_URL`` (the URL that
    directory is served at). Returns notes for the sync result; never raises."""

    token, repo = environ.get("RECONCILER_GITHUB_TOKEN"), environ.get("GITHUB_REPOSITORY")
    notes: list[str] = []
    if not token or not repo or not getattr(result, "commit", None):
        return notes
    failed = set(getattr(result, "model_errors", {}) or {}) | {
        o.model for o in getattr(result, "objects", []) if o.action.value == "failed"}
    for rollout in getattr(result, "rollouts", []) or []:
        if rollout.model in failed or not any(isinstance(a, (Promote, Rollback)) for a in rollout.actions):
            continue  # still running, or its state was not written: nothing ended
        chart_url = target_url = None
        try:
            folder, base = environ.get("RECONCILER_REPORT_DIR"), environ.get("RECONCILER_REPORT_URL")
            prefix = environ.get("RECONCILER_REPORT_BRANCH_PREFIX")
            if prefix and repo_root is not None:

                done = commit_report(Path(repo_root), rollout.state, prefix=prefix,
                                     remote=environ.get("RECONCILER_REPORT_REMOTE", "origin") or None,
                                     source_commit=result.commit)
                at = done.commit or done.branch
                server = environ.get("GITHUB_SERVER_URL") or "https://github.com"
                chart_url = blob_url(repo, at, done.chart, server, raw=True)
                target_url = blob_url(repo, at, done.markdown, server)
                notes.append(f"canary {rollout.model}: report committed to {done.branch} ({done.markdown}"
                             + (", pushed)" if done.pushed else ", not pushed)"))
            elif folder:

                name = f"{rollout.environment}-{rollout.model}-{(rollout.state.canary_revision or 'x')[-12:]}.png"
                name = "".join(c if c.isalnum() or c in "-._" else "-" for c in name)
                write_png(rollout.state, Path(folder) / name)
                chart_url = f"{base.rstrip('/')}/{name}" if base else None
            out = publish(rollout.state, repo=repo, sha=result.commit, token=token,
                          api=environ.get("RECONCILER_GITHUB_API") or API, chart_url=chart_url, target_url=target_url)
            notes.append(f"canary {rollout.model}: reported to {repo}@{result.commit[:12]} "
                         f"({status_context(rollout.state)}" + (f", PR #{out.pull_request})" if out.pull_request
                                                                 else ", no pull request found)"))
        except Exception as exc:  # a report must never fail the sync pass
            notes.append(f"canary {rollout.model}: report to GitHub failed: {exc}")
    return notes
