"""The Hera pipelines: rendered Workflows validate against Argo's JSON schema and hera's models,
carry the labels/annotations the reconciler and the Argo UI rely on, and place Neuron work on the
Inferentia pool of environments/pools.yaml with a cache key that changes exactly when it should."""

from __future__ import annotations

import dataclasses
import json
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipelines import common, steps
from pipelines.build_image import build_image_workflow, image_tag
from pipelines.neuron import cache_key, dense_layers, forward
from pipelines.neuron_compile import (NeuronOptions, compile_cache_key, neuron_compile_template,
                                      neuron_compile_workflow)
from pipelines.train import train_workflow
from reconciler import labels
from reconciler.catalog.files import load
from reconciler.catalog.pools import PoolsFile
from tests.requirements import missing

ROOT = Path(__file__).resolve().parents[1]
# ../shared beside the checkout (a worktree sits one level deeper: walk up to the first parent holding it)
SCHEMA = next((p / "shared" / "schemas" / "argo-workflows.schema.json" for p in ROOT.parents
               if (p / "shared" / "schemas" / "argo-workflows.schema.json").is_file()),
              ROOT.parent / "shared" / "schemas" / "argo-workflows.schema.json")
WORKFLOW_DEF = "io.argoproj.workflow.v1alpha1.Workflow"
HASH = "sha256:" + "0123456789abcdef" * 4
COMMIT = "4f2c9d1e8b7a6c5d4e3f2a1b0c9d8e7f6a5b4c3d"
REPO = "https://github.com/example/models-gitops.git"
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


@pytest.fixture(scope="module")
def pools():
    return load(PoolsFile, ROOT / "environments" / "pools.yaml").pools


@pytest.fixture(scope="module")
def argo_validator():
    if not SCHEMA.is_file():
        missing(f"Argo's JSON schema is not at {SCHEMA} (it comes with the shared/ folder beside the checkout)")
    from jsonschema.validators import validator_for
    from referencing import Registry, Resource

    schema = _closed(json.loads(SCHEMA.read_text(encoding="utf-8")))
    registry = Registry().with_resource(schema["$id"], Resource.from_contents(schema))
    cls = validator_for(schema)
    return cls({"$ref": f"{schema['$id']}#/definitions/{WORKFLOW_DEF}"}, registry=registry)


def _closed(node):
    """The schema with additionalProperties forced false on every object that lists its properties:
    an unknown (misspelt, or misplaced) field is an error, as the Argo controller's strict decoding makes it."""
    if isinstance(node, dict):
        node = {k: _closed(v) for k, v in node.items()}
        if "properties" in node and "additionalProperties" not in node:
            node["additionalProperties"] = False
        return node
    if isinstance(node, list):
        return [_closed(v) for v in node]
    return node


def _build(pools, model="iris-classifier", pool="gpu-a10g", **kw):
    args = dict(model=model, model_hash=HASH, commit=COMMIT, repo_url=REPO, registry="ghcr.io/example/models",
                bento_url="https://artifacts.example.com/b.bento", environment="staging",
                pool=pools[pool] if pool else None)
    args.update(kw)
    return build_image_workflow(**args)


def _all_workflows(pools):
    return {
        "train-iris": train_workflow(model="iris-classifier", model_hash=HASH, commit=COMMIT, repo_url=REPO),
        "train-digits": train_workflow(model="digits-classifier", model_hash=HASH, commit=COMMIT, repo_url=REPO,
                                       environment="staging", dvc_remote="s3remote"),
        "train-credentials": train_workflow(model="iris-classifier", model_hash=HASH, commit=COMMIT, repo_url=REPO,
                                            environment="prod", dvc_remote="s3remote", dvc_credentials_secret="dvc-s3",
                                            git_credentials_secret="models-git-push"),
        "build-gpu": _build(pools),
        "build-cpu": _build(pools, pool="cpu-general", environment="dev"),
        "build-nopool": _build(pools, pool=None),
        "build-inf2": _build(pools, model="digits-classifier", pool="inf2"),
        "compile-inf2": neuron_compile_workflow(model="digits-classifier", model_hash=HASH, commit=COMMIT, repo_url=REPO,
                                                bento_url="https://artifacts.example.com/b.bento",
                                                environment="prod", pool=pools["inf2"]),
        "build-pr": _build(pools, operations=common.Operations(service_account="argo-builder"),
                           run=common.RunContext(pr_number=42, branch="feature/faster-iris")),
    }


