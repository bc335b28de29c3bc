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
