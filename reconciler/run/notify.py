"""Notifications of the running reconciler: GitHub commit statuses and a Slack-compatible webhook.

* A commit status per environment on every commit a pass syncs (context ``reconciler/<env>``):
  ``pending`` when the pass starts, then ``success`` or ``failure``, linking to the environment's
  status page (``target_url``), as Argo CD's and Flux's notification controllers do.
* A webhook (Slack-compatible ``{"text": ...}``) on a sync failure, a promotion and a rollback.

What to send is decided by pure functions (`commit_status`, `message`); `Notifier` posts with
httpx, each request within a whole-request deadline (reconciler.net). A notification that cannot be delivered is logged, never raised: it must not stop a sync.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any
from reconciler import net
from reconciler.report import escape as esc
import httpx

log = logging.getLogger("reconciler.notify")

GITHUB_API = "https://api.github.com"
DESCRIPTION_LIMIT = 140  # GitHub truncates longer status descriptions


@dataclass(frozen=True)
class CommitStatus:
    state: str  # pending | success | failure | error
    context: str
    description: str
    target_url: str | None = None

    def body(self) -> dict[str, str]:
        body = {"state": self.state, "context": self.context,
                "description": esc.visible(self.description)[:DESCRIPTION_LIMIT]}
        if self.target_url:
            body["target_url"] = self.target_url
        return body


def commit_status(environment: str, *, result: Any = None, error: str | None = None,
                  target_url: str | None = None) -> CommitStatus:
    """The status of one environment's pass (result None: the pass is starting). Pure."""
    context = f"reconciler/{environment}"
    if result is None and error is None:
        return CommitStatus("pending", context, f"syncing to {environment}", target_url)
    if error is not None:
        first = error.strip().splitlines()[0] if error.strip() else "failed"
        return CommitStatus("failure", context, f"{environment}: {first}", target_url)
    summary = str(result.summary()) if hasattr(result, "summary") else ""
    if not result.ok:
        failed = sorted(getattr(result, "model_errors", {}) or {})
        what = f"models not synced: {', '.join(failed)}" if failed else "synced, not healthy"
        return CommitStatus("failure", context, f"{environment}: {what}; {summary}", target_url)
    return CommitStatus("success", context, f"{environment}: {summary}", target_url)


def message(event: str, environment: str, commit: str, detail: str = "") -> dict[str, str]:
    """A Slack-compatible webhook payload for a failure, promotion or rollback. Pure."""
    icon = {"failure": ":x:", "promotion": ":rocket:", "rollback": ":rewind:"}.get(event, ":information_source:")
    text = f"{icon} {event} in {esc.slack(environment)} at {esc.slack(commit[:12])}"
    return {"text": f"{text}: {esc.slack(detail)}" if detail else text}  # detail quotes model names and errors


@dataclass
class Notifier:
    """Delivers statuses and webhook messages; every field is optional (nothing configured: nothing sent)."""

    github_repo: str | None = None  # owner/name
    github_token: str | None = None
    github_api: str = GITHUB_API
    webhook_url: str | None = None
    status_url: str | None = None  # target_url template; {environment} and {commit} are filled in
    deadline: float = 10.0  # seconds for each whole request (reconciler.net): a stalled peer never holds the loop

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> "Notifier":
        env = os.environ if environ is None else environ
        return cls(github_repo=env.get("RECONCILER_GITHUB_REPO") or None,
                   github_token=env.get("RECONCILER_GITHUB_TOKEN") or env.get("GITHUB_TOKEN") or None,
                   github_api=env.get("RECONCILER_GITHUB_API") or GITHUB_API,
                   webhook_url=env.get("RECONCILER_WEBHOOK_URL") or None,
                   status_url=env.get("RECONCILER_STATUS_URL") or None)

    def _post(self, url: str, body: dict[str, Any], headers: dict[str, str]) -> bool:
        try:
            response = net.post(url, json=body, headers=headers, deadline=self.deadline)
        except httpx.HTTPError as exc:
            log.warning("notification to %s failed: %s", url.split("?")[0], exc)
            return False
        if response.status_code >= 300:
            log.warning("notification to %s refused: HTTP %s %s", url.split("?")[0], response.status_code,
                        response.text[:200])
            return False
        return True

    def _target(self, environment: str, commit: str) -> str | None:
        return self.status_url.format(environment=environment, commit=commit) if self.status_url else None

    def status(self, commit: str, status: CommitStatus) -> bool:
        if not (self.github_repo and self.github_token):
            return False
        headers = {"Authorization": f"Bearer {self.github_token}", "Accept": "application/vnd.github+json",
                   "X-GitHub-Api-Version": "2022-11-28"}
        return self._post(f"{self.github_api.rstrip('/')}/repos/{self.github_repo}/statuses/{commit}",
                          status.body(), headers)

    def event(self, event: str, environment: str, commit: str, detail: str = "") -> bool:
        if not self.webhook_url:
            return False
        return self._post(self.webhook_url, message(event, environment, commit, detail), {})

    # the loop's hooks
    def started(self, environment: str, commit: str) -> None:
        self.status(commit, commit_status(environment, target_url=self._target(environment, commit)))

    def finished(self, environment: str, commit: str, result: Any, error: str | None) -> None:
        status = commit_status(environment, result=result, error=error, target_url=self._target(environment, commit))
        self.status(commit, status)
        if status.state == "failure":
            self.event("failure", environment, commit, status.description)
        for note in getattr(result, "notes", []) or []:
            if "promoted" in note:
                self.event("promotion", environment, commit, note)
            elif "rolled back" in note or "rollback" in note:
                self.event("rollback", environment, commit, note)
