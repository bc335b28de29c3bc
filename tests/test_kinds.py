"""An accelerator kind is one profile entry: a fake kind (a TPU) registered here and nothing else changed
is accepted by pool validation, gets its own image tag, image key and bento overlay, requests its device
in the rendered Deployment, takes its serving defaults and has its device found by the model service
(pipelines/serving.py, from the image's environment); an unknown kind is an error naming the registered
ones, never the Neuron overlay."""

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
from reconciler.errors import ReconcilerError, SpecError
from reconciler.render.manifests import model_objects

ROOT = Path(__file__).resolve().parents[1]
TPU_POOL = {"kind": "tpu", "nodeSelector": {"cloud.google.com/gke-tpu-accelerator": "tpu-v5-lite-podslice"},
            "device": {"resource": "google.com/tpu", "count": 4}, "hourlyPrice": 1.2}


@pytest.fixture
def tpu(monkeypatch: pytest.MonkeyPatch) -> KindProfile:
    profile = KindProfile("tpu", tag_suffix="-tpu", device_resources=("google.com/tpu",), startup_seconds=900,
                          device_probe=("accel[0-9]*",),  # TPU VMs expose /dev/accel0..3
                          service_provides=frozenset({"jax"}),
                          bento_overlay=lambda sdk: {"envs": [{"name": "MODEL_ACCELERATOR_KIND", "value": "tpu"}],
                                                     "python": {"packages": ["jax[tpu]"]}})
    monkeypatch.setitem(KINDS, "tpu", profile)
    return profile


def test_a_registered_kind_is_read_by_pools_images_overlay_render_and_serving(tpu: KindProfile) -> None:
    pools = PoolsFile.model_validate({"pools": {"tpu-v5e": TPU_POOL}}).pools
    pool = pools["tpu-v5e"]
    assert pool.kind == "tpu" and pool.kind.profile is tpu
    assert pool.strategy.max_surge == 0 and pool.strategy.max_unavailable == 1
    assert image_tag("sha256:" + "ab" * 32, "tpu", "e" * 64).endswith("-tpu")
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