def _as_dict(workflow) -> dict:
    return yaml.safe_load(workflow.to_yaml())


def _templates(doc: dict) -> dict[str, dict]:
    return {t["name"]: t for t in doc["spec"]["templates"]}


# --------------------------------------------------------------------------- validation


def test_every_workflow_validates_against_argo_schema_and_hera_models(pools, argo_validator):
    from hera.workflows.models import Workflow as WorkflowModel

    for name, workflow in _all_workflows(pools).items():
        doc = _as_dict(workflow)
        errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in argo_validator.iter_errors(doc)]
        assert errors == [], f"{name}: {errors}"
        parsed = WorkflowModel.model_validate(doc)
        assert parsed.spec.entrypoint == "main", name
        # the YAML round-trips: what is committed is what is submitted
        assert yaml.safe_load(yaml.safe_dump(doc)) == doc


def test_schema_validator_is_not_vacuous(pools, argo_validator):
    doc = _as_dict(_build(pools))
    doc["spec"]["templates"][0]["retryStrategy"] = {"limit": {"not": "a number"}}
    doc["spec"]["entrypoint"] = 5
    doc["kind"] = "CronWorkflow"
    messages = sorted(e.message for e in argo_validator.iter_errors(doc))
    assert messages == ["'Workflow' was expected", "5 is not of type 'string'",
                        "{'not': 'a number'} is not of type 'string'"]


# --------------------------------------------------------------------------- metadata


def test_every_workflow_is_labelled_and_annotated_for_the_argo_ui(pools):
    for name, workflow in _all_workflows(pools).items():
        meta = _as_dict(workflow)["metadata"]
        wf_labels, annotations = meta["labels"], meta["annotations"]
        for key in (labels.MODEL, labels.MODEL_HASH, labels.ENVIRONMENT, labels.GIT_COMMIT):
            assert key in wf_labels, (name, key)
        for key, value in wf_labels.items():
            assert len(value) <= 63 and LABEL_VALUE.match(value), (name, key, value)
        assert wf_labels[labels.GIT_COMMIT] == COMMIT
        assert wf_labels[labels.MODEL_HASH] == ("sha256-" + HASH[7:])[:63]
        assert annotations[labels.MODEL_HASH] == HASH  # the full hash stays in an annotation
        assert annotations[common.TITLE] and annotations[common.DESCRIPTION]
        assert annotations[common.COMMIT_URL] == f"https://github.com/example/models-gitops/commit/{COMMIT}"


@pytest.mark.parametrize("value, expected", [
    ("sha256:" + "a" * 64, "sha256-" + "a" * 56),
    ("iris-classifier", "iris-classifier"),
    ("-weird value!-", "weird-value"),
    ("x" * 70 + "-", "x" * 63),
])
def test_label_value(value, expected):
    assert common.label_value(value) == expected


@pytest.mark.parametrize("url", [
    "https://github.com/example/models-gitops.git",
    "https://github.com/example/models-gitops/",
    "git@github.com:example/models-gitops.git",
    "ssh://git@github.com/example/models-gitops.git",
])
def test_commit_url_from_any_remote_form(url):
    assert common.commit_url(url, COMMIT) == f"https://github.com/example/models-gitops/commit/{COMMIT}"


def test_a_commit_that_is_not_a_sha_is_refused():
    with pytest.raises(ValueError, match="not a git SHA"):
        train_workflow(model="iris-classifier", model_hash=HASH, commit="main", repo_url=REPO)


# --------------------------------------------------------------------------- train DAG


def test_train_dag_follows_the_shared_step_graph_and_wires_artifacts():
    doc = _as_dict(train_workflow(model="digits-classifier", model_hash=HASH, commit=COMMIT, repo_url=REPO))
    assert doc["metadata"]["generateName"] == "train-digits-classifier-"
    templates = _templates(doc)
    tasks = {t["name"]: t for t in templates["main"]["dag"]["tasks"]}
    assert list(tasks) == [s.name for s in steps.STEPS]
    for step in steps.STEPS:
        assert set(filter(None, (tasks[step.name].get("depends") or "").split(" && "))) == set(step.depends)
        script = templates[step.name]["container"]["args"][0]
        assert f"python -m pipelines.steps {step.name}" in script  # the tasks run the shared step functions
        source = next(a for a in templates[step.name]["inputs"]["artifacts"] if a["name"] == "source")
        assert source["git"] == {"repo": REPO, "revision": COMMIT}
    assert tasks["evaluate"]["arguments"]["artifacts"] == [
        {"name": "model", "from": "{{tasks.train.outputs.artifacts.model}}"}]
    outputs = {a["name"] for a in templates["register"]["outputs"]["artifacts"]}
    assert outputs == {"pointer"}
    assert "--model digits-classifier" in templates["train"]["container"]["args"][0]


