"""The incremental plan equals the full-render plan, on random changes; its parts work as claimed."""

from __future__ import annotations

import json
import os
import random
import shutil

import git
import pytest

from reconciler.catalog.load import load_catalog
from reconciler.desired.state import desired_at
from reconciler.plan.outcomes import touched_models
from reconciler.plan.revisions import plan_revisions
from reconciler.render.cache import RenderCache
from reconciler.render.environment import render_environment
from reconciler.report.plan import plan_json, plan_markdown
from reconciler.source.git import checkout
from tests.conftest import TEMPLATE_MODELS, commit_all


def _edit(path, old, new):
    text = path.read_text()
    assert old in text, (old, path)
    path.write_text(text.replace(old, new, 1))


def _copy_model(root, src, name):
    shutil.copytree(root / "models" / src, root / "models" / name)
    _edit(root / "models" / name / "model.yaml", f"name: {src}", f"name: {name}")
    # the bentofile names the model too (a mismatch is a model error since `model new` exists)
    bentofile = root / "models" / name / "bentofile.yaml"
    bentofile.write_text(bentofile.read_text().replace(src, name))


CHANGES = {
    "replicas": lambda r, rng: _edit(r / "models/digits-classifier/model.yaml", "replicas: 2", f"replicas: {rng.randint(3, 5)}"),
    "code": lambda r, rng: (r / "models/iris-classifier/service.py").write_text(
        (r / "models/iris-classifier/service.py").read_text() + f"\n# {rng.random()}\n"),
    "overlay": lambda r, rng: _edit(r / "environments/staging/patches/deployment.yaml", "revisionHistoryLimit: 5",
                                    "revisionHistoryLimit: 3"),
    "price": lambda r, rng: _edit(r / "environments/pools.yaml", "hourlyPrice: 1.006", "hourlyPrice: 1.1"),
    "move": lambda r, rng: _edit(r / "models/digits-classifier/model.yaml", "staging: inferentia", "staging: gpu"),
    "ineligible": lambda r, rng: _edit(r / "models/iris-classifier/model.yaml", "prod: gpu", "prod: inferentia"),
    "policy": lambda r, rng: (r / "models/digits-classifier/model.yaml").write_text(
        (r / "models/digits-classifier/model.yaml").read_text() + "canary: {failureThreshold: 5}\n"),
    "metrics": lambda r, rng: _edit(r / "models/iris-classifier/metrics.json", '"accuracy": ', '"accuracy": 0.5, "old": '),
    "new-model": lambda r, rng: _copy_model(r, "iris-classifier", "iris-two"),
    "remove": lambda r, rng: shutil.rmtree(r / "models/extra-model"),
    "broken": lambda r, rng: _edit(r / "models/extra-model/model.yaml", "owner:", "ownr:"),
    "env-scale": lambda r, rng: _edit(r / "environments/prod/environment.yaml", "replicasFactor: 2", "replicasFactor: 3"),
    "docs": lambda r, rng: (r / "README.md").write_text("docs only\n"),
}


def _add_broken_models(root):
    """Two models broken at both revisions of the random change, which it never touches: one whose
    spec fails (every environment), one that renders to an invalid object (staging only, by a
    patch aimed at it)."""
    _copy_model(root, "digits-classifier", "broken-spec")
    _edit(root / "models/broken-spec/model.yaml", "owner:", "ownr:")
    _copy_model(root, "iris-classifier", "broken-render")
    (root / "environments/staging/patches/broken.yaml").write_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: any\n"
        "spec:\n  template:\n    spec:\n      bogusField: 1\n")
    _edit(root / "environments/staging/kustomization.yaml", "patches:\n",
          "patches:\n  - path: patches/broken.yaml\n    target: {kind: Deployment, name: broken-render-.*}\n")


def _errors(plan):
    return {env: sorted(n for n, m in e.models.items() if m.error) for env, e in plan.environments.items()}


