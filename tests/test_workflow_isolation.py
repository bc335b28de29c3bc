"""The PR workflow isolates untrusted plans: a pull request from a fork gets no secrets, a read-only
token, no token on disk, and no script injection; the comment is written by a workflow that never
runs the pull request's code (docs/security.md)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

WORKFLOWS = Path(__file__).resolve().parents[1] / ".github" / "workflows"
EXPRESSION_IN_SCRIPT = re.compile(r"\$\{\{\s*github\.(event|head_ref)")


def load(path: Path) -> dict:
    doc = yaml.safe_load(path.read_text())
    doc["on"] = doc.pop(True, doc.get("on"))  # YAML 1.1 reads the key `on` as True
    return doc


def steps(doc: dict):
    for name, job in (doc.get("jobs") or {}).items():
        for step in job.get("steps") or []:
            yield name, job, step


def untrusted_problems(doc: dict, text: str) -> list[str]:
    """Why a workflow that runs a pull request's code is not isolated ([] if it is)."""
    problems = []
    triggers = doc["on"] if isinstance(doc["on"], dict) else {t: None for t in ([doc["on"]] if isinstance(doc["on"], str) else doc["on"])}
    if "pull_request_target" in triggers:
        problems.append("runs on pull_request_target (base secrets and a write token with the PR's code)")
    if "secrets." in text:
        problems.append("references secrets")
    if doc.get("permissions") != {"contents": "read"}:
        problems.append(f"workflow permissions are {doc.get('permissions')!r}, not {{contents: read}}")
    for name, job in (doc.get("jobs") or {}).items():
        perms = job.get("permissions")
        if perms is not None and (perms == "write-all" or any(v == "write" for v in dict(perms).values())):
            problems.append(f"job {name} grants write permissions {perms!r}")
    for name, _, step in steps(doc):
        if str(step.get("uses", "")).startswith("actions/checkout@"):
            if (step.get("with") or {}).get("persist-credentials") is not False:
                problems.append(f"job {name}: checkout keeps the token in .git/config (persist-credentials)")
        if EXPRESSION_IN_SCRIPT.search(str(step.get("run", ""))):
            problems.append(f"job {name}: a github.event expression inside a run script (script injection)")
    return problems


def comment_problems(doc: dict, text: str) -> list[str]:
    problems = []
    if set(doc["on"]) != {"workflow_run"}:
        problems.append(f"triggered by {sorted(doc['on'])}, not only workflow_run")
    if "secrets." in text:
        problems.append("references secrets")
    if doc.get("permissions") not in ({}, None):
        problems.append("workflow-level permissions are not empty")
    for name, _job, step in steps(doc):
        if str(step.get("uses", "")).startswith("actions/checkout@"):
            problems.append(f"job {name} checks out code")
        if EXPRESSION_IN_SCRIPT.search(str(step.get("run", ""))):
            problems.append(f"job {name}: a github.event expression inside a run script")
    for name, job in (doc.get("jobs") or {}).items():
        allowed = {"actions": "read", "pull-requests": "write"}
        if any(allowed.get(k) != v and v != "read" for k, v in (job.get("permissions") or {}).items()):
            problems.append(f"job {name} permissions {job.get('permissions')!r} go beyond pull-requests: write")
    return problems


def test_the_pr_workflow_isolates_untrusted_code():
    path = WORKFLOWS / "pr.yaml"
    doc = load(path)
    assert "pull_request" in doc["on"]
    assert untrusted_problems(doc, path.read_text()) == []


def test_the_comment_workflow_never_runs_the_pull_requests_code():
    path = WORKFLOWS / "pr-comment.yaml"
    doc = load(path)
    assert doc["on"]["workflow_run"]["workflows"] == [load(WORKFLOWS / "pr.yaml")["name"]]
    assert comment_problems(doc, path.read_text()) == []
    uploaded = [s for _, _, s in steps(load(WORKFLOWS / "pr.yaml")) if str(s.get("uses", "")).startswith("actions/upload-artifact")]
    downloaded = [s for _, _, s in steps(doc) if str(s.get("uses", "")).startswith("actions/download-artifact")]
    assert downloaded and downloaded[0]["with"]["name"] in {s["with"]["name"] for s in uploaded}


@pytest.mark.parametrize("edit, expected", [
    (lambda d: d["on"].update({"pull_request_target": None}), "pull_request_target"),
    (lambda d: d.update({"permissions": {"contents": "read", "pull-requests": "write"}}), "workflow permissions"),
    (lambda d: d["jobs"]["plan"].update({"permissions": {"contents": "write"}}), "grants write"),
    (lambda d: d["jobs"]["plan"]["steps"][0].pop("with", None), "persist-credentials"),
    (lambda d: d["jobs"]["plan"]["steps"].append({"run": "echo ${{ github.event.pull_request.title }}"}), "script injection"),
])
def test_the_check_fails_on_a_broken_workflow(edit, expected):
    doc = load(WORKFLOWS / "pr.yaml")
    edit(doc)
    assert any(expected in p for p in untrusted_problems(doc, yaml.safe_dump(doc)))


def test_the_check_sees_secrets():
    doc = load(WORKFLOWS / "pr.yaml")
    assert any("secrets" in p for p in untrusted_problems(doc, "env: ${{ secrets.TOKEN }}"))