def test_the_service_finds_a_registered_kinds_device_from_its_image_alone(tpu: KindProfile, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """pipelines/serving.py knows no kind by name: the image's environment (the kind's overlay) carries its
    device probe, so the service of a tpu image finds /dev/accel0, loads its artifact there, and is not ready
    (never the CPU) when the device is held but the artifact is missing."""
    from pipelines.serving import load_accelerated

    image_env = {e["name"]: e["value"] for e in kind_overlay("tpu")["envs"]}
    assert image_env["MODEL_DEVICE_GLOBS"] == "accel[0-9]*"
    dev, artifact = tmp_path / "dev", tmp_path / "model.tpu"
    dev.mkdir()
    for name, value in {**image_env, "MODEL_DEVICE_ROOT": str(dev), "MODEL_ACCELERATOR_ARTIFACT": str(artifact)}.items():
        monkeypatch.setenv(name, value)
    _, state = load_accelerated(lambda path: "on the tpu")
    assert (state.kind, state.device, state.backend) == ("tpu", False, "cpu")  # no device on this node
    (dev / "accel0").touch()
    _, state = load_accelerated(lambda path: "on the tpu")
    assert state.device and not state.ready and "missing" in str(state.error)
    artifact.write_bytes(b"compiled")
    model, state = load_accelerated(lambda path: f"on the tpu from {path.name}")
    assert model == "on the tpu from model.tpu" and state.backend == "tpu" and state.ready
    monkeypatch.setenv("MODEL_ACCELERATOR_KIND", "cpu")
    monkeypatch.setenv("MODEL_DEVICE_GLOBS", {e["name"]: e["value"] for e in kind_overlay("cpu")["envs"]}
                       ["MODEL_DEVICE_GLOBS"])  # a CPU image: an empty probe, the CPU serves
    assert load_accelerated(lambda path: "never")[1].backend == "cpu"


def test_an_image_built_before_the_probe_moved_into_the_kind_entry_is_not_ready_on_a_device_node(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An image built before c2a454e names its kind but carries no MODEL_DEVICE_GLOBS: on an inf2 node holding the
    device it is NOT READY, saying to rebuild, instead of serving from the CPU; every kind's overlay now writes
    the variable (empty for cpu), so an image built now is never taken for such an old one."""
    from pipelines.serving import load_accelerated

    dev = tmp_path / "dev"
    dev.mkdir()
    (dev / "neuron0").touch()
    monkeypatch.delenv("MODEL_DEVICE_GLOBS", raising=False)
    for name, value in {"MODEL_DEVICE_ROOT": str(dev), "MODEL_ACCELERATOR_KIND": "inferentia",  # the old overlay
                        "MODEL_ACCELERATOR_ARTIFACT": str(tmp_path / "model.neuron.pt")}.items():
        monkeypatch.setenv(name, value)
    model, state = load_accelerated(lambda path: "never")
    assert model is None and not state.ready and state.backend == "none"
    assert "without MODEL_DEVICE_GLOBS" in str(state.error) and "rebuild the image" in str(state.error)
    for kind in KINDS:
        envs = {e["name"]: e["value"] for e in kind_overlay(kind)["envs"]}
        assert "MODEL_DEVICE_GLOBS" in envs, kind
    monkeypatch.setenv("MODEL_DEVICE_GLOBS", "neuron*")  # the same node with an image built now
    (tmp_path / "model.neuron.pt").write_bytes(b"compiled")
    assert load_accelerated(lambda path: "on the device")[1].backend == "inferentia"


def test_what_a_kinds_image_adds_is_not_asked_of_the_models_lock(tpu: KindProfile, tmp_path: Path) -> None:
    """The plan's lock check: a service served from a tpu pool may import what the tpu image installs (its entry's
    service_provides); the same service on cpu only must have it in its lock."""
    from reconciler.catalog.training import lock_problems

    folder = tmp_path / "models" / "m"
    folder.mkdir(parents=True)
    (folder / "requirements.lock").write_text("numpy==2.2.6\n", encoding="utf-8")
    (folder / "service.py").write_text("import jax\nimport numpy\n", encoding="utf-8")
    assert lock_problems(tmp_path, folder, {"tpu"}) == []
    (problem,) = lock_problems(tmp_path, folder, {"cpu"})
    assert problem.message.startswith("imports jax, but the model's lock models/m/requirements.lock does not pin jax")


def test_a_registered_kind_carries_its_own_image_settings_in_model_yaml(tpu: KindProfile,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """`images:` is keyed by the registered kinds: a model declares `images: {tpu: {...}}` with no edit of the spec
    model, the tpu image gets that bentofile over the kind's overlay and the settings enter the content hash;
    an unregistered kind is an error naming model.yaml, the field images.<kind> and the registered kinds."""
    from reconciler.build.builder import bentofile_overlay
    from reconciler.catalog.files import parse
    from reconciler.source.hashing import _images_of

    data = {"name": "iris", "owner": "a@b.c", "service": "service.py:Iris", "accelerator": "tpu-v5e",
            "images": {"tpu": {"bentofile": {"python": {"packages": ["jax[tpu]==0.4.35"]}}}, "cpu": None}}
    spec = parse(ModelSpec, data, "models/iris/model.yaml")
    assert list(spec.images) == ["tpu"]
    overlay = bentofile_overlay(spec, AcceleratorKind("tpu"))
    assert "jax[tpu]==0.4.35" in overlay["python"]["packages"]
    assert {"name": "MODEL_DEVICE_GLOBS", "value": "accel[0-9]*"} in overlay["envs"]
    assert _images_of(spec) == {"tpu": {"bentofile": {"python": {"packages": ["jax[tpu]==0.4.35"]}}}}

    monkeypatch.delitem(KINDS, "tpu")  # the same model.yaml where no tpu kind is registered
    with pytest.raises(SpecError) as unknown:
        parse(ModelSpec, data, "models/iris/model.yaml")
    (problem,) = unknown.value.problems
    assert (problem.file, problem.field) == ("models/iris/model.yaml", "images.tpu")
    assert problem.message == "unknown accelerator kind 'tpu' under images"
    assert problem.fix is not None and "cpu, gpu, inferentia" in problem.fix


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
        image_tag("sha256:" + "ab" * 32, "tpu", "e" * 64)


def test_the_built_in_profiles_keep_what_the_kinds_meant() -> None:
    assert [k.value for k in AcceleratorKind] == ["cpu", "gpu", "inferentia"]
    assert {k.name for k in KINDS.values() if k.compile_needed} == set(NEEDS_COMPILE)
    assert kind_overlay("cpu") == {"envs": [{"name": "MODEL_ACCELERATOR_KIND", "value": "cpu"},
                                            {"name": "MODEL_DEVICE_GLOBS", "value": ""}]}  # no device to probe
    assert {"name": "MODEL_DEVICE_GLOBS", "value": "nvidia[0-9]*"} in kind_overlay("gpu")["envs"]
    assert {"name": "MODEL_DEVICE_GLOBS", "value": "neuron*"} in kind_overlay("inferentia")["envs"]
    assert "cuda_version" in kind_overlay("gpu")["docker"]
    assert "setup_script" in kind_overlay("inferentia")["docker"]
    assert [image_tag("sha256:" + "cd" * 32, k, "e" * 64)[12:] for k in ("cpu", "gpu", "inferentia")] == \
        ["", "-cuda", "-neuron"]
