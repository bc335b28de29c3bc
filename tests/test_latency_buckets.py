"""The template's latency buckets (issue 21): every canary latency threshold is a boundary of the histogram the
service exports, rendered into the container's BENTOML_CONFIG_OVERRIDES, and BentoML 1.4 really takes them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from reconciler.catalog.buckets import BENTOML_DEFAULT, duration_buckets, is_boundary, missing_thresholds
from reconciler.catalog.effective import effective_serving
from reconciler.catalog.load import ModelEntry
from reconciler.catalog.pools import PoolsFile
from reconciler.catalog.specs import EnvironmentSpec, ModelSpec
from reconciler.render.manifests import model_objects

ROOT = Path(__file__).resolve().parents[1]
POOLS = PoolsFile.model_validate(yaml.safe_load((ROOT / "environments" / "pools.yaml").read_text())).pools


def rendered_env(slo_ms: float, max_p95_ms: float | None = None) -> dict[str, str]:
    env = EnvironmentSpec.model_validate({
        "name": "prod", "cluster": {"context": "x"}, "namespace": "models-prod", "registry": "r.example/m",
        "pools": ["gpu-a10g"], "canary": True, "defaults": {"slo": {"p95LatencyMs": slo_ms}}})
    spec = {"name": "iris-classifier", "owner": "a@b.c", "service": "service.py:IrisClassifier",
            "serving": {"replicas": 1}, "accelerator": "gpu-a10g"}
    if max_p95_ms is not None:
        spec["canary"] = {"maxP95LatencyMs": max_p95_ms}
    entry = ModelEntry("iris-classifier", ROOT / "models" / "iris-classifier", ModelSpec.model_validate(spec))
    objects = model_objects(entry, env, [POOLS["gpu-a10g"]], effective_serving(entry.spec, env),
                            {"gpu-a10g": "r.example/m:1"})
    (deployment,) = [o for o in objects if o["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in container["env"]}


def test_the_layout_holds_bentomls_defaults_and_every_threshold() -> None:
    layout = duration_buckets([150, 175])
    assert set(BENTOML_DEFAULT) <= set(layout) and layout == tuple(sorted(layout))
    assert is_boundary(layout, 150) and is_boundary(layout, 175) and not is_boundary(BENTOML_DEFAULT, 150)
    assert missing_thresholds(BENTOML_DEFAULT, [200, 250]) == [200]  # 0.1 .. 0.25 is one default bucket


def test_the_rendered_service_exports_buckets_with_the_slo_and_limit_as_boundaries() -> None:
    overrides = json.loads(rendered_env(150, max_p95_ms=175)["BENTOML_CONFIG_OVERRIDES"])
    buckets = overrides["services"]["IrisClassifier"]["metrics"]["duration"]["buckets"]
    assert 0.15 in buckets and 0.175 in buckets and set(BENTOML_DEFAULT) <= set(buckets)


def test_bentoml_takes_the_rendered_buckets(tmp_path) -> None:
    """The example service loaded by BentoML 1.4 with the container's environment as rendered: the duration
    histogram's buckets are the rendered ones (+Inf last), not BentoML's defaults."""
    env = rendered_env(150)
    probe = ("import bentoml, json\n"
             "from bentoml._internal.configuration.containers import BentoMLContainer\n"
             "svc = bentoml.load('service.py:IrisClassifier')\n"
             "svc.inject_config()\n"
             "print(json.dumps([b if b != float('inf') else 'inf' for b in BentoMLContainer.duration_buckets.get()]))\n")
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT / "models" / "iris-classifier", capture_output=True,
                          text=True, timeout=180, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT),
                                                       "BENTOML_HOME": str(tmp_path), "BENTOML_DO_NOT_TRACK": "true",
                                                       "BENTOML_CONFIG_OVERRIDES": env["BENTOML_CONFIG_OVERRIDES"]})
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got[-1] == "inf" and 0.15 in got and 0.2 in got and got[:-1] == list(duration_buckets([150]))


# --------------------------------------------------------------------------- plan time: a threshold off the buckets


def _repo(tmp_path: Path, canary_line: str) -> Path:
    import git

    from tests.conftest import commit_all, copy_template

    root = copy_template(tmp_path / "repo")
    spec = root / "models" / "iris-classifier" / "model.yaml"
    spec.write_text(spec.read_text() + canary_line)
    commit_all(git.Repo.init(root, initial_branch="main"), "template")
    return root


def test_plan_rejects_a_threshold_that_is_not_a_boundary_of_the_declared_buckets_naming_file_field_and_fix(tmp_path):
    """iris's SLO p95 is 150 ms; it declares buckets without 0.15: `reconciler plan` from the repository root says
    which file, which field, and what to add where (issue 21: a threshold off the buckets would be interpolated)."""
    root = _repo(tmp_path, "canary: {latencyBuckets: [0.05, 0.1, 0.25, 0.5, 1]}\n")
    done = subprocess.run([str(Path(sys.executable).parent / "reconciler"), "plan", "--no-check-artifacts"],
                          cwd=root, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    out = " ".join((done.stdout + done.stderr).split())
    assert done.returncode != 0, out
    assert "models/iris-classifier/model.yaml" in out and "slo.p95LatencyMs" in out
    assert "latency threshold 150 ms (slo.p95LatencyMs) is not a bucket boundary" in out
    assert ("add 0.15 to canary.latencyBuckets in models/iris-classifier/model.yaml, or set slo.p95LatencyMs to a "
            "boundary (100 ms or 250 ms)") in out
    # the environments' own thresholds (prod's SLO 200 ms) are named in their file, with the same fix
    assert "latency threshold 200 ms (defaults.slo.p95LatencyMs)" in out and "environments/prod/environment.yaml" in out


def test_declared_buckets_holding_every_threshold_plan_and_render_as_declared(tmp_path):
    from reconciler.catalog.load import load_catalog

    root = _repo(tmp_path, "canary: {latencyBuckets: [0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1]}\n")
    catalog = load_catalog(root)
    assert "iris-classifier" not in catalog.errors, catalog.errors.get("iris-classifier")


def test_a_custom_latency_query_without_declared_buckets_is_a_plan_error(tmp_path):
    from reconciler.catalog.load import load_catalog

    root = _repo(tmp_path, "canary:\n  queries:\n    latency_buckets: 'sum by (le) (increase(my_seconds_bucket{$selector}"
                           "[$window]))'\n")
    (problem,) = [p for p in load_catalog(root).errors["iris-classifier"].problems if "latencyBuckets" in (p.field or "")]
    assert problem.file == "models/iris-classifier/model.yaml" and problem.field == "canary.latencyBuckets"
    assert "bucket bounds the plan cannot see" in problem.message and problem.fix.startswith("declare that histogram")


def test_the_template_layout_is_replaced_by_declared_buckets_in_the_rendered_service() -> None:
    env = EnvironmentSpec.model_validate({
        "name": "prod", "cluster": {"context": "x"}, "namespace": "models-prod", "registry": "r.example/m",
        "pools": ["gpu-a10g"], "canary": True, "defaults": {"slo": {"p95LatencyMs": 200}}})
    spec = ModelSpec.model_validate({"name": "iris-classifier", "owner": "a@b.c", "service": "service.py:IrisClassifier",
                                     "serving": {"replicas": 1}, "accelerator": "gpu-a10g",
                                     "canary": {"latencyBuckets": [0.05, 0.1, 0.2, 0.4]}})
    entry = ModelEntry("iris-classifier", ROOT / "models" / "iris-classifier", spec)
    (deployment,) = [o for o in model_objects(entry, env, [POOLS["gpu-a10g"]], effective_serving(spec, env),
                                              {"gpu-a10g": "r.example/m:1"}) if o["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    overrides = json.loads({e["name"]: e["value"] for e in container["env"]}["BENTOML_CONFIG_OVERRIDES"])
    assert overrides["services"]["IrisClassifier"]["metrics"]["duration"]["buckets"] == [0.05, 0.1, 0.2, 0.4]


def test_the_catalog_check_reads_the_settings_effective_canary_gives() -> None:
    """threshold_problems reads `enabled`, `queries` and `latencyBuckets` through canary_setting/canary_queries (not
    the whole effective policy, built for every model and environment): each layer's value wins as effective_canary's."""
    from reconciler.catalog.effective import canary_max_p95_ms, canary_queries, canary_setting, effective_canary, effective_slo
    from reconciler.render.manifests import model_latency_buckets

    layers = [None, {"enabled": False}, {"latencyBuckets": [0.1, 0.3]}, {"queries": {"latency_buckets": "x"}},
              {"enabled": True, "latencyBuckets": [0.2], "queries": {"error_rate": "y"}}, {"maxP95LatencyMs": 120}]
    seen = set()
    for env_canary in (True, False):
        for env_layer in layers:
            for model_layer in layers:
                env = EnvironmentSpec.model_validate({
                    "name": "prod", "cluster": {"context": "x"}, "namespace": "models-prod", "registry": "r.example/m",
                    "pools": ["gpu-a10g"], "canary": env_canary, "defaults": {"canary": env_layer or {}}})
                spec = ModelSpec.model_validate({"name": "m", "owner": "a@b.c", "service": "service.py:S",
                                                 "accelerator": "gpu-a10g", "canary": model_layer or {},
                                                 "slo": {"p95LatencyMs": 90} if model_layer is None else {}})
                full = effective_canary(spec, env)
                assert full.enabled == bool(env.canary and canary_setting(spec, env, "enabled"))
                assert full.latency_buckets == canary_setting(spec, env, "latency_buckets")
                assert full.queries == canary_queries(spec, env)
                assert full.max_p95_latency_ms == canary_max_p95_ms(spec, env)
                # the rendered buckets, as they were computed from the whole effective policy
                expected = tuple(float(b) for b in full.latency_buckets) \
                    if full.latency_buckets and "latency_buckets" not in full.queries else \
                    duration_buckets(t for t in (full.max_p95_latency_ms, effective_slo(spec, env).p95_latency_ms) if t)
                assert model_latency_buckets(ModelEntry("m", ROOT, spec), env) == expected
                seen.add((full.enabled, tuple(full.latency_buckets or ()), tuple(sorted(full.queries))))
    assert len(seen) >= 8  # the layers really differ
