"""docs/model-spec.md "Add a model in ten minutes", run command by command from the document itself.

A model in another framework (LightGBM, with its own lock) goes through scaffold, train (with DVC push),
build, plan and render in a copy of the template, and the only files that change are under models/<new>/:
no platform code is edited. Its Argo train workflow installs its lock, LightGBM included.
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


def test_the_walkthrough_adds_a_lightgbm_model_without_touching_platform_code(template_repo, tmp_path):
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

    name = "cancer-classifier"
    folder = template_repo / "models" / name
    spec = yaml.safe_load((folder / "model.yaml").read_text())
    bentofile = yaml.safe_load((folder / "bentofile.yaml").read_text())
    assert (spec["name"], spec["service"], spec["owner"]) == (
        name, "service.py:CancerClassifier", "data-science@example.com")
    assert (bentofile["name"], bentofile["service"], bentofile["labels"]["gitops.ml/model"]) == (
        name, "service.py:CancerClassifier", name)
    assert "class CancerClassifier" in (folder / "service.py").read_text()
    assert "iris" not in (folder / "model.yaml").read_text().split("description:")[0]
    # its own description; the source's architecture (a scikit-learn pipeline) is not kept for a LightGBM model
    assert spec["description"] == "Breast cancer diagnosis from 30 cell nucleus measurements (LightGBM)"
    assert "architecture" not in spec

    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["dataset"] == "breast_cancer" and metrics["accuracy"] >= 0.9
    # trained with LightGBM, in the environment of the model's own lock (the reconciler's has no lightgbm)
    assert f"(models/{name}/requirements.lock)" in outputs["reconciler pipeline"]
    assert "pushed: the weights are in DVC remote 'local' (.dvc-storage)" in outputs["reconciler pipeline"]
    assert name in outputs["reconciler build"]
    assert "new model" in outputs["reconciler plan"] and name in outputs["reconciler plan"]
    rendered = list(yaml.safe_load_all(outputs["reconciler render"].split("\n✗")[0]))
    kinds = {o["kind"] for o in rendered if o and o["metadata"]["name"].startswith(name)}
    assert {"Deployment", "Service"} <= kinds

    repo = git.Repo(template_repo)
    assert not repo.is_dirty(untracked_files=True), repo.git.status("--porcelain")
    changed = repo.git.diff("--name-only", "HEAD~1", "HEAD").splitlines()
    assert changed and all(p.startswith(f"models/{name}/") for p in changed), changed
    assert {f"models/{name}/train.py", f"models/{name}/requirements.lock", f"models/{name}/model.pkl.dvc",
            f"models/{name}/metrics.json"} <= set(changed)

    # the Argo train workflow installs exactly that lock (LightGBM in it) in every step
    render = subprocess.run([str(Path(sys.executable).with_name("reconciler")), "pipeline", "render", "train", "--model", name,
                             "--repo-url", "https://github.com/example/models.git"],
                            cwd=template_repo, env=env, capture_output=True, text=True, timeout=300)
    assert render.returncode == 0, render.stderr
    workflow = yaml.safe_load(render.stdout)
    scripts = {t["name"]: t["container"]["args"][0] for t in workflow["spec"]["templates"] if "container" in t}
    for step in ("train", "evaluate", "register"):
        assert f"pip install --quiet --disable-pip-version-check --no-deps -r /src/models/{name}/requirements.lock" \
            in scripts[step], scripts[step]
    assert "lightgbm==4.7.0" in (folder / "requirements.lock").read_text()
