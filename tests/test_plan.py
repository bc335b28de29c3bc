"""Plans between two commits of a real git repository, and hydration of rendered manifests."""

from __future__ import annotations

import json

import git
import pytest
import yaml
from typer.testing import CliRunner

from reconciler.cli.main import app
from reconciler.render.hydrate import read_documents
from reconciler.plan.revisions import plan_revisions
from reconciler.plan.changes import plan_objects
from reconciler.render.environment import with_content_hash
from reconciler.results import Action
from tests.conftest import TEMPLATE_MODELS, commit_all

runner = CliRunner()


def edit(path, old, new):
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new))


def test_identical_trees_plan_no_change(template_repo):
    plan = plan_revisions(template_repo, "HEAD", "HEAD")
    assert set(plan.environments) == {"dev", "staging", "prod"}
    assert all(env.models == {} for env in plan.environments.values())
    assert plan.ok


def test_a_commit_touching_one_model_lists_only_that_model(template_repo):
    repo = git.Repo(template_repo)
    edit(template_repo / "models/digits-classifier/model.yaml", "replicas: 2", "replicas: 3")
    commit_all(repo, "scale digits")
    plan = plan_revisions(template_repo, "HEAD~1", "HEAD")
    for name, env in plan.environments.items():
        assert env.changed_models == ["digits-classifier"], name
        assert list(env.models) == ["digits-classifier"]
        (result,) = [r for r in env.models["digits-classifier"].objects if r.action is not Action.unchanged]
        if name == "dev":  # dev scales idle models to zero: the fixed count is the ScaledObject's ceiling
            assert result.action is Action.configured and result.ref.kind == "ScaledObject"
            assert "-  maxReplicaCount: 1" in result.diff and "+  maxReplicaCount: 2" in result.diff
            continue
        assert result.action is Action.configured and result.ref.kind == "Deployment"
        assert "-  replicas: " in result.diff and "+  replicas: " in result.diff
    # reasons at field level, not file names
    assert plan.environments["prod"].models["digits-classifier"].reasons == ["model.yaml: serving.replicas 2 -> 3"]


def test_a_code_change_changes_the_model_hash_and_so_its_image(template_repo):
    repo = git.Repo(template_repo)
    service = template_repo / "models/iris-classifier/service.py"
    service.write_text(service.read_text() + "\n# tuned\n")
    commit_all(repo, "touch iris code")
    plan = plan_revisions(template_repo, "HEAD~1", "HEAD", ["prod"])
    iris = plan.environments["prod"].models["iris-classifier"]
    assert any("content hash changed" in r and "service.py" in r for r in iris.reasons)
    (deploy,) = [r for r in iris.objects if r.ref.kind == "Deployment"]
    assert deploy.action is Action.configured and "image:" in deploy.diff
    assert "digits-classifier" not in plan.environments["prod"].models


def test_a_commit_touching_an_environment_overlay_lists_every_model_there(template_repo):
    repo = git.Repo(template_repo)
    edit(template_repo / "environments/staging/patches/deployment.yaml", "revisionHistoryLimit: 5", "revisionHistoryLimit: 3")
    commit_all(repo, "staging history")
    plan = plan_revisions(template_repo, "HEAD~1", "HEAD")
    assert plan.environments["staging"].changed_models == list(TEMPLATE_MODELS)
    assert plan.environments["prod"].models == {} and plan.environments["dev"].models == {}


def test_the_working_tree_is_planned_against_head_by_default(template_repo):
    edit(template_repo / "environments/pools.yaml", "hourlyPrice: 0.758", "hourlyPrice: 0.76")
    plan = plan_revisions(template_repo, "HEAD", None)
    assert plan.head == "worktree"
    # a price change alters no manifest, but it changes what the models on that pool cost: only they have rows
    prod = plan.environments["prod"]
    assert set(prod.models) == {"digits-classifier"} and prod.changed_models == []
    assert prod.models["digits-classifier"].reasons == ["pools.yaml: inf2.hourlyPrice 0.758 -> 0.76"]
    assert prod.cost_delta == (round(4 * 0.002 * 730, 2),) * 2
    assert plan.environments["dev"].models == {}  # dev has no inf2 pool


