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


def comment_job_problems(doc: dict) -> list[str]:
    """Why the job that writes plan.md (the PR comment) could be steered by the PR's code ([] if it cannot): it
    must install the reconciler from the base checkout only, plan the PR's checkout as data with --no-trace, and
    run nothing from the PR's checkout."""
    problems = []
    jobs = {name: job for name, job in (doc.get("jobs") or {}).items()
            if any("plan.md" in str(s.get("run", "")) for s in job.get("steps") or [])}
    if not jobs:
        return ["no job writes plan.md"]
    for name, job in jobs.items():
        checkouts = {(s.get("with") or {}).get("path"): s.get("with") or {} for s in job["steps"]
                     if str(s.get("uses", "")).startswith("actions/checkout@")}
        if set(checkouts) != {"base", "pr"}:
            problems.append(f"job {name}: checkouts {sorted(map(str, checkouts))}, not base/ and pr/")
        elif "base.sha" not in str(checkouts["base"].get("ref", "")):
            problems.append(f"job {name}: base/ is not the PR's base revision")
        for step in job["steps"]:
            run, where = str(step.get("run", "")), str(step.get("working-directory", ""))
            uses = str(step.get("uses", ""))
            if uses.startswith(".") or "pr/" in uses:
                problems.append(f"job {name}: uses an action from a checkout ({uses})")
            if re.search(r"\b(pip|uv|pipx)\b.*\binstall\b", run):
                if where != "base" or re.search(r"(-e\b|--editable|\bpr\b)", run):
                    problems.append(f"job {name}: installs from somewhere other than the base checkout: {run.strip()}")
            if where.startswith("pr") or re.search(r"(^|[\s;&|(])(\./)?pr/\S*", run) and "--repo pr" not in run:
                problems.append(f"job {name}: runs something from the PR's checkout: {run.strip()[:80]}")
            if re.search(r"\breconciler\s+plan\b", run):
                if "--no-trace" not in run:
                    problems.append(f"job {name}: plans without --no-trace (the trace runs the PR's model code)")
                if "--repo pr" not in run:
                    problems.append(f"job {name}: plans something other than the PR's checkout (--repo pr)")
    return problems


def test_the_job_that_writes_the_comment_never_installs_or_runs_the_pull_requests_code():
    doc = load(WORKFLOWS / "pr.yaml")
    assert comment_job_problems(doc) == []
    trace = doc["jobs"]["trace"]  # the PR's model code runs apart, and its result is a check, not plan.md
    assert not any("plan.md" in str(s.get("run", "")) or str(s.get("uses", "")).startswith("actions/upload-artifact")
                   for s in trace["steps"])
    assert any("reconciler plan --trace" in str(s.get("run", "")) for s in trace["steps"])


def _plan_step(doc: dict) -> dict:
    return next(s for s in doc["jobs"]["plan"]["steps"] if "plan.md" in str(s.get("run", "")))


def _install_step(doc: dict) -> dict:
    return next(s for s in doc["jobs"]["plan"]["steps"] if "pip install" in str(s.get("run", "")))


@pytest.mark.parametrize("edit, expected", [
    (lambda d: _install_step(d).update({"working-directory": "pr"}), "installs from somewhere other"),
    (lambda d: _install_step(d).update({"run": "pip install -e ."}), "installs from somewhere other"),
    (lambda d: _install_step(d).update({"run": "pip install -e pr"}), "installs from somewhere other"),
    (lambda d: _plan_step(d).update({"run": _plan_step(d)["run"].replace("--no-trace ", "")}), "without --no-trace"),
    (lambda d: _plan_step(d).update({"run": "bash pr/.ci/plan.sh > plan.md"}), "runs something from the PR"),
    (lambda d: d["jobs"]["plan"]["steps"].insert(0, {"uses": "./pr/.github/actions/plan"}), "uses an action"),
    (lambda d: d["jobs"]["plan"]["steps"][0]["with"].update({"ref": "${{ github.event.pull_request.head.sha }}"}),
     "not the PR's base revision"),
])
def test_the_comment_job_check_fails_when_the_pr_could_steer_it(edit, expected):
    doc = load(WORKFLOWS / "pr.yaml")
    edit(doc)
    assert any(expected in p for p in comment_job_problems(doc)), comment_job_problems(doc)


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