def test_train_workflow_runs_the_model_folders_own_train_py():
    """The Argo train and evaluate tasks run `python -m pipelines.steps` from the checkout root, which
    loads models/<model>/train.py there: a new model needs no platform change."""
    workflow = train_workflow(model="fraud-detector", model_hash=HASH, commit=COMMIT, repo_url=REPO).to_dict()
    scripts = {t["name"]: t["container"]["args"][0] for t in workflow["spec"]["templates"] if "container" in t}
    for step in ("train", "evaluate"):
        assert f"cd {common.SOURCE_PATH}\npython -m pipelines.steps {step} --model fraud-detector" in scripts[step]


def test_dag_order_rejects_cycles_and_unknown_dependencies():
    a, b = steps.StepDef("a", ("b",), ""), steps.StepDef("b", ("a",), "")
    with pytest.raises(steps.StepError, match="cycle"):
        steps.dag_order((a, b))
    with pytest.raises(steps.StepError, match="unknown step 'zzz'"):
        steps.dag_order((steps.StepDef("a", ("zzz",), ""),))
    c = steps.StepDef("c", ("a2",), "")
    assert [s.name for s in steps.dag_order((c, steps.StepDef("a2", (), "")))] == ["a2", "c"]


# --------------------------------------------------------------------------- image build


def test_gpu_build_is_one_buildkit_task_that_outputs_the_digest(pools):
    doc = _as_dict(_build(pools))
    assert re.fullmatch(r"build-iris-classifier-0123456789ab-cuda-[0-9a-f]{6}", doc["metadata"]["name"])
    templates = _templates(doc)
    assert [t["name"] for t in templates["main"]["dag"]["tasks"]] == ["build"]
    build = templates["build"]
    assert build["container"]["image"].startswith("moby/buildkit:") and build["container"]["image"].endswith("-rootless")
    script = build["container"]["args"][0]
    assert "buildctl-daemonless.sh build" in script
    assert "IMAGE='{{workflow.parameters.image-ref}}'" in script and "name=$IMAGE,push=true" in script
    assert {p["name"]: p["valueFrom"]["path"] for p in build["outputs"]["parameters"]} == {
        "digest": "/work/digest", "image": "/work/image"}
    assert {p["name"]: p["value"] for p in doc["spec"]["arguments"]["parameters"]}["image-ref"] == \
        "ghcr.io/example/models/iris-classifier:0123456789ab-cuda"
    bento = build["inputs"]["artifacts"][0]
    assert bento["http"]["url"] == "{{workflow.parameters.bento-url}}"
    params = {p["name"]: p["value"] for p in doc["spec"]["arguments"]["parameters"]}
    assert params["bento-url"] == "https://artifacts.example.com/b.bento"
    assert build["container"]["securityContext"]["runAsUser"] == 1000


def test_build_name_is_one_per_image_repository_and_tag(pools):
    def name(**kw):
        return _as_dict(_build(pools, **kw))["metadata"]["name"]

    assert name() == name(environment="prod", bento_url="https://elsewhere/b.bento")  # same image: same build
    assert name() != name(registry="localhost:5001/models")  # same hash, other registry: its own build
    assert name() != name(model_hash="sha256:" + "f" * 64)
    long = name(model="m" * 63)
    assert len(long) <= 63 and long.endswith(("-0123456789ab-cuda-" + long[-6:]))