def test_a_broken_model_is_reported_and_the_others_still_planned(template_repo):
    edit(template_repo / "models/iris-classifier/model.yaml", "owner:", "ownr:")
    edit(template_repo / "models/digits-classifier/model.yaml", "replicas: 2", "replicas: 5")
    plan = plan_revisions(template_repo, "HEAD", None, ["prod"])
    prod = plan.environments["prod"]
    assert not plan.ok
    assert "ownr" in prod.models["iris-classifier"].error and "unknown field" in prod.models["iris-classifier"].error
    # the broken model's live objects are skipped, never pruned
    assert {r.action for r in prod.models["iris-classifier"].objects} == {Action.skipped}
    assert prod.models["digits-classifier"].changed


def test_plan_objects_reports_created_configured_unchanged_pruned():
    def svc(name, port):
        return with_content_hash({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "n"},
                                  "spec": {"ports": [{"port": port}]}})

    results = {r.ref.name: r.action for r in plan_objects(
        [svc("new", 1), svc("same", 1), svc("changed", 2)], [svc("same", 1), svc("changed", 1), svc("gone", 1)])}
    assert results == {"new": Action.created, "same": Action.unchanged, "changed": Action.configured,
                       "gone": Action.pruned}


def test_cli_plan_markdown_and_json(template_repo):
    edit(template_repo / "models/digits-classifier/model.yaml", "replicas: 2", "replicas: 3")
    md = runner.invoke(app, ["plan", "--repo", str(template_repo), "--format", "markdown"])
    assert md.exit_code == 0, md.output
    assert "#### 1. `prod`" in md.stdout and "| `digits-classifier` |" in md.stdout and "```diff" in md.stdout
    js = runner.invoke(app, ["plan", "--repo", str(template_repo), "--format", "json"])
    data = json.loads(js.stdout)
    assert data["environments"]["dev"]["changedModels"] == ["digits-classifier"]


def test_cli_render_fails_with_the_model_error_but_prints_the_rest(template_repo):
    edit(template_repo / "models/iris-classifier/model.yaml", "name: iris-classifier", "name: Iris")
    result = runner.invoke(app, ["render", "dev", "--repo", str(template_repo)])
    assert result.exit_code == 3  # partial: the other model rendered
    assert "DNS-1123" in result.stderr and "models/iris-classifier/model.yaml:1" in result.stderr
    names = {d["metadata"]["name"] for d in yaml.safe_load_all(result.stdout) if d}
    assert "digits-classifier-cpu-general" in names and not any(n.startswith("iris") for n in names)


def test_hydrate_to_a_folder_writes_the_source_hydrator_layout(template_repo, tmp_path):
    out = tmp_path / "hydrated"
    result = runner.invoke(app, ["hydrate", "--repo", str(template_repo), "--out", str(out)])
    assert result.exit_code == 0, result.output
    for env in ("dev", "staging", "prod"):
        assert sorted(p.name for p in (out / env).iterdir()) == sorted(
            ["README.md", "hydrator.metadata", "manifest.yaml", *(f"{m}.model.yaml" for m in TEMPLATE_MODELS)])
        assert json.loads((out / env / "hydrator.metadata").read_text())["drySha"] == "worktree"
        docs = read_documents(out / env)
        # manifest.yaml: the environment's own objects; a file per model holds only that model's
        own = [d for d in yaml.safe_load_all((out / env / "manifest.yaml").read_text()) if d]
        assert {d["kind"] for d in own} <= {"Namespace", "PriorityClass", "ResourceQuota"}
        iris = [d for d in yaml.safe_load_all((out / env / "iris-classifier.model.yaml").read_text()) if d]
        assert {d["metadata"]["labels"]["gitops.ml/model"] for d in iris} == {"iris-classifier"}
        assert docs[0] == {"apiVersion": "v1", "kind": "Namespace", "metadata": {
            "name": f"models-{env}", "labels": {"app.kubernetes.io/managed-by": "model-gitops-reconciler",
                                                "gitops.ml/environment": env}}}
        models = {d["metadata"]["labels"].get("gitops.ml/model") for d in docs[1:] if d["kind"] != "PriorityClass"}
        assert models == set(TEMPLATE_MODELS)  # every model of the template, in every environment
        # the environment's own objects: the PriorityClass its overlay names (staging and prod)
        assert {d["metadata"]["name"] for d in docs if d["kind"] == "PriorityClass"} == (
            set() if env == "dev" else {"model-serving"})


