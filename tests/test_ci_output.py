"""Output that survives CI logs: with no terminal, nothing is cut to 80 columns (or $COLUMNS).

rich assumes 80 columns when it writes to a pipe; tables then crop model names and fixes, panels
crop diff lines and the summary. The commands run here as CI runs them: a subprocess whose output is
a pipe, from the repository root, with COLUMNS unset and with COLUMNS=80.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import git
import pytest

from tests.conftest import commit_all, copy_template

RECONCILER = str(Path(sys.executable).parent / "reconciler")


@pytest.fixture(scope="module")
def moved(tmp_path_factory):
    """digits moves to a GPU in prod; iris asks for an Inferentia pool it cannot compile for (a long fix)."""
    root = copy_template(tmp_path_factory.mktemp("ci") / "repo")
    repo = git.Repo.init(root, initial_branch="main")
    commit_all(repo, "template")
    for path, old, new in [("models/digits-classifier/model.yaml", "prod: inferentia", "prod: gpu"),
                           ("models/iris-classifier/model.yaml", "prod: gpu", "prod: inferentia")]:
        (root / path).write_text((root / path).read_text().replace(old, new))
    commit_all(repo, "move")
    return root


@pytest.mark.parametrize("columns", [None, "80"])
def test_plan_in_a_ci_log_cuts_no_figure_fix_or_diff_line(moved, columns):
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    if columns:
        env["COLUMNS"] = columns
    done = subprocess.run([RECONCILER, "plan", "--base", "HEAD~1", "--head", "HEAD", "--no-check-artifacts"],
                          cwd=moved, env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert done.returncode == 3, done.stderr  # iris has errors
    out = done.stdout
    # the summary line, whole, with its figures
    assert ("models: 0 added, 1 changed, 0 removed, 1 with errors (kept as deployed) · objects: 2 created, "
            "0 configured, 2 pruned · cost: +$724.16 a month") in out
    # the fix, whole, on one line
    assert ("fix: serve iris-classifier from a cpu or gpu pool there (accelerator: in model.yaml), or add a "
            "recipe to pipelines/recipes/ (an entry <name>.yaml naming the architectures it compiles, and its "
            "conversion module): one accepting 'sklearn-scaler-logistic-regression'") in out
    # the move's field diff, whole lines
    assert ('spec.template.spec.containers[bento].image: "ghcr.io/example/models/digits-classifier:'
            in out and '-neuron" -> "ghcr.io/example/models/digits-classifier:' in out)
    assert ('spec.template.spec.tolerations: [{"effect": "NoSchedule", "key": "aws.amazon.com/neuron", "operator": '
            '"Equal", "value": "true"}] -> [{"effect": "NoSchedule", "key": "nvidia.com/gpu", "operator": "Equal", '
            '"value": "true"}]') in out
    assert "…" not in out  # rich's ellipsis: nothing was cropped
    # the most important environment first
    assert out.index("prod:") < out.index("staging:") < out.index("dev:")
