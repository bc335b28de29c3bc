"""What the PR comment tells a reviewer: cost, moves, policy, metrics, budgets, order, and its size cap."""

from __future__ import annotations

import json

import git
import pytest

from reconciler.catalog.load import load_catalog, placements, promotion_order
from reconciler.catalog.effective import effective_serving
from reconciler.plan import cost
from reconciler.plan.changes import Plan, plan_environment
from reconciler.plan.revisions import plan_revisions
from reconciler.render.environment import with_content_hash
from reconciler.render.manifests import model_objects
from reconciler.report.plan import GITHUB_COMMENT_LIMIT, plan_markdown
from reconciler.results import Action
from tests.conftest import commit_all, copy_template


def edit(path, old, new):
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new))


def test_cost_of_four_to_six_inf2_replicas_is_the_hand_computed_figure():
    catalog = load_catalog(copy_template_once())
    inf2 = catalog.pools["inf2"]
    assert cost.hourly_price(inf2) == 0.758
    before = cost.footprint([inf2], effective_serving(catalog.models["digits-classifier"].spec, catalog.environments["prod"]))
    assert before.replicas == {"inf2": (4, 4)} and before.devices == {"aws.amazon.com/neuron": (4, 4)}
    after = cost.Footprint({"inf2": (6, 6)}, (round(6 * 0.758 * 730, 2),) * 2)
    assert cost.delta(before, after) == (1106.68, 1106.68)
    assert cost.usd(1106.68, signed=True) == "+$1,106.68"


_TEMPLATE = {}


def copy_template_once():
    import tempfile
    from pathlib import Path
    if "root" not in _TEMPLATE:
        _TEMPLATE["root"] = copy_template(Path(tempfile.mkdtemp(prefix="i13-template-")) / "repo")
    return _TEMPLATE["root"]


@pytest.fixture
def reviewed(template_repo):
    """One commit: digits 2 -> 3 replicas and moves to a GPU in staging, iris doubles its failure threshold."""
    repo = git.Repo(template_repo)
    edit(template_repo / "models/digits-classifier/model.yaml", "replicas: 2", "replicas: 3")
    edit(template_repo / "models/digits-classifier/model.yaml", "staging: inferentia", "staging: gpu")
    edit(template_repo / "models/iris-classifier/model.yaml", "slo: {p95LatencyMs: 150}",
         "slo: {p95LatencyMs: 150}\ncanary: {failureThreshold: 4}")
    commit_all(repo, "review me")
    return template_repo, plan_revisions(template_repo, "HEAD~1", "HEAD")


def test_cost_delta_on_the_examples(reviewed):
    _, plan = reviewed
    digits = plan.environments["prod"].models["digits-classifier"]
    assert digits.review.cost_delta == (1106.68, 1106.68)  # 4 -> 6 inf2.xlarge at $0.758/h, 730 h
    assert digits.reasons == ["model.yaml: serving.replicas 2 -> 3"]
    md = plan_markdown(plan)
    assert "+$1,106.68" in md


def test_accelerator_move_is_said_in_words(reviewed):
    _, plan = reviewed
    digits = plan.environments["staging"].models["digits-classifier"]
    assert digits.review.move == "inf2 (inferentia) -> gpu-a10g (gpu), by a cross-pool canary"
    # 2 inf2 replicas become 3 on g5.xlarge
    assert digits.review.cost_delta == (round(3 * 1.006 * 730 - 2 * 0.758 * 730, 2),) * 2
    assert "moves inf2 (inferentia) -> gpu-a10g (gpu)" in "\n".join(digits.reasons)
    assert "- `digits-classifier`: `inf2 (inferentia) -> gpu-a10g (gpu), by a cross-pool canary`" in plan_markdown(plan)
    # only staging moves: prod keeps Inferentia, and dev has no canaries
    assert plan.environments["prod"].models["digits-classifier"].review.move is None


def test_a_canary_policy_only_change_is_a_before_after_table(reviewed):
    _, plan = reviewed
    staging = plan.environments["staging"]
    iris = staging.models["iris-classifier"]
    assert {r.action for r in iris.objects} == {Action.unchanged}  # no manifest changes
    assert iris.review.policy == [("canary.failureThreshold", 2, 4)]
    assert staging.changed_models == ["digits-classifier"]
    assert not any(r.startswith("model.yaml: canary") for r in staging.models["digits-classifier"].reasons)
    md = plan_markdown(plan)
    assert "| `iris-classifier` | `canary.failureThreshold` | `2` | `4` |" in md
    # dev has no canaries: the same change is no row there
    assert "iris-classifier" not in plan.environments["dev"].models