def test_build_script_extracts_the_digest_from_buildkit_metadata(tmp_path, pools):
    """Run the digest-extraction lines of the build script against a real-format metadata file."""
    import shutil
    import subprocess

    if not shutil.which("sh") or not shutil.which("sed"):
        missing("needs sh and sed")
    script = _as_dict(_build(pools))["spec"]["templates"]
    script = next(t for t in script if t["name"] == "build")["container"]["args"][0]
    tail = "\n".join(line for line in script.splitlines() if ("/work/" in line or line.startswith("IMAGE="))
                     and "buildctl" not in line and "tar -xf" not in line and "mkdir" not in line)
    tail = tail.replace("/work/", f"{tmp_path}/").replace(
        "{{workflow.parameters.image-ref}}", "localhost:5001/models/iris-classifier:0123456789ab")
    digest = "sha256:" + "9f" * 32
    (tmp_path / "metadata.json").write_text(json.dumps(
        {"buildx.build.ref": "x", "containerimage.config.digest": "sha256:" + "11" * 32,
         "containerimage.digest": digest}, indent=2))
    subprocess.run(["sh", "-c", "set -eu\n" + tail], check=True, capture_output=True)
    assert (tmp_path / "digest").read_text() == digest
    # a registry with a port: only the tag is cut off
    assert (tmp_path / "image").read_text() == f"localhost:5001/models/iris-classifier@{digest}"
    (tmp_path / "metadata.json").write_text("{}")
    failed = subprocess.run(["sh", "-c", "set -eu\n" + tail], capture_output=True, text=True)
    assert failed.returncode != 0 and "no containerimage.digest" in failed.stderr


def test_inferentia_build_compiles_on_the_inf2_pool_first(pools):
    inf2 = pools["inf2"]
    doc = _as_dict(_build(pools, model="digits-classifier", pool="inf2"))
    templates = _templates(doc)
    tasks = {t["name"]: t for t in templates["main"]["dag"]["tasks"]}
    assert list(tasks) == ["neuron-compile", "build"] and tasks["build"]["depends"] == "neuron-compile"
    assert tasks["build"]["arguments"]["artifacts"] == [
        {"name": "neuron-model", "from": "{{tasks.neuron-compile.outputs.artifacts.neuron-model}}"}]
    params = {p["name"]: p["value"] for p in doc["spec"]["arguments"]["parameters"]}
    assert params["image-ref"] == "ghcr.io/example/models/digits-classifier:0123456789ab-neuron"
    assert "cp /work/neuron/model.neuron.pt /work/context/src/model.neuron.pt" in templates["build"]["container"]["args"][0]

    compile_ = templates["neuron-compile"]
    assert compile_["nodeSelector"] == inf2.node_selector
    assert compile_["tolerations"] == inf2.tolerations
    resources = compile_["container"]["resources"]
    assert resources["limits"]["aws.amazon.com/neuron"] == str(inf2.device.count)
    assert resources["limits"]["hugepages-2Mi"] == inf2.hugepages_2mi
    assert compile_["container"]["securityContext"]["capabilities"]["add"] == ["IPC_LOCK"]
    # memoized by the cache key, which the task passes in
    key = tasks["neuron-compile"]["arguments"]["parameters"][0]
    assert key == {"name": "cache-key", "value": compile_cache_key(HASH)}
    assert compile_["memoize"]["key"] == "{{inputs.parameters.cache-key}}"
    assert compile_["memoize"]["cache"]["configMap"]["name"] == "neuron-compile-cache"
    out = compile_["outputs"]["artifacts"][0]
    assert out["s3"]["key"] == "neuron-cache/{{inputs.parameters.cache-key}}/model.neuron.pt"
    assert "--input-shape 1,64" in compile_["container"]["args"][0]


def test_gpu_and_cpu_builds_have_no_neuron_step(pools):
    for pool in ("gpu-a10g", "cpu-general"):
        names = [t["name"] for t in _as_dict(_build(pools, pool=pool))["spec"]["templates"]]
        assert "neuron-compile" not in names
    assert image_tag(HASH, pools["cpu-general"]) == "0123456789ab"
    assert image_tag(HASH, pools["gpu-a10g"]) == "0123456789ab-cuda"
    assert image_tag(HASH, pools["inf2"]) == "0123456789ab-neuron"


def test_neuron_template_refuses_a_non_inferentia_pool(pools):
    with pytest.raises(ValueError, match="inferentia"):
        neuron_compile_template(pools["gpu-a10g"], common.Source(REPO, COMMIT))