def test_hydrate_kustomize_layout_is_an_option(template_repo, tmp_path):
    out = tmp_path / "hydrated"
    result = runner.invoke(app, ["hydrate", "--repo", str(template_repo), "--out", str(out), "--layout", "kustomize",
                                 "--env", "dev"])
    assert result.exit_code == 0, result.output
    assert yaml.safe_load((out / "dev" / "kustomization.yaml").read_text())["resources"] == sorted(
        [*(f"{m}.model.yaml" for m in TEMPLATE_MODELS), "manifest.yaml"])
    bad = runner.invoke(app, ["hydrate", "--repo", str(template_repo), "--out", str(out), "--layout", "helm"])
    assert bad.exit_code == 2 and "--layout plain" in bad.stderr


def test_hydrate_refuses_an_environment_with_an_invalid_model(template_repo, tmp_path):
    edit(template_repo / "models/digits-classifier/model.yaml", "replicas: 2", "replicas: -1")
    out = tmp_path / "hydrated"
    result = runner.invoke(app, ["hydrate", "--repo", str(template_repo), "--out", str(out)])
    assert result.exit_code == 1
    assert not out.exists() or not any(out.iterdir())


def test_hydrate_branches_commit_only_when_content_changes(template_repo):
    repo = git.Repo(template_repo)
    first = runner.invoke(app, ["hydrate", "--repo", str(template_repo), "--branch-prefix", "rendered/"])
    assert first.exit_code == 0, first.output
    assert {"rendered/dev", "rendered/staging", "rendered/prod"} <= {h.name for h in repo.heads}
    prod_files = repo.git.ls_tree("-r", "--name-only", "rendered/prod").split()
    assert sorted(prod_files) == sorted(["hydrator.metadata", "prod/README.md", "prod/hydrator.metadata",
                                         "prod/manifest.yaml", *(f"prod/{m}.model.yaml" for m in TEMPLATE_MODELS)])
    assert json.loads(repo.git.show("rendered/prod:hydrator.metadata"))["drySha"] == repo.head.commit.hexsha
    head_before = repo.heads["rendered/prod"].commit.hexsha
    second = runner.invoke(app, ["hydrate", "--repo", str(template_repo), "--branch-prefix", "rendered/"])
    assert "unchanged" in second.stdout and repo.heads["rendered/prod"].commit.hexsha == head_before
    edit(template_repo / "models/digits-classifier/model.yaml", "replicas: 2", "replicas: 3")
    commit_all(repo, "scale")
    runner.invoke(app, ["hydrate", "--repo", str(template_repo), "--branch-prefix", "rendered/"])
    assert repo.heads["rendered/prod"].commit.hexsha != head_before
    assert repo.heads["rendered/prod"].commit.message.strip().endswith(f"Source-Commit: {repo.heads['main'].commit.hexsha}")
    assert not repo.is_dirty(untracked_files=True)


@pytest.mark.parametrize("args", [["hydrate"], ["hydrate", "--out", "x", "--branch-prefix", "r/"]])
def test_hydrate_needs_exactly_one_target(template_repo, args):
    result = runner.invoke(app, [*args, "--repo", str(template_repo)])
    assert result.exit_code == 2 and "exactly one" in result.stderr


def test_plan_from_empty_creates_every_object(template_repo):
    plan = plan_revisions(template_repo, "empty", "HEAD", ["prod"])
    prod = plan.environments["prod"]
    # the environment's own objects (the PriorityClass its overlay names) are a group of their own
    assert prod.changed_models == ["(environment)", *TEMPLATE_MODELS]
    actions = {r.action for m in prod.models.values() for r in m.objects}
    assert actions == {Action.created}
    assert plan.base == "empty"
    assert prod.models["iris-classifier"].reasons == ["first deployment"]


