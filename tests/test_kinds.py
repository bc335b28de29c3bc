"""An accelerator kind is one profile entry: a fake kind (a TPU) registered here and nothing else changed
is accepted by pool validation, gets its own image tag, image key and bento overlay, requests its device
in the rendered Deployment and takes its serving defaults; an unknown kind is an error naming the
registered ones, never the Neuron overlay."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from reconciler.catalog.accelerators import NEEDS_COMPILE
from reconciler.catalog.effective import effective_serving, kind_serving
from reconciler.catalog.images import image_key, image_tag
from reconciler.catalog.kinds import KINDS, AcceleratorKind, KindProfile, kind_overlay
from reconciler.catalog.load import ModelEntry
from reconciler.catalog.pools import PoolsFile
from reconciler.catalog.specs import EnvironmentSpec, ModelSpec
from reconciler.errors import ReconcilerError
from reconciler.render.manifests import model_objects

ROOT = Path(__file__).resolve().parents[1]
TPU_POOL = {"kind": "tpu", "nodeSelector": {"cloud.google.com/gke-tpu-accelerator": "tpu-v5-lite-podslice"},
            "device": {"resource": "google.com/tpu", "count": 4}, "hourlyPrice": 1.2}


@pytest.fixture
def tpu(monkeypatch: pytest.MonkeyPatch) -> KindProfile:
    profile = KindProfile("tpu", tag_suffix="-tpu", device_resources=("google.com/tpu",), startup_seconds=900,
                          bento_overlay=lambda sdk: {"envs": [{"name": "MODEL_ACCELERATOR_KIND", "value": "tpu"}],
                                                     "python": {"packages": ["jax[tpu]"]}})
    monkeypatch.setitem(KINDS, "tpu", profile)
    return profile


def test_a_registered_kind_is_read_by_pools_images_overlay_render_and_serving(tpu: KindProfile) -> None:
    pools = PoolsFile.model_validate({"pools": {"tpu-v5e": TPU_POOL}}).pools
    pool = pools["tpu-v5e"]
    assert pool.kind == "tpu" and pool.kind.profile is tpu
    assert pool.strategy.max_surge == 0 and pool.strategy.max_unavailable == 1
    assert image_tag("sha256:" + "ab" * 32, "tpu") == "abababababab-tpu"
    assert image_key("iris", "tpu") == "iris/tpu"
    assert kind_overlay("tpu")["python"]["packages"] == ["jax[tpu]"]
    assert kind_serving(pool.kind).startup_seconds == 900
    assert "tpu" in [k.value for k in AcceleratorKind]

    env = EnvironmentSpec.model_validate({"name": "prod", "cluster": {"context": "prod"}, "namespace": "models-prod",
                                          "registry": "r.example/models", "pools": ["tpu-v5e"]})
    spec = ModelSpec.model_validate({"name": "iris", "owner": "a@b.c", "service": "service.py:Iris",
                                     "accelerator": "tpu-v5e"})
    entry = ModelEntry("iris", ROOT / "models" / "iris", spec)
    objects = model_objects(entry, env, [pool], effective_serving(spec, env), {"tpu-v5e": "r.example/models/iris:x-tpu"})
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["google.com/tpu"] == "4"


def test_a_pool_must_match_its_kinds_profile(tpu: KindProfile) -> None:
    with pytest.raises(ValidationError, match=r"a tpu pool needs device: \{resource: google.com/tpu\}"):
        PoolsFile.model_validate({"pools": {"t": {**TPU_POOL, "device": {"resource": "nvidia.com/gpu"}}}})
    with pytest.raises(ValidationError, match="a cpu pool must not declare a device; use kind: gpu or kind: inferentia "
                                              "or kind: tpu"):
        PoolsFile.model_validate({"pools": {"c": {**TPU_POOL, "kind": "cpu"}}})


def test_an_unknown_kind_is_an_error_naming_the_registered_ones_never_neuron() -> None:
    with pytest.raises(ReconcilerError, match="unknown accelerator kind 'tpu'") as unknown:
        kind_overlay("tpu")
    assert "cpu, gpu, inferentia" in str(unknown.value.fix)
    with pytest.raises(ValidationError, match="unknown accelerator kind 'tpu': use one of cpu, gpu, inferentia"):
        PoolsFile.model_validate({"pools": {"t": TPU_POOL}})
    with pytest.raises(ValueError, match="unknown accelerator kind"):
        image_tag("sha256:" + "ab" * 32, "tpu")


def test_the_built_in_profiles_keep_what_the_kinds_meant() -> None:
    assert [k.value for k in AcceleratorKind] == ["cpu", "gpu", "inferentia"]
    assert {k.name for k in KINDS.values() if k.compile_needed} == set(NEEDS_COMPILE)
    assert kind_overlay("cpu") == {"envs": [{"name": "MODEL_ACCELERATOR_KIND", "value": "cpu"}]}
    assert "cuda_version" in kind_overlay("gpu")["docker"]
    assert "setup_script" in kind_overlay("inferentia")["docker"]
    assert [image_tag("sha256:" + "cd" * 32, k)[12:] for k in ("cpu", "gpu", "inferentia")] == ["", "-cuda", "-neuron"]