def test_neuron_cache_key_covers_weights_sdk_image_shapes_and_conversion_code():
    from reconciler.catalog.accelerators import COMPILED_FILE as ACCEL_FILE, neuron_sdk
    from pipelines.neuron import COMPILED_FILE, conversion_code_hash

    sdk, code = neuron_sdk("2.18.1"), conversion_code_hash()
    base = cache_key(HASH, sdk, [(1, 64)], code)
    assert base == cache_key(HASH, sdk, ((1, 64),), code)
    assert re.fullmatch(r"neuron-2-18-1-[0-9a-f]{24}", base)
    other_sdk = dataclasses.replace(sdk, version="2.19.0")
    other_image = dataclasses.replace(sdk, ubuntu="ubuntu22.04")  # same release number, another compile image
    others = {cache_key("sha256:other", sdk, [(1, 64)], code), cache_key(HASH, other_sdk, [(1, 64)], code),
              cache_key(HASH, other_image, [(1, 64)], code),
              cache_key(HASH, sdk, [(4, 64)], code), cache_key(HASH, sdk, [(1, 64), (1, 8)], code),
              cache_key(HASH, sdk, [(1, 64)], "0" * 64)}
    assert base not in others and len(others) == 6
    options = NeuronOptions(input_shapes=((1, 64),))
    assert compile_cache_key(HASH, options) == base
    assert options.image == sdk.compile_image  # derived: the compile image cannot drift from the SDK
    assert COMPILED_FILE == ACCEL_FILE


# --------------------------------------------------------------------------- neuron conversion (numpy)


def test_dense_layers_reproduce_the_sklearn_probabilities(tmp_path):
    steps.train("digits-classifier", tmp_path, repo_root=ROOT)
    model = pickle.loads((tmp_path / "model.pkl").read_bytes())
    x = np.random.default_rng(0).uniform(0, 16, size=(20, 64))
    layers = dense_layers(model)
    assert [layer.activation for layer in layers] == ["identity", "relu", "softmax"]
    np.testing.assert_allclose(forward(layers, x), model.predict_proba(x), rtol=1e-6, atol=1e-9)


def test_dense_layers_refuse_unsupported_estimators(tmp_path):
    steps.train("iris-classifier", tmp_path, repo_root=ROOT)
    with pytest.raises(ValueError, match="LogisticRegression"):
        dense_layers(pickle.loads((tmp_path / "model.pkl").read_bytes()))


# --------------------------------------------------------------------------- what Argo operators expect


def test_every_workflow_has_gc_ttl_deadline_identity_pod_labels_and_retries(pools):
    for name, workflow in _all_workflows(pools).items():
        doc = _as_dict(workflow)
        spec = doc["spec"]
        assert spec["podGC"] == {"strategy": "OnPodSuccess"}, name
        assert spec["ttlStrategy"]["secondsAfterSuccess"] > 0 and spec["ttlStrategy"]["secondsAfterFailure"] > 0, name
        assert spec["activeDeadlineSeconds"] > 0, name
        pod = spec["podMetadata"]["labels"]
        assert {labels.MODEL, labels.MODEL_HASH, labels.ENVIRONMENT} <= set(pod), name
        assert all(LABEL_VALUE.match(v) for v in pod.values()), name
        # the commit under a label key the Argo UI's links can name (no '.')
        assert doc["metadata"]["labels"][common.GIT_COMMIT_KEY] == COMMIT, name
        for template in spec["templates"]:
            if template["name"] in ("build", "neuron-compile"):
                retry = template["retryStrategy"]
                assert int(retry["limit"]) >= 1 and retry["backoff"]["factor"] and retry["backoff"]["duration"], name
        if name.startswith(("build-gpu", "build-cpu", "build-inf2", "compile")):
            assert labels.POOL in pod, name


def test_pool_label_buildkit_cache_and_pr_labels(pools):
    doc = _as_dict(_all_workflows(pools)["build-pr"])
    assert doc["spec"]["podMetadata"]["labels"][labels.POOL] == "gpu-a10g"
    assert doc["spec"]["serviceAccountName"] == "argo-builder"
    script = _templates(doc)["build"]["container"]["args"][0]
    cache = "ghcr.io/example/models/iris-classifier:buildcache-gpu"
    assert f"--export-cache type=registry,ref={cache},mode=max" in script
    assert f"--import-cache type=registry,ref={cache}" in script
    assert doc["metadata"]["labels"][common.PR_KEY] == "42"
    assert doc["metadata"]["labels"][common.BRANCH_KEY] == "feature-faster-iris"
    assert common.RunContext.from_env({"GITHUB_REF": "refs/pull/7/merge", "GITHUB_HEAD_REF": "fix"}) == \
        common.RunContext(7, "fix")


