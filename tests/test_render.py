"""Rendering with real kustomize: pool placement, ownership labels, determinism, isolation, safety."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from reconciler import labels as L
from reconciler.catalog.load import load_catalog
from reconciler.errors import UnsafeSourceError
from reconciler.render.environment import content_hash, render_environment
from tests.conftest import TEMPLATE_MODELS

IMAGES = {m: f"registry.test/{m}:abc" for m in TEMPLATE_MODELS}  # an image for every model of the template


def by_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def container(deployment: dict) -> dict:
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    return c


@pytest.fixture
def catalog(template_repo):
    return load_catalog(template_repo)


def test_prod_gpu_model_requests_the_gpu_and_lands_on_the_gpu_pool(catalog):
    result = render_environment(catalog, "prod", images=IMAGES)
    assert result.errors == {}
    (deploy,) = by_kind(result.models["iris-classifier"].objects, "Deployment")
    pod = deploy["spec"]["template"]["spec"]
    assert container(deploy)["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["nodeSelector"]["node.kubernetes.io/instance-type"] == "g5.xlarge"
    assert {"key": "nvidia.com/gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"} in pod["tolerations"]
    assert deploy["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0
    assert deploy["metadata"]["namespace"] == "models-prod"
    # the prod overlay (a kustomize Component) was applied
    assert pod["priorityClassName"] == "model-serving"


def test_prod_inferentia_model_gets_neuron_device_hugepages_and_ipc_lock(catalog):
    result = render_environment(catalog, "prod", images=IMAGES)
    (deploy,) = by_kind(result.models["digits-classifier"].objects, "Deployment")
    c = container(deploy)
    assert c["resources"]["requests"]["aws.amazon.com/neuron"] == "1"
    assert c["resources"]["limits"]["hugepages-2Mi"] == "256Mi"
    assert c["securityContext"]["capabilities"]["add"] == ["IPC_LOCK"]
    pod = deploy["spec"]["template"]["spec"]
    assert any(t["key"] == "aws.amazon.com/neuron" for t in pod["tolerations"])
    assert {"name": "hugepages", "emptyDir": {"medium": "HugePages"}} in pod["volumes"]


def test_dev_runs_both_models_on_cpu(catalog):
    result = render_environment(catalog, "dev", images=IMAGES)
    for name in ("iris-classifier", "digits-classifier"):
        (deploy,) = by_kind(result.models[name].objects, "Deployment")
        resources = container(deploy)["resources"]
        assert not {"nvidia.com/gpu", "aws.amazon.com/neuron"} & set(resources["requests"])
        assert "tolerations" not in deploy["spec"]["template"]["spec"]
        assert deploy["metadata"]["labels"][L.POOL] == "cpu-general"


def test_every_object_carries_ownership_labels_and_its_content_hash(catalog):
    result = render_environment(catalog, "staging", images=IMAGES)
    for obj in result.objects():
        labels = obj["metadata"]["labels"]
        assert labels[L.MANAGED_BY] == L.MANAGER
        # a cluster-scoped object (the PriorityClass) may be shared by the environments of a cluster: it
        # names none of them (reconciler/sync/shared.py); everything in the namespace names its environment
        shared_by_envs = "namespace" not in obj["metadata"]
        assert labels.get(L.ENVIRONMENT) == (None if shared_by_envs else "staging")
        # the environment's own objects (its PriorityClass) belong to no model
        assert labels[L.MODEL] in IMAGES if obj not in result.shared else L.MODEL not in labels
        assert obj["metadata"]["annotations"][L.CONTENT_HASH] == content_hash(obj)
    kinds = sorted(o["kind"] for o in result.models["iris-classifier"].objects)
    # iris autoscales on requests (gpu pool), which its PodMonitor has scraped (staging's monitoring: pod-monitor)
    assert kinds == ["Deployment", "PodMonitor", "ScaledObject", "Service", "Service"]


def test_rendering_is_byte_identical(catalog, template_repo):
    first = render_environment(catalog, "prod", images=IMAGES).to_yaml()
    second = render_environment(load_catalog(template_repo), "prod", images=IMAGES).to_yaml()
    assert first == second and first.startswith("---\n")


def test_a_broken_overlay_patch_fails_validation_for_each_model_with_the_field(catalog, template_repo):
    patch = template_repo / "environments/staging/patches/deployment.yaml"
    patch.write_text(patch.read_text().replace("terminationGracePeriodSeconds: 60",
                                               "terminationGracePeriodSeconds: 60\n      restartPolice: Always"))
    result = render_environment(load_catalog(template_repo), "staging", images=IMAGES)
    assert set(result.errors) == set(IMAGES)
    assert "restartPolice" in str(result.errors["iris-classifier"])


def test_one_models_kustomize_failure_does_not_stop_the_others(catalog, monkeypatch):
    from reconciler.render import environment as render_module

    real = render_module.kustomize.build

    def build(folder: Path, **kw):
        if "digits" in folder.name or folder.name == "render-all":
            from reconciler.errors import RenderError
            raise RenderError("boom: digits patch conflict")
        return real(folder, **kw)

    monkeypatch.setattr(render_module.kustomize, "build", build)
    result = render_environment(catalog, "prod", images=IMAGES)
    assert set(result.models) == set(TEMPLATE_MODELS) - {"digits-classifier"}  # the others rendered
    assert "boom" in str(result.errors["digits-classifier"])


def test_kustomization_reaching_outside_the_repository_is_refused(template_repo, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "kustomization.yaml").write_text("apiVersion: kustomize.config.k8s.io/v1alpha1\nkind: Component\n")
    kfile = template_repo / "environments/prod/kustomization.yaml"
    kfile.write_text(kfile.read_text() + "components:\n  - ../../../outside\n")
    with pytest.raises(UnsafeSourceError, match=r"environments/prod/kustomization.yaml \(field 'components.0'\)"):
        render_environment(load_catalog(template_repo), "prod", images=IMAGES)


def test_remote_base_is_refused(template_repo):
    kfile = template_repo / "environments/dev/kustomization.yaml"
    kfile.write_text(kfile.read_text() + "resources:\n  - https://github.com/acme/base//deploy?ref=v1\n")
    with pytest.raises(UnsafeSourceError, match="remote base"):
        render_environment(load_catalog(template_repo), "dev", images=IMAGES)


def test_symlink_escaping_the_repository_is_refused(template_repo, tmp_path):
    secret = tmp_path / "secret.yaml"
    secret.write_text("apiVersion: v1\nkind: Secret\n")
    os.symlink(secret, template_repo / "environments/dev/patches/extra.yaml")
    with pytest.raises(UnsafeSourceError, match="symlink"):
        render_environment(load_catalog(template_repo), "dev", images=IMAGES)


def test_plugins_are_refused(template_repo):
    kfile = template_repo / "environments/staging/kustomization.yaml"
    kfile.write_text(kfile.read_text() + "generators:\n  - plugin.yaml\n")
    with pytest.raises(UnsafeSourceError, match="plugins"):
        render_environment(load_catalog(template_repo), "staging", images=IMAGES)


def test_inferentia_pools_run_the_neuron_compiled_image_variant(template_repo):
    from reconciler.catalog.image_lock import ImageStore, digests_of, resolve_images
    from reconciler.catalog.images import image_tag
    from reconciler.source.hashing import model_hashes

    catalog = load_catalog(template_repo)
    hashes = model_hashes(template_repo, "HEAD", catalog.models.values())
    store = ImageStore(template_repo / "no-images.json")
    kinds = digests_of(catalog)

    def tag(model: str, kind: str) -> str:
        return image_tag(hashes[model], kind, kinds.of(catalog.models[model].spec, kind))

    for env, kind in (("prod", "inferentia"), ("dev", "cpu")):
        images = resolve_images(catalog, env, hashes, store=store)
        result = render_environment(catalog, env, images=images)
        (deploy,) = by_kind(result.models["digits-classifier"].objects, "Deployment")
        assert container(deploy)["image"] == \
            f"{catalog.environments[env].registry}/digits-classifier:{tag('digits-classifier', kind)}"
    assert tag("digits-classifier", "inferentia").endswith("-neuron")
    (gpu,) = by_kind(result.models["iris-classifier"].objects, "Deployment")
    assert container(gpu)["image"].endswith(":" + tag("iris-classifier", "cpu"))


def test_pod_monitor_is_rendered_where_the_environment_asks_for_it(template_repo):
    catalog = load_catalog(template_repo)
    assert catalog.environments["staging"].monitoring == "pod-monitor"  # the template's staging and prod
    staging = render_environment(catalog, "staging", images=IMAGES)
    (monitor,) = by_kind(staging.models["iris-classifier"].objects, "PodMonitor")
    assert monitor["metadata"]["namespace"] == "models-staging"
    assert monitor["spec"]["selector"]["matchLabels"] == {L.MODEL: "iris-classifier"}
    assert monitor["spec"]["podTargetLabels"] == [L.MODEL, L.TRACK, L.POOL]
    assert by_kind(render_environment(catalog, "dev", images=IMAGES).objects(), "PodMonitor") == []  # none
    env_file = template_repo / "environments/prod/environment.yaml"
    for mode in ("external", "none"):  # the cluster's own scrape config, or nothing: no PodMonitor either way
        env_file.write_text(re.sub(r"(?m)^monitoring: .*$", f"monitoring: {mode}", env_file.read_text()))
        assert by_kind(render_environment(load_catalog(template_repo), "prod", images=IMAGES).objects(),
                       "PodMonitor") == []


def test_an_overlay_that_generates_objects_of_no_model_is_an_environment_error(template_repo):
    from reconciler.errors import SpecError

    kfile = template_repo / "environments/dev/kustomization.yaml"
    kfile.write_text(kfile.read_text() + "configMapGenerator:\n  - name: shared\n    literals: [a=b]\n")
    with pytest.raises(SpecError, match=r"ConfigMap/shared.*belongs to no model") as info:
        render_environment(load_catalog(template_repo), "dev", images=IMAGES)
    assert info.value.problems[0].file == "environments/dev/kustomization.yaml"


def test_models_are_rendered_in_chunks_with_the_same_result(catalog, monkeypatch):
    from reconciler.render import environment as render_module

    whole = render_environment(catalog, "prod", images=IMAGES).to_yaml()
    monkeypatch.setattr(render_module, "CHUNK", 1)
    assert render_environment(catalog, "prod", images=IMAGES).to_yaml() == whole


def test_pods_carry_the_model_hash_and_weights_md5_the_service_returns(template_repo):
    """Issue #15 item 6: the pod template annotations hold the values of X-Model-Version (the content hash
    and the DVC md5 of the weights), rendered through the plan's path, and they are in the render key."""
    import yaml

    from pipelines.serving import version_labels
    from reconciler.build.builder import version_record
    from reconciler.catalog.image_lock import model_versions
    from reconciler.desired.state import desired_state
    from reconciler.render.environment import render_keys
    from reconciler.source.hashing import model_hashes

    catalog = load_catalog(template_repo)
    hashes = model_hashes(template_repo, "HEAD", catalog.models.values())
    state = desired_state(catalog, "HEAD", hashes, environments=["prod"])
    assert state.renders["prod"].errors == {}
    for name in ("digits-classifier", "iris-classifier"):
        pointer = yaml.safe_load((template_repo / "models" / name / "model.pkl.dvc").read_text())
        deployments = by_kind(state.renders["prod"].models[name].objects, "Deployment")
        assert deployments
        for deploy in deployments:
            annotations = deploy["spec"]["template"]["metadata"]["annotations"]
            assert annotations[L.MODEL_HASH] == hashes[name].digest
            assert annotations[L.WEIGHTS_MD5] == pointer["outs"][0]["md5"]
            # the same values the build writes into the bento's gitops-version.json, as the service reports them
            served = version_labels(version_record(template_repo, catalog.models[name], hashes[name]))
            assert (served["model_hash"], served["weights_md5"]) == (annotations[L.MODEL_HASH], annotations[L.WEIGHTS_MD5])
            # never the rendering commit: the build commit comes from the image lock, which names no image here
            assert L.GIT_COMMIT not in annotations
    # the render cache key covers the annotations
    images = {n: "registry.test/x:abc" for n in catalog.models}
    versions = model_versions(catalog, hashes)
    changed = {**versions, "iris-classifier": {kind: {**v, L.WEIGHTS_MD5: "0" * 32}
                                               for kind, v in versions["iris-classifier"].items()}}
    before = render_keys(catalog, "dev", images, versions=versions)
    after = render_keys(catalog, "dev", images, versions=changed)
    assert before["digits-classifier"] == after["digits-classifier"]
    assert before["iris-classifier"] != after["iris-classifier"]


def test_the_render_command_state_leaves_out_only_what_a_plan_review_reads(template_repo):
    """`reconciler render` asks desired_at for no review (metrics.json and model.yaml as written are a plan's):
    the rendered objects and errors are the ones a plan's state holds."""
    from reconciler.desired.state import desired_at

    full = desired_at(template_repo, None, ["prod"])
    lean = desired_at(template_repo, None, ["prod"], review=False)
    assert full.metrics and full.raw_specs  # the template's models have evaluation metrics
    assert lean.metrics == {} and lean.raw_specs == {}
    assert lean.renders["prod"].to_yaml() == full.renders["prod"].to_yaml()
    assert lean.renders["prod"].errors == full.renders["prod"].errors and lean.hashes == full.hashes