@pytest.mark.parametrize("seed", range(5))
def test_incremental_plan_is_identical_to_the_full_render(template_repo, tmp_path, seed):
    rng = random.Random(seed)
    repo = git.Repo(template_repo)
    _copy_model(template_repo, "digits-classifier", "extra-model")  # a third model the change may leave alone
    _add_broken_models(template_repo)
    commit_all(repo, "three models and two broken ones")
    picked = rng.sample(sorted(CHANGES), 3)
    if "remove" in picked and "broken" in picked:
        picked.remove("broken")
    for name in picked:
        CHANGES[name](template_repo, rng)
    commit_all(repo, "random change: " + ", ".join(picked))

    full = plan_revisions(template_repo, "HEAD~1", "HEAD", full=True)
    errors = _errors(full)
    assert all("broken-spec" in names for names in errors.values()), errors  # the pre-existing errors are there
    assert "broken-render" in errors["staging"] and "broken-render" not in errors["prod"], errors
    cache = RenderCache(tmp_path / "cache")
    cold = plan_revisions(template_repo, "HEAD~1", "HEAD", cache=cache)
    warm = plan_revisions(template_repo, "HEAD~1", "HEAD", cache=cache)
    assert plan_json(cold) == plan_json(full), picked
    assert plan_json(warm) == plan_json(full), picked
    assert plan_markdown(warm) == plan_markdown(full)
    assert cache.hits > 0 or not any(e.models for e in full.environments.values())
    # the base rendered by another command (as `hydrate` on main leaves it), then the plan
    recorded = RenderCache(tmp_path / "recorded")
    desired_at(template_repo, "HEAD~1", cache=recorded)
    assert plan_json(plan_revisions(template_repo, "HEAD~1", "HEAD", cache=recorded)) == plan_json(full), picked


def test_untouched_models_are_read_only_when_they_failed_or_were_never_seen(template_repo, tmp_path, monkeypatch):
    from reconciler.plan import revisions

    repo = git.Repo(template_repo)
    _copy_model(template_repo, "digits-classifier", "extra-model")
    _add_broken_models(template_repo)
    commit_all(repo, "base")
    CHANGES["code"](template_repo, random.Random(0))
    commit_all(repo, "iris code")
    cache = RenderCache(tmp_path / "cache")
    desired_at(template_repo, "HEAD~1", cache=cache)  # records every model's outcome at the base
    scopes = []
    real = revisions.open_state
    monkeypatch.setattr(revisions, "open_state", lambda root, rev, models, stack: scopes.append(models) or
                        real(root, rev, models, stack))
    plan = plan_revisions(template_repo, "HEAD~1", "HEAD", cache=cache)
    assert scopes[-1] == {"iris-classifier", "broken-spec", "broken-render"}  # not extra-model, not digits
    assert plan_json(plan) == plan_json(plan_revisions(template_repo, "HEAD~1", "HEAD", full=True))
    # a fixed model is recorded fixed: the next plan does not read it again
    scopes.clear()
    shutil.rmtree(template_repo / "models/broken-spec")
    commit_all(repo, "remove the broken model")
    plan_revisions(template_repo, "HEAD~1", "HEAD", cache=cache)
    assert "broken-spec" in scopes[-1]  # removed: touched
    plan_revisions(template_repo, "HEAD~2", "HEAD~1", cache=cache)
    assert scopes[-1] == {"iris-classifier", "broken-spec", "broken-render"}


def test_a_second_plan_on_the_same_base_reads_the_untouched_outcomes_as_one_set(template_repo, tmp_path, monkeypatch):
    """Once a plan has read every untouched model's outcome at a base, it keeps them as one set: the next plan
    of that base (another PR) reads one file, not one per model, and still finds the broken ones."""
    repo = git.Repo(template_repo)
    _copy_model(template_repo, "digits-classifier", "extra-model")
    _add_broken_models(template_repo)
    commit_all(repo, "base")
    CHANGES["code"](template_repo, random.Random(0))
    commit_all(repo, "iris code")
    cache = RenderCache(tmp_path / "cache")
    desired_at(template_repo, "HEAD~1", cache=cache)
    first = plan_json(plan_revisions(template_repo, "HEAD~1", "HEAD", cache=cache))
    reads = []
    real = RenderCache.outcome
    monkeypatch.setattr(RenderCache, "outcome", lambda self, key: reads.append(key) or real(self, key))
    assert plan_json(plan_revisions(template_repo, "HEAD~1", "HEAD", cache=cache)) == first
    assert reads == []
    assert first == plan_json(plan_revisions(template_repo, "HEAD~1", "HEAD", full=True))


def test_touched_models_scopes_by_model_folder():
    assert touched_models({"models/a/service.py", "models/b/model.yaml", "models/README.md"}) == {"a", "b"}
    assert touched_models({"README.md", "docs/x.md", ".github/workflows/pr.yaml"}) == set()
    for shared in ("environments/prod/environment.yaml", "environments/pools.yaml", "pipelines/common.py",
                   "images.lock.json"):
        assert touched_models({"models/a/x", shared}) is None