def test_links_configmap_and_a_local_origin_is_said_not_linked(pools, tmp_path):
    cm = common.links_configmap(REPO)
    links = yaml.safe_load(cm["data"]["links"])
    assert {link["name"]: link["url"] for link in links} == {
        "Commit": "https://github.com/example/models-gitops/commit/${metadata.labels.git-commit}",
        "Pull request": "https://github.com/example/models-gitops/pull/${metadata.labels.pr-number}"}
    local = str(tmp_path / "origin.git")
    with pytest.raises(ValueError, match="not an https URL") as info:
        common.links_configmap(local)
    assert local not in str(info.value)  # never a path
    doc = _as_dict(train_workflow(model="iris-classifier", model_hash=HASH, commit=COMMIT, repo_url=local))
    annotations = doc["metadata"]["annotations"]
    assert common.COMMIT_URL not in annotations and "not an https URL" in annotations[common.NO_LINK]
    assert local not in json.dumps(annotations)


def test_the_shipped_links_configmap_is_what_the_command_prints():
    shipped = yaml.safe_load((ROOT / "pipelines" / "argo" / "workflow-controller-links.yaml").read_text())
    assert shipped == common.links_configmap(REPO)


def test_readme_pipeline_list_matches_what_pipeline_render_offers():
    from reconciler.build.pipeline_runner import PIPELINES

    readme = (ROOT / "README.md").read_text()
    listed = set(re.findall(r"`pipeline render ([a-z-]+)`", readme))
    assert listed == set(PIPELINES), listed


def test_the_build_labels_the_image_with_the_commit_its_bento_was_built_from(tmp_path, pools):
    """Run the whole build script, with a recording stand-in for buildctl (no BuildKit here), on a real tar of
    a bento folder: the commit in its gitops-version.json becomes the image label `reconciler build` reads."""
    import os
    import subprocess
    import tarfile

    from reconciler.build.bento import containerize_command

    script = next(t for t in _as_dict(_build(pools))["spec"]["templates"] if t["name"] == "build")["container"]["args"][0]
    script = script.replace("/work/", f"{tmp_path}/").replace("{{workflow.parameters.image-ref}}", "r.test/m:0123456789ab")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "buildctl-daemonless.sh").write_text(  # records its arguments, writes BuildKit's metadata file
        "#!/bin/sh\nprintf '%s\\n' \"$@\" > " + str(tmp_path / "args") + "\n"
        "echo '{\"containerimage.digest\": \"sha256:" + "ab" * 32 + "\"}' > " + str(tmp_path / "metadata.json") + "\n")
    (bin_dir / "buildctl-daemonless.sh").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    commit = "c0" * 20

    def run(version: str | None) -> list[str]:
        import shutil

        shutil.rmtree(tmp_path / "context", ignore_errors=True)  # each pod starts with an empty /work
        bento = tmp_path / "bento-src"
        (bento / "src").mkdir(parents=True, exist_ok=True)
        (bento / "src" / "gitops-version.json").unlink(missing_ok=True)
        if version is not None:
            (bento / "src" / "gitops-version.json").write_text(version)
        with tarfile.open(tmp_path / "bento.bento", "w") as tar:
            tar.add(bento, arcname=".")
        subprocess.run(["sh", "-c", script], check=True, capture_output=True, env=env)
        return (tmp_path / "args").read_text().splitlines()

    labelled = run(json.dumps({"git_commit": commit, "model_hash": HASH, "weights_md5": {}}, indent=2, sort_keys=True))
    assert labelled[labelled.index("--opt") + 1] == f"label:gitops.ml/git-commit={commit}"
    for version in (None, json.dumps({"git_commit": "unknown"})):  # no record: no label, never a guess
        assert not any(a.startswith("label:") for a in run(version))
    # the local engine's build sets the same label
    command = containerize_command("m:0123456789ab", "r.test/m:0123456789ab", "docker", {"gitops.ml/git-commit": commit})
    assert command[-2:] == ["--opt", f"label=gitops.ml/git-commit={commit}"]
