"""docs/model-spec.md "Add a model in ten minutes", run command by command from the document itself.

A third model goes through scaffold, train (with DVC push), build, plan and render in a copy of the
template, and the only files that change are under models/<new>/: no platform code is edited.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import git
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "model-spec.md"
SECTION = "## Add a model in ten minutes"


def walkthrough_commands(text: str) -> list[str]:
    """The shell commands of the walkthrough's bash block, in order (comments dropped)."""
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.DOTALL)
    assert block, f"{DOC.name}: the walkthrough has no ```bash block"
    return [line for line in block.group(1).splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_the_walkthrough_adds_a_third_model_without_touching_platform_code(template_repo, tmp_path):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "BENTOML_HOME": str(tmp_path / "bentoml"), "RECONCILER_IMAGES_FILE": str(tmp_path / "images.json"),
           "RECONCILER_CONTAINER_ENGINE": "none", "DOCKER_CONFIG": str(tmp_path / "docker"),
           "COLUMNS": "200", "NO_COLOR": "1"}
    commands = walkthrough_commands(DOC.read_text(encoding="utf-8"))
    assert [c.split()[:2] for c in commands if c.startswith("reconciler")] == [
        ["reconciler", "model"], ["reconciler", "pipeline"], ["reconciler", "build"], ["reconciler", "plan"],
        ["reconciler", "render"]]
    outputs = {}
    for command in commands:
        done = subprocess.run(command, shell=True, cwd=template_repo, env=env, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, f"`{command}` failed:\n{done.stdout}\n{done.stderr}"
        outputs[" ".join(command.split()[:2])] = done.stdout + done.stderr

    folder = template_repo / "models" / "wine-classifier"
    spec = yaml.safe_load((folder / "model.yaml").read_text())
    bentofile = yaml.safe_load((folder / "bentofile.yaml").read_text())
    assert (spec["name"], spec["service"], spec["owner"]) == (
        "wine-classifier", "service.py:WineClassifier", "data-science@example.com")
    assert (bentofile["name"], bentofile["service"], bentofile["labels"]["gitops.ml/model"]) == (
        "wine-classifier", "service.py:WineClassifier", "wine-classifier")
    assert "class WineClassifier" in (folder / "service.py").read_text()
    assert "iris" not in (folder / "model.yaml").read_text().split("description:")[0]

    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["dataset"] == "wine" and metrics["accuracy"] >= 0.9
    assert "pushed: the weights are in DVC remote 'local' (.dvc-storage)" in outputs["reconciler pipeline"]
    assert "wine-classifier" in outputs["reconciler build"]
    assert "new model" in outputs["reconciler plan"] and "wine-classifier" in outputs["reconciler plan"]
    rendered = list(yaml.safe_load_all(outputs["reconciler render"].split("\n✗")[0]))
    kinds = {o["kind"] for o in rendered if o and o["metadata"]["name"].startswith("wine-classifier")}
    assert {"Deployment", "Service"} <= kinds

    repo = git.Repo(template_repo)
    assert not repo.is_dirty(untracked_files=True), repo.git.status("--porcelain")
    changed = repo.git.diff("--name-only", "HEAD~1", "HEAD").splitlines()
    assert changed and all(p.startswith("models/wine-classifier/") for p in changed), changed
    assert {"models/wine-classifier/train.py", "models/wine-classifier/model.pkl.dvc",
            "models/wine-classifier/metrics.json"} <= set(changed)
