"""Spot pools: capacity-type label, on-demand fallback through node affinity, a PDB, the spot price."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from reconciler import labels as L
from reconciler.catalog.load import load_catalog, placements
from reconciler.catalog.files import parse
from reconciler.catalog.pools import PoolsFile
from reconciler.errors import SpecError
from reconciler.render.environment import render_environment
from reconciler.render.schemas import problems
from tests.conftest import TEMPLATE_MODELS

IMAGES = {m: f"registry.test/{m}:abc" for m in TEMPLATE_MODELS}  # an image for every model of the template


def _edit(path: Path, **changes) -> None:
    doc = yaml.safe_load(path.read_text())
    doc.update(changes)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


@pytest.fixture
def spot_repo(template_repo: Path) -> Path:
    """prod lists the spot A10G pool and its on-demand fallback; iris targets the spot pool."""
    env = template_repo / "environments" / "prod" / "environment.yaml"
    _edit(env, pools=["cpu-general", "gpu-a10g-spot", "gpu-a10g", "inf2"])
    _edit(template_repo / "models" / "iris-classifier" / "model.yaml", accelerator={"prod": "gpu-a10g-spot"})
    return template_repo


def _objects(result, model: str, kind: str) -> list[dict]:
    return [o for o in result.models[model].objects if o["kind"] == kind]


def test_a_spot_pool_renders_affinity_fallback_and_a_pdb(spot_repo):
    catalog = load_catalog(spot_repo)
    result = render_environment(catalog, "prod", images=IMAGES)
    assert result.errors == {}
    (deploy,) = _objects(result, "iris-classifier", "Deployment")
    assert deploy["metadata"]["name"] == "iris-classifier-gpu-a10g-spot"
    pod = deploy["spec"]["template"]["spec"]
    assert "nodeSelector" not in pod  # a hard selector would forbid the fallback
    affinity = pod["affinity"]["nodeAffinity"]
    spot_term, fallback_term = affinity["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert {"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["spot"]} in spot_term["matchExpressions"]
    assert {"key": "gitops.ml/pool", "operator": "In", "values": ["gpu-a10g-spot"]} in spot_term["matchExpressions"]
    assert {"key": "gitops.ml/pool", "operator": "In", "values": ["gpu-a10g"]} in fallback_term["matchExpressions"]
    assert not any(e["key"] == "karpenter.sh/capacity-type" for e in fallback_term["matchExpressions"])
    (preferred,) = affinity["preferredDuringSchedulingIgnoredDuringExecution"]
    assert preferred == {"weight": 100, "preference": spot_term}
    (pdb,) = _objects(result, "iris-classifier", "PodDisruptionBudget")
    assert pdb["metadata"]["name"] == "iris-classifier-gpu-a10g-spot"
    assert pdb["metadata"]["namespace"] == "models-prod"
    assert pdb["spec"]["maxUnavailable"] == 1
    # the PDB selects the pool's pods, stable and canary tracks alike
    assert pdb["spec"]["selector"]["matchLabels"] == {L.MODEL: "iris-classifier", L.POOL: "gpu-a10g-spot"}
    assert deploy["spec"]["template"]["metadata"]["labels"].items() >= pdb["spec"]["selector"]["matchLabels"].items()
    assert problems(pdb) == []
    # on-demand pools get no PDB and keep their plain nodeSelector
    assert _objects(result, "digits-classifier", "PodDisruptionBudget") == []
    (inf,) = _objects(result, "digits-classifier", "Deployment")
    assert inf["spec"]["template"]["spec"]["nodeSelector"]["gitops.ml/pool"] == "inf2"


def test_the_spot_price_is_the_pools_price(spot_repo):
    pools = load_catalog(spot_repo).pools
    assert pools["gpu-a10g-spot"].price_per_hour == 0.35
    assert pools["gpu-a10g"].price_per_hour == pools["gpu-a10g"].hourly_price == 1.006


def test_a_model_refusing_spot_lands_on_the_fallback(spot_repo):
    _edit(spot_repo / "models" / "iris-classifier" / "model.yaml", spot=False)
    catalog = load_catalog(spot_repo)
    assert [p.name for p in placements(catalog.models["iris-classifier"], catalog.environments["prod"],
                                       catalog.pools)] == ["gpu-a10g"]
    result = render_environment(catalog, "prod", images=IMAGES)
    assert [d["metadata"]["name"] for d in _objects(result, "iris-classifier", "Deployment")] == ["iris-classifier-gpu-a10g"]
    assert _objects(result, "iris-classifier", "PodDisruptionBudget") == []


def test_spot_mistakes_are_errors_that_name_the_field(spot_repo):
    base = {"kind": "gpu", "device": {"resource": "nvidia.com/gpu"}, "hourlyPrice": 1.0}
    with pytest.raises(SpecError, match="needs spotPrice"):
        parse(PoolsFile, {"pools": {"a": {**base, "capacityType": "spot"}}}, "pools.yaml")
    with pytest.raises(SpecError, match="fallback 'b' is a spot pool too"):
        parse(PoolsFile, {"pools": {"a": {**base, "capacityType": "spot", "spotPrice": 0.3, "fallback": "b"},
                                    "b": {**base, "capacityType": "spot", "spotPrice": 0.3}}}, "pools.yaml")
    with pytest.raises(SpecError, match="is not a declared pool"):
        parse(PoolsFile, {"pools": {"a": {**base, "capacityType": "spot", "spotPrice": 0.3, "fallback": "zz"}}},
              "pools.yaml")
    # the environment must list the fallback; a model refusing spot needs one
    _edit(spot_repo / "environments" / "prod" / "environment.yaml", pools=["cpu-general", "gpu-a10g-spot", "inf2"])
    catalog = load_catalog(spot_repo)
    assert "falls back to 'gpu-a10g', which this environment does not list" in str(catalog.env_errors["prod"])


def test_refusing_spot_on_a_spot_pool_without_fallback_is_a_model_error(spot_repo):
    pools_file = spot_repo / "environments" / "pools.yaml"
    doc = yaml.safe_load(pools_file.read_text())
    del doc["pools"]["gpu-a10g-spot"]["fallback"]
    pools_file.write_text(yaml.safe_dump(doc))
    _edit(spot_repo / "models" / "iris-classifier" / "model.yaml", spot=False)
    catalog = load_catalog(spot_repo)
    error = str(catalog.errors["iris-classifier"])
    assert "refuses spot capacity" in error and "gpu-a10g-spot" in error and "fix:" in error
    assert "digits-classifier" in catalog.models  # one broken model never blocks the others


def test_the_plans_cost_uses_the_spot_price(spot_repo):
    import git

    from reconciler.plan.revisions import plan_revisions
    from tests.conftest import commit_all

    commit_all(git.Repo(spot_repo), "iris on the spot pool in prod")
    plan = plan_revisions(spot_repo, "HEAD~1", "HEAD", ["prod"])
    iris = plan.environments["prod"].models["iris-classifier"]
    # iris is autoscaled 2..8 in prod: from the on-demand A10G (1.006/h) to spot (0.35/h), 730 h a month
    assert iris.review.cost_delta == (round(2 * (0.35 - 1.006) * 730, 2), round(8 * (0.35 - 1.006) * 730, 2))