def test_a_cached_render_is_not_rendered_again(template_repo, tmp_path, monkeypatch):
    from reconciler.render import kustomize

    catalog = load_catalog(template_repo)
    images = {m: f"registry.test/{m}:0123456789ab" for m in catalog.models}
    cache = RenderCache(tmp_path / "cache")
    first = render_environment(catalog, "prod", images=images, cache=cache)
    assert cache.hits == 0 and set(first.models) == set(catalog.models)  # every model rendered, none cached

    def no_kustomize(*args, **kwargs):
        raise AssertionError("kustomize ran for a cached model")

    monkeypatch.setattr(kustomize, "build", no_kustomize)
    again = render_environment(catalog, "prod", images=images, cache=cache)
    assert cache.hits == len(catalog.models) and again.to_yaml() == first.to_yaml()  # every model from the cache
    # another input (the image) is another key: rendered, not taken from the cache
    monkeypatch.undo()
    other = render_environment(catalog, "prod", images={**images, "iris-classifier": "registry.test/iris:ffffffffffff"},
                               cache=cache)
    assert "registry.test/iris:ffffffffffff" in other.models["iris-classifier"].to_yaml()


def test_a_revision_is_read_from_git_objects_with_symlinks_modes_and_a_subset(template_repo):
    repo = git.Repo(template_repo)
    script = template_repo / "models/iris-classifier/run.sh"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    os.symlink("service.py", template_repo / "models/iris-classifier/link.py")
    sha = commit_all(repo, "script and link")
    with checkout(template_repo, sha) as tree:
        assert os.access(tree / "models/iris-classifier/run.sh", os.X_OK)
        assert os.readlink(tree / "models/iris-classifier/link.py") == "service.py"
        assert json.loads((tree / "models/iris-classifier/metrics.json").read_text())["dataset"] == "iris"
    with checkout(template_repo, sha, ["environments", "models/iris-classifier"]) as tree:
        assert (tree / "environments/pools.yaml").is_file() and (tree / "models/iris-classifier/model.yaml").is_file()
        assert not (tree / "models/digits-classifier").exists()


def _hydrate_branches(root, tmp_path):
    """`reconciler hydrate --branch-prefix rendered/` of HEAD, as the main workflow runs it (own cache)."""
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "RECONCILER_CACHE": str(tmp_path / "hydrate-cache")}
    done = subprocess.run([str(Path(sys.executable).parent / "reconciler"), "hydrate", "--branch-prefix", "rendered/",
                           "--rev", "HEAD", "--repo", str(root)], capture_output=True, text=True, env=env, check=False)
    return done


def test_a_plan_with_no_cache_reads_only_the_changed_model_when_the_base_was_hydrated(template_repo, tmp_path,
                                                                                       monkeypatch):
    from reconciler.plan import revisions

    repo = git.Repo(template_repo)
    _copy_model(template_repo, "digits-classifier", "extra-model")
    commit_all(repo, "base")
    assert _hydrate_branches(template_repo, tmp_path).returncode == 0
    CHANGES["code"](template_repo, random.Random(0))
    commit_all(repo, "iris code")
    scopes = []
    real = revisions.open_state
    monkeypatch.setattr(revisions, "open_state", lambda root, rev, models, stack: scopes.append(models) or
                        real(root, rev, models, stack))
    plan = plan_revisions(template_repo, "HEAD~1", "HEAD", cache=RenderCache(tmp_path / "empty"))
    # the base's rendered/<env> branches say every model rendered clean there: nothing else is read
    assert scopes[-1] == {"iris-classifier"}
    assert plan_json(plan) == plan_json(plan_revisions(template_repo, "HEAD~1", "HEAD", full=True))
    # a branch of another commit proves nothing about this base: every model is read again
    CHANGES["code"](template_repo, random.Random(1))
    commit_all(repo, "iris code again")
    scopes.clear()
    plan = plan_revisions(template_repo, "HEAD~1", "HEAD", cache=RenderCache(tmp_path / "empty-2"))
    assert {"extra-model", "digits-classifier"} <= scopes[-1]
    assert plan_json(plan) == plan_json(plan_revisions(template_repo, "HEAD~1", "HEAD", full=True))


