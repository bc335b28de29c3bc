"""Spec validation: clear errors naming file, line, field and fix; defaults from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.catalog.load import load_catalog, placements
from reconciler.errors import SpecError
from reconciler.catalog.effective import effective_canary, effective_serving
from reconciler.catalog.files import load
from reconciler.catalog.specs import EnvironmentSpec, ModelSpec


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_unknown_field_names_file_line_and_field(tmp_path):
    spec = write(tmp_path / "model.yaml", "name: m\nowner: a\nservice: service.py:S\nserving:\n  replcias: 2\n")
    with pytest.raises(SpecError) as info:
        load(ModelSpec, spec, display="models/m/model.yaml")
    (problem,) = info.value.problems
    assert (problem.file, problem.line, problem.field, problem.message) == (
        "models/m/model.yaml", 5, "serving.replcias", "unknown field (did you mean 'replicas'?)")
    assert problem.fix == "rename 'replcias' to 'replicas'"


def test_yaml_syntax_error_points_at_line(tmp_path):
    spec = write(tmp_path / "model.yaml", "name: m\nowner: a\nserving:\n  port: [3000\n")
    with pytest.raises(SpecError) as info:
        load(ModelSpec, spec)
    assert "YAML syntax error" in str(info.value)
    assert info.value.problems[0].line is not None and info.value.problems[0].line >= 4


@pytest.mark.parametrize("name", ["Iris", "iris_classifier", "-iris", "a" * 64])
def test_invalid_names_are_rejected_with_the_rule(tmp_path, name):
    spec = write(tmp_path / "model.yaml", f"name: '{name}'\nowner: a\nservice: service.py:S\n")
    with pytest.raises(SpecError) as info:
        load(ModelSpec, spec)
    assert info.value.problems[0].field == "name"
    assert "DNS-1123" in info.value.problems[0].message


def test_every_problem_is_reported_not_just_the_first(tmp_path):
    spec = write(tmp_path / "model.yaml", "name: m\nservice: nope\nserving: {port: 70000}\n")
    with pytest.raises(SpecError) as info:
        load(ModelSpec, spec)
    fields = {p.field for p in info.value.problems}
    assert {"owner", "service", "serving.port"} <= fields


def test_canary_steps_must_increase(tmp_path):
    spec = write(tmp_path / "model.yaml", "name: m\nowner: a\nservice: service.py:S\ncanary: {steps: [50, 10]}\n")
    with pytest.raises(SpecError, match="increasing"):
        load(ModelSpec, spec)


def test_defaults_come_from_the_environment_and_model_overrides_win():
    env = EnvironmentSpec.model_validate({
        "name": "prod", "cluster": {"context": "c"}, "namespace": "ns", "registry": "r", "pools": ["p"],
        "scale": {"replicasFactor": 2, "minReplicas": 2}, "canary": True,
        "defaults": {"serving": {"port": 8080, "resources": {"cpu": "2"}}, "canary": {"steps": [50, 100]},
                     "slo": {"p95LatencyMs": 300}}})
    model = ModelSpec.model_validate({"name": "m", "owner": "o", "service": "service.py:S",
                                      "serving": {"replicas": 3, "resources": {"memory": "1Gi"}},
                                      "slo": {"p95LatencyMs": 120}})
    serving = effective_serving(model, env)
    assert (serving.port, serving.cpu, serving.memory, serving.replicas) == (8080, "2", "1Gi", 6)
    canary = effective_canary(model, env)
    assert canary.enabled and canary.steps == [50, 100] and canary.max_p95_latency_ms == 120


def test_canary_is_off_where_the_environment_turns_it_off(template_repo):
    catalog = load_catalog(template_repo)
    model = catalog.models["iris-classifier"].spec
    assert not effective_canary(model, catalog.environments["dev"]).enabled
    assert effective_canary(model, catalog.environments["prod"]).enabled


def test_template_catalog_is_valid_and_places_models_on_their_pools(template_repo):
    catalog = load_catalog(template_repo)
    assert catalog.errors == {} and catalog.env_errors == {}
    assert set(catalog.environments) == {"dev", "staging", "prod"}
    iris, digits = catalog.models["iris-classifier"], catalog.models["digits-classifier"]
    pools = catalog.pools
    assert [p.name for p in placements(iris, catalog.environments["prod"], pools)] == ["gpu-a10g"]
    assert [p.name for p in placements(digits, catalog.environments["prod"], pools)] == ["inf2"]
    assert [p.name for p in placements(digits, catalog.environments["dev"], pools)] == ["cpu-general"]


def test_unknown_pool_is_a_model_error_that_spares_the_others(template_repo):
    spec = template_repo / "models/iris-classifier/model.yaml"
    spec.write_text(spec.read_text().replace("prod: gpu", "prod: gpu-h100"))
    catalog = load_catalog(template_repo)
    assert "digits-classifier" in catalog.models
    err = catalog.errors["iris-classifier"]
    assert err.problems[0].field == "accelerator.prod"
    assert "unknown pool 'gpu-h100'" in err.problems[0].message and "gpu-a10g" in err.problems[0].message


def test_missing_bentofile_is_reported_with_the_fix(template_repo):
    (template_repo / "models/digits-classifier/bentofile.yaml").unlink()
    catalog = load_catalog(template_repo)
    problem = catalog.errors["digits-classifier"].problems[0]
    assert problem.field == "bentofile" and "missing" in problem.message
    assert "iris-classifier" in catalog.models


def test_environment_listing_an_undeclared_pool_fails_that_environment(template_repo):
    env = template_repo / "environments/staging/environment.yaml"
    env.write_text(env.read_text().replace("pools: [cpu-general, gpu-a10g, inf2]", "pools: [cpu-general, tpu]"))
    catalog = load_catalog(template_repo)
    assert "staging" in catalog.env_errors and "prod" in catalog.environments
    assert catalog.env_errors["staging"].problems[0].field == "pools.1"
