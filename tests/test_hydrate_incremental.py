"""`reconciler hydrate --branch-prefix` renders only what changed since the branch's source commit, and the
branch's tree is the one a full hydrate writes: checked on a random sequence of changes."""

from __future__ import annotations

import json
import random
import re
import shutil

import git
import pytest
from typer.testing import CliRunner

from reconciler.cli.main import app
from reconciler.plan.hydration import changed_models_since
from tests.conftest import TEMPLATE_MODELS, commit_all, copy_template

ENVS = ("dev", "staging", "prod")
runner = CliRunner()


def hydrate(root, prefix: str, *extra: str) -> str:
    result = runner.invoke(app, ["hydrate", "--repo", str(root), "--branch-prefix", prefix, *extra])
    assert result.exit_code == 0, result.output
    return result.output


def tree(repo: git.Repo, prefix: str, env: str) -> str:
    return repo.git.rev_parse(f"{prefix}{env}:{env}")


def add_model(root, name: str) -> None:
    src, dest = root / "models/iris-classifier", root / "models" / name
    shutil.copytree(src, dest)
    for file in dest.iterdir():  # the model's name in its spec, bentofile and service
        if file.is_file() and file.suffix in (".yaml", ".py", ".json"):
            file.write_text(file.read_text().replace("iris-classifier", name))


def set_replicas(root, name: str, n: int) -> None:
    """Raise the model's maxReplicas by n (a change whatever it was)."""
    spec = root / "models" / name / "model.yaml"
    text = spec.read_text()
    text = re.sub(r"maxReplicas: (\d+)", lambda m: f"maxReplicas: {int(m.group(1)) + n}", text)
    spec.write_text(text)


def lock_entry(root, name: str, digit: str) -> None:
    lock = root / "images.lock.json"
    data = json.loads(lock.read_text()) if lock.exists() else {"images": {}}
    data["images"][f"registry.example.com/models/{name}:0123456789ab"] = "sha256:" + digit * 64
    lock.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


ALL = len(TEMPLATE_MODELS) + 4  # the template's models and the four added here


@pytest.fixture
def repo_of_models(tmp_path):
    root = copy_template(tmp_path / "repo")
    for i in range(4):
        add_model(root, f"m{i}")
    repo = git.Repo.init(root, initial_branch="main")
    commit_all(repo, "template + 4 models")
    return root, repo


def test_incremental_hydrate_equals_a_full_one_over_random_changes(repo_of_models):
    root, repo = repo_of_models
    rng = random.Random(20261207)
    first = hydrate(root, "rendered/")
    assert f"rendered all {ALL} models" in first
    models = ["m0", "m1", "m2", "m3"]
    ops = ["edit", "add", "remove", "lock", "overlay", "edit"]
    rng.shuffle(ops)  # every kind of change, in a random order, on random models
    for step, op in enumerate(ops):
        if op == "edit":
            set_replicas(root, rng.choice(models), rng.randint(1, 3))
        elif op == "add":
            models.append(f"n{step}")
            add_model(root, models[-1])
        elif op == "remove":
            gone = models.pop(rng.randrange(len(models)))
            shutil.rmtree(root / "models" / gone)
        elif op == "lock":
            lock_entry(root, rng.choice(models), str(step))
        else:  # outside models/: every model may render differently
            env_file = root / "environments/dev/environment.yaml"
            env_file.write_text(env_file.read_text() + f"# step {step}\n")
        commit_all(repo, f"step {step}: {op}")
        out = hydrate(root, "rendered/")
        hydrate(root, f"full{step}/", "--full")
        for env in ENVS:
            assert tree(repo, "rendered/", env) == tree(repo, f"full{step}/", env), (step, op, env, out)
        if op in ("edit", "lock"):
            assert "rendered 1 changed, 0 removed" in out, out
        elif op == "overlay":
            assert "rendered all" in out
    assert not repo.is_dirty(untracked_files=True)


def test_a_one_model_change_renders_and_writes_that_model_only(repo_of_models, tmp_path):
    root, repo = repo_of_models
    hydrate(root, "rendered/")
    before = {env: repo.git.ls_tree("-r", f"rendered/{env}", env) for env in ENVS}
    set_replicas(root, "m2", 3)
    commit_all(repo, "scale m2")
    out = hydrate(root, "rendered/")
    assert out.count("rendered 1 changed, 0 removed") == 3
    for env in ENVS:
        after = repo.git.ls_tree("-r", f"rendered/{env}", env)
        changed = {line.split("\t")[1] for line in set(after.splitlines()) ^ set(before[env].splitlines())}
        # the model's file, and the folder's metadata and README naming the new source commit
        assert changed == {f"{env}/m2.model.yaml", f"{env}/hydrator.metadata", f"{env}/README.md"}, changed
    again = hydrate(root, "rendered/")
    assert again.count("(unchanged)") == 3


def test_hydrate_keeps_what_else_the_branch_holds(repo_of_models):
    """The canary reports (reconciler.report.commit) live beside the environment's folder on its branch."""
    root, repo = repo_of_models
    hydrate(root, "rendered/")
    repo.git.checkout("rendered/prod")
    (root / "reports/iris").mkdir(parents=True)
    (root / "reports/iris/v1.md").write_text("# a report\n")
    repo.git.add("reports")
    repo.git.commit("-m", "report")
    repo.git.checkout("main")
    set_replicas(root, "m1", 2)
    commit_all(repo, "scale m1")
    hydrate(root, "rendered/")
    assert "reports/iris/v1.md" in repo.git.ls_tree("-r", "--name-only", "rendered/prod").split()


def test_the_image_lock_concerns_the_models_it_names(repo_of_models):
    root, repo = repo_of_models
    base = commit_all(repo, "base")
    lock_entry(root, "m3", "a")
    head = commit_all(repo, "lock m3")
    assert changed_models_since(root, base, head) == {"m3"}
    (root / "environments/pools.yaml").write_text((root / "environments/pools.yaml").read_text() + "\n# x\n")
    assert changed_models_since(root, head, commit_all(repo, "pools")) is None


def test_another_renderer_or_layout_hydrates_whole(repo_of_models):
    root, repo = repo_of_models
    hydrate(root, "rendered/")
    set_replicas(root, "m0", 3)
    commit_all(repo, "scale")
    out = hydrate(root, "rendered/", "--layout", "kustomize")
    assert out.count(f"rendered all {ALL} models") == 3