def test_no_rows_for_unchanged_models_and_promotion_order(template_repo):
    repo = git.Repo(template_repo)
    edit(template_repo / "models/digits-classifier/service.py", "import", "import os  # noqa\nimport", )
    commit_all(repo, "touch digits code only")
    plan = plan_revisions(template_repo, "HEAD~1", "HEAD")
    assert [e.environment for e in plan.ordered()] == ["dev", "staging", "prod"]  # not alphabetical
    for env in plan.environments.values():
        assert list(env.models) == ["digits-classifier"]
    md = plan_markdown(plan)
    assert "iris-classifier" not in md
    assert md.index("1. `prod`") < md.index("2. `staging`") < md.index("3. `dev`")  # the most important first
    base, head = plan.base[:12], plan.head[:12]
    assert f"--- {base}/Deployment/models-prod/" in md and f"+++ {head}/Deployment/models-prod/" in md
    assert "live/" not in md


def test_metrics_change_shows_values(template_repo):
    repo = git.Repo(template_repo)
    metrics = template_repo / "models/iris-classifier/metrics.json"
    data = json.loads(metrics.read_text())
    old = data["accuracy"]
    data["accuracy"] = 0.92
    metrics.write_text(json.dumps(data))
    commit_all(repo, "retrain iris")
    plan = plan_revisions(template_repo, "HEAD~1", "HEAD", ["prod"])
    iris = plan.environments["prod"].models["iris-classifier"]
    (row,) = iris.review.metrics
    assert (row.name, row.before, row.after) == ("accuracy", old, 0.92)
    assert f"| `iris-classifier` | `accuracy` | `{old}` | `0.92` | {0.92 - old:+.4g} |" in plan_markdown(plan)


@pytest.mark.parametrize("budget, problem", [
    ("budget: {monthlyUSD: 9000}", "over the budget of $9,000.00"),
    ("budget: {aws.amazon.com/neuron: 5}", "aws.amazon.com/neuron requested at max replicas would be 6 (was 4)"),
    ("budget: {monthlyUSD: 10000, aws.amazon.com/neuron: 8, nvidia.com/gpu: 8}", None),
])
def test_budget_over_and_within(template_repo, budget, problem):
    repo = git.Repo(template_repo)
    (template_repo / "environments/prod/environment.yaml").write_text(
        (template_repo / "environments/prod/environment.yaml").read_text() + budget + "\n")
    commit_all(repo, "prod budget")
    edit(template_repo / "models/digits-classifier/model.yaml", "replicas: 2", "replicas: 3")
    commit_all(repo, "scale digits")
    plan = plan_revisions(template_repo, "HEAD~1", "HEAD", ["prod"])
    prod = plan.environments["prod"]
    if problem is None:
        assert prod.budget_error is None and plan.ok
        return
    assert not plan.ok and problem in prod.budget_error
    assert "digits-classifier +" in prod.budget_error  # names the model raising the figure
    assert "environments/prod/environment.yaml" in prod.budget_error and "lower the replicas" in prod.budget_error
    assert "> [!CAUTION]" in plan_markdown(plan)


def test_budget_renders_a_resource_quota(template_repo):
    from reconciler.desired.state import desired_at
    from reconciler.render.environment import ENVIRONMENT_GROUP

    (template_repo / "environments/prod/environment.yaml").write_text(
        (template_repo / "environments/prod/environment.yaml").read_text()
        + "budget: {monthlyUSD: 20000, nvidia.com/gpu: 8, aws.amazon.com/neuron: 16}\n")
    state = desired_at(template_repo, None, ["prod"])
    (quota,) = [o for o in state.objects_by_model("prod")[ENVIRONMENT_GROUP] if o["kind"] == "ResourceQuota"]
    assert quota["kind"] == "ResourceQuota" and quota["metadata"]["namespace"] == "models-prod"
    assert quota["spec"]["hard"] == {"requests.aws.amazon.com/neuron": "16", "requests.nvidia.com/gpu": "8"}


def test_promotion_order_follows_promotes_from():
    assert promotion_order({"prod", "dev", "staging"}, {"prod": "staging", "staging": "dev"}) == ["dev", "staging", "prod"]
    assert promotion_order({"b", "a", "c"}, {"a": "c"}) == ["b", "c", "a"]
    assert sorted(promotion_order({"x", "y"}, {"x": "y", "y": "x"})) == ["x", "y"]  # a cycle never hangs


def test_promotes_from_an_unknown_environment_is_an_environment_error(tmp_path):
    root = copy_template(tmp_path / "repo")
    edit(root / "environments/prod/environment.yaml", "promotesFrom: staging", "promotesFrom: stagin")
    catalog = load_catalog(root)
    assert "prod" in catalog.env_errors and "stagin" in str(catalog.env_errors["prod"])
    assert "promotesFrom" in str(catalog.env_errors["prod"])