def test_plan_shows_the_change_of_evaluation_metrics(template_repo):
    metrics = template_repo / "models/iris-classifier/metrics.json"
    data = json.loads(metrics.read_text())
    data["accuracy"] = round(data["accuracy"] - 0.05, 4)
    metrics.write_text(json.dumps(data))
    plan = plan_revisions(template_repo, "HEAD", None, ["dev"])
    (line,) = [r for r in plan.environments["dev"].models["iris-classifier"].reasons if r.startswith("evaluation:")]
    assert line.startswith("evaluation: accuracy ") and "(-0.05)" in line


def test_metric_changes_compares_numbers_only():
    from reconciler.plan.changes import metric_changes

    assert metric_changes({"accuracy": 0.9, "dataset": "a", "seed": 0}, {"accuracy": 0.95, "dataset": "b", "seed": 1}) == [
        "accuracy 0.9 -> 0.95 (+0.05)"]
    assert metric_changes({"f1": 0.5}, {}) == ["f1 removed"]
    assert metric_changes({"f1": 0.5}, {"f1": 0.5}) == []


def test_the_plan_says_why_a_model_costs_nothing_at_its_low_end(template_repo):
    """dev scales idle models to zero (environments/dev: serving.scaleToZero): its $0 at min replicas is that, not
    a missing price; prod keeps its minimum running and says nothing of the kind."""
    edit(template_repo / "models/digits-classifier/model.yaml", "replicas: 2", "replicas: 3")
    md = runner.invoke(app, ["plan", "--repo", str(template_repo), "--format", "markdown"])
    assert md.exit_code == 0, md.output
    sections = md.stdout.split("#### ")
    dev = next(s for s in sections if "`dev`" in s.splitlines()[0])
    prod = next(s for s in sections if "`prod`" in s.splitlines()[0])
    row = next(line for line in dev.splitlines() if line.startswith("| `digits-classifier` |"))
    assert "±$0.00 (min: scales to zero when idle) / +$" in row, row
    assert "at min replicas (1 model scales to zero when idle)" in dev, dev
    assert "scales to zero" not in prod and "scale to zero" not in prod, prod
    # the summary table at the top and the terminal's table say it too
    assert "at min replicas (1 model scales to zero when idle)" in sections[0], sections[0]
    text = runner.invoke(app, ["plan", "--repo", str(template_repo)], terminal_width=250)
    assert text.exit_code == 0, text.output
    assert "scales to zero when idle" in text.stdout, text.stdout


def test_a_batch_larger_than_the_concurrency_is_a_warning_naming_the_file_fields_and_fix(template_repo):
    """BentoML serves it, so the plan goes on; but a replica sized for 4 requests at once (the autoscaler adds
    one at 70 % of that) never fills a batch of 16: the plan says so, in the terminal and in the PR comment."""
    model = template_repo / "models/iris-classifier/model.yaml"
    edit(model, "  concurrency: 4\n", "  concurrency: 4\n  batching: {maxBatchSize: 16, maxLatency: 20ms}\n")
    md = runner.invoke(app, ["plan", "--repo", str(template_repo), "--format", "markdown"])
    assert md.exit_code == 0, md.output
    warning = ("models/iris-classifier/model.yaml (field 'serving.concurrency'): serving.concurrency 4 is below "
               "serving.batching.maxBatchSize 16 in environment 'prod'")
    assert f"warning: {warning}" in md.stderr, md.stderr
    assert "fix: raise serving.concurrency to 16 or more" in md.stderr
    assert "lower serving.batching.maxBatchSize to 4" in md.stderr
    assert "> [!WARNING]" in md.stdout and "serving.batching.maxBatchSize 16" in md.stdout.replace("\\", "")
    js = json.loads(runner.invoke(app, ["plan", "--repo", str(template_repo), "--format", "json"]).stdout)
    assert any(w.startswith(warning) for w in js["warnings"]), js["warnings"]
    # a replica that holds a full batch: nothing to say
    edit(model, "  concurrency: 4\n", "  concurrency: 16\n")
    js = json.loads(runner.invoke(app, ["plan", "--repo", str(template_repo), "--format", "json"]).stdout)
    assert js["warnings"] == [], js["warnings"]