def test_a_broken_model_keeps_its_environment_unhydrated_so_the_plan_still_reports_it(template_repo, tmp_path):
    from reconciler.plan.outcomes import clean_environments

    repo = git.Repo(template_repo)
    _add_broken_models(template_repo)  # broken-spec fails everywhere, broken-render in staging only
    commit_all(repo, "base with broken models")
    _hydrate_branches(template_repo, tmp_path)  # exits non-zero: no environment is clean
    assert clean_environments(template_repo, "HEAD", ["dev", "staging", "prod"]) == set()
    CHANGES["code"](template_repo, random.Random(0))
    commit_all(repo, "iris code")
    plan = plan_revisions(template_repo, "HEAD~1", "HEAD", cache=RenderCache(tmp_path / "empty"))
    assert plan_json(plan) == plan_json(plan_revisions(template_repo, "HEAD~1", "HEAD", full=True))
    assert all("broken-spec" in names for names in _errors(plan).values())


def test_hydrated_metadata_of_another_renderer_or_environment_is_not_trusted(template_repo, tmp_path, monkeypatch):
    from reconciler.plan import outcomes

    commit_all(git.Repo(template_repo), "base")
    assert _hydrate_branches(template_repo, tmp_path).returncode == 0
    assert outcomes.clean_environments(template_repo, "HEAD", ["dev", "staging", "prod"]) == {"dev", "staging", "prod"}
    monkeypatch.setattr(outcomes, "renderer_id", lambda: "another renderer")
    assert outcomes.clean_environments(template_repo, "HEAD", ["dev", "staging", "prod"]) == set()
    monkeypatch.undo()
    # origin's copy counts as well as a local branch (a PR checkout has remotes/origin/rendered/*)
    repo = git.Repo(template_repo)
    for env in ("dev", "staging", "prod"):
        repo.git.update_ref(f"refs/remotes/origin/rendered/{env}", f"refs/heads/rendered/{env}")
        repo.git.update_ref("-d", f"refs/heads/rendered/{env}")
    assert outcomes.clean_environments(template_repo, "HEAD", ["dev", "prod"]) == {"dev", "prod"}


def test_a_fresh_runner_fetches_the_hydrated_base_from_origin_or_says_it_has_none(template_repo, tmp_path,
                                                                                  monkeypatch):
    """A PR job checks out one branch: no rendered/* refs. The plan fetches origin's, and reads only the change;
    where origin has none, the plan says so in one note with the fix."""
    from reconciler.plan import revisions

    origin = git.Repo(template_repo)
    _copy_model(template_repo, "digits-classifier", "extra-model")
    commit_all(origin, "base")
    assert _hydrate_branches(template_repo, tmp_path).returncode == 0
    CHANGES["code"](template_repo, random.Random(0))
    commit_all(origin, "iris code")
    runner_clone = tmp_path / "runner"
    git.Repo.clone_from(str(template_repo), runner_clone, multi_options=["--single-branch", "--branch", "main"])
    assert not any("rendered/" in r.path for r in git.Repo(runner_clone).refs)
    scopes = []
    real = revisions.open_state
    monkeypatch.setattr(revisions, "open_state", lambda root, rev, models, stack: scopes.append(models) or
                        real(root, rev, models, stack))
    plan = plan_revisions(runner_clone, "HEAD~1", "HEAD", cache=RenderCache(tmp_path / "empty"))
    assert scopes[-1] == {"iris-classifier"} and not plan.hints
    assert {f"origin/rendered/{e}" for e in ("dev", "staging", "prod")} <= {r.name for r in git.Repo(runner_clone).refs}

    bare_clone = tmp_path / "runner-2"  # origin without rendered/* branches
    for env in ("dev", "staging", "prod"):
        origin.git.branch("-D", f"rendered/{env}")
    git.Repo.clone_from(str(template_repo), bare_clone, multi_options=["--single-branch", "--branch", "main"])
    scopes.clear()
    plan = plan_revisions(bare_clone, "HEAD~1", "HEAD", cache=RenderCache(tmp_path / "empty-2"))
    assert {"extra-model", "digits-classifier"} <= scopes[-1]
    (note,) = [n for n in plan.hints if "no hydrated base" in n]
    untouched = len(TEMPLATE_MODELS)  # every model but iris, plus extra-model
    assert "reconciler hydrate --branch-prefix rendered/" in note and f"{untouched} untouched model(s)" in note