def test_the_comment_fits_githubs_limit_on_a_300_model_first_deployment():
    """300 models x 3 environments created at once: the full comment would be megabytes."""
    catalog = load_catalog(copy_template_once())
    template = catalog.models["iris-classifier"]
    plan = Plan(base="empty", head="0123456789abcdef")
    plan.order = ["dev", "staging", "prod"]
    for env_name in plan.order:
        env = catalog.environments[env_name]
        desired = {}
        for i in range(300):
            name = f"model-{i:03d}"
            entry = type(template)(name, template.path, template.spec.model_copy(update={"name": name}))
            pools = placements(entry, env, catalog.pools)
            objects = model_objects(entry, env, pools, effective_serving(entry.spec, env),
                                    {p.name: f"registry.test/{name}:0123456789ab" for p in pools})
            desired[name] = [with_content_hash(o) for o in objects]
        plan.environments[env_name] = plan_environment(env_name, desired, {}, {n: ["first deployment"] for n in desired},
                                                       labels=("empty", "0123456789ab"))
    full = plan_markdown(plan, limit=10**9)
    assert len(full) > 10 * GITHUB_COMMENT_LIMIT
    md = plan_markdown(plan)
    assert len(md) <= GITHUB_COMMENT_LIMIT
    assert "Shortened to fit GitHub's 65,536-character comment limit" in md
    assert "artifact `reconciler-plan`" in md
    for i, env in enumerate(reversed(plan.order), 1):
        assert f"#### {i}. `{env}`" in md and "models: 300 added" in md
    assert md.startswith("<!-- reconciler-plan -->")


def test_the_comment_leads_with_prod_and_shows_a_pool_move_as_a_field_diff(template_repo):
    """digits moves from Inferentia to a GPU in prod; iris asks for Inferentia it cannot compile for."""
    repo = git.Repo(template_repo)
    edit(template_repo / "models/digits-classifier/model.yaml", "prod: inferentia", "prod: gpu")
    edit(template_repo / "models/iris-classifier/model.yaml", "prod: gpu", "prod: inferentia")
    edit(template_repo / "models/iris-classifier/model.yaml", 'cpu: "1"', 'cpu: "2"')
    commit_all(repo, "move digits, break iris")
    plan = plan_revisions(template_repo, "HEAD~1", "HEAD", check_artifacts=False)
    md = plan_markdown(plan)
    summary = md[:md.index("#### 1.")]
    # the summary comes first, prod's row first, with its cost and the move
    rows = [line for line in summary.splitlines() if line.startswith("| `")]
    assert [row.split("|")[1].strip() for row in rows] == ["`prod`", "`staging`", "`dev`"]
    assert "+$724.16" in rows[0] and "inf2 (inferentia) -> gpu-a10g (gpu)" in rows[0] and "`iris-classifier`" in rows[0]
    assert "**Riskiest change:** `digits-classifier` in `prod`" in summary
    # the move is the fields that differ, not two whole objects
    digits = plan.environments["prod"].models["digits-classifier"]
    (deployment,) = [r for r in digits.replacements if r.old.kind == "Deployment"]
    changed = {c.path: (c.live, c.desired) for c in deployment.changes}
    bento = "spec.template.spec.containers[bento]"
    assert changed[f"{bento}.resources.limits.hugepages-2Mi"] == ("256Mi", None)
    assert changed[f"{bento}.resources.limits.nvidia.com/gpu"] == (None, "1")
    # the hardened container drops ALL capabilities on every pool; the inf2 pool adds IPC_LOCK back
    assert changed[f"{bento}.securityContext.capabilities.add"] == (["IPC_LOCK"], None)
    assert f"| `{bento}.resources.limits.hugepages-2Mi` | `256Mi` | (none) |" in md
    assert "+++ " not in md.split("#### 2.")[0]  # prod: no whole-object YAML for the replaced pair
    # the invalid model keeps what runs: its cost is unchanged, and the why is its fields
    iris = plan.environments["prod"].models["iris-classifier"]
    assert iris.error and plan.environments["prod"].cost_delta == (724.16, 724.16)
    assert "| unchanged (kept) |" in md
    assert iris.reasons == ["model.yaml: accelerator.prod gpu -> inferentia", "model.yaml: serving.resources.cpu 1 -> 2"]
    for env in plan.environments.values():
        for mp in env.models.values():
            assert mp.reasons, (env.environment, mp.model)
    assert not any(line.endswith("| - |") for line in md.splitlines() if line.startswith("| `"))
