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
from pipelines.neuron import (ARCHITECTURES, LAYERS_FILE, MANIFEST_FILE, architecture_of, cache_key, dense_layers,
                              export_model, forward, read_layers)
from pipelines.neuron_compile import (NeuronOptions, compile_cache_key, neuron_compile_template,
                                      neuron_compile_workflow)
from pipelines.train import train_workflow
from reconciler import labels
from reconciler.catalog import images
from reconciler.catalog.files import load
from reconciler.catalog.pools import PoolsFile
from tests.requirements import missing

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "tests" / "upstream-schemas" / "argo-workflows.schema.json"  # upstream's, in the repository
WORKFLOW_DEF = "io.argoproj.workflow.v1alpha1.Workflow"
HASH = "sha256:" + "0123456789abcdef" * 4
KIND_DIGEST = "e" * 64  # what a kind's build adds (reconciler.catalog.image_inputs): part of the tag
TAGS = {k: images.image_tag(HASH, k, KIND_DIGEST) for k in ("cpu", "gpu", "inferentia")}
COMMIT = "4f2c9d1e8b7a6c5d4e3f2a1b0c9d8e7f6a5b4c3d"
REPO = "https://github.com/example/models-gitops.git"
REMOTES = {"s3remote": "s3://models/dvc"}
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


@pytest.fixture(scope="module")
def pools():
    return load(PoolsFile, ROOT / "environments" / "pools.yaml").pools


@pytest.fixture(scope="module")
def argo_validator():
    assert SCHEMA.is_file(), f"Argo's JSON schema is missing from {SCHEMA}: `git checkout -- tests/upstream-schemas`"
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
    args = dict(model=model, model_hash=HASH, kind_digest=KIND_DIGEST, commit=COMMIT, repo_url=REPO,
                registry="ghcr.io/example/models",
                bento_url="https://artifacts.example.com/b.bento", environment="staging",
                pool=pools[pool] if pool else None)
    args.update(kw)
    return build_image_workflow(**args)


def _all_workflows(pools):
    return {
        "train-iris": train_workflow(model="iris-classifier", model_hash=HASH, commit=COMMIT, repo_url=REPO),
        "train-digits": train_workflow(model="digits-classifier", model_hash=HASH, commit=COMMIT, repo_url=REPO,
                                       environment="staging", dvc_remote="s3remote", dvc_remotes=REMOTES),
        "train-credentials": train_workflow(model="iris-classifier", model_hash=HASH, commit=COMMIT, repo_url=REPO,
                                            environment="prod", dvc_remote="s3remote", dvc_credentials_secret="dvc-s3",
                                            git_credentials_secret="models-git-push", dvc_remotes=REMOTES),
        "train-gs": train_workflow(model="iris-classifier", model_hash=HASH, commit=COMMIT, repo_url=REPO,
                                   dvc_remote="gcs", dvc_remotes={"gcs": "gs://models/dvc"}),
        "train-azure": train_workflow(model="iris-classifier", model_hash=HASH, commit=COMMIT, repo_url=REPO,
                                      dvc_remote="blob", dvc_remotes={"blob": "azure://models/dvc"}),
        "train-local": train_workflow(model="iris-classifier", model_hash=HASH, commit=COMMIT, repo_url=REPO,
                                      dvc_remote="local", dvc_remotes={"local": "/srv/dvc-storage"}),
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
    assert re.fullmatch(rf"build-iris-classifier-{TAGS['gpu']}-[0-9a-f]{{6}}", doc["metadata"]["name"])
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
        f"ghcr.io/example/models/iris-classifier:{TAGS['gpu']}"
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
    assert name() != name(kind_digest="d" * 64)  # the kind's build inputs changed: a new image, its own build
    long = name(model="m" * 63)
    assert len(long) <= 63 and long.endswith((f"-{TAGS['gpu']}-" + long[-6:]))


def test_build_script_extracts_the_digest_from_buildkit_metadata(tmp_path, pools):
    """Run the digest-extraction lines of the build script against a real-format metadata file."""
    import shutil
    import subprocess

    if not shutil.which("sh") or not shutil.which("sed"):
        missing("needs sh and sed: `apt-get install dash sed`")
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
    assert list(tasks) == ["neuron-export", "neuron-compile", "build"] and tasks["build"]["depends"] == "neuron-compile"
    assert tasks["build"]["arguments"]["artifacts"] == [
        {"name": "neuron-model", "from": "{{tasks.neuron-compile.outputs.artifacts.neuron-model}}"}]
    params = {p["name"]: p["value"] for p in doc["spec"]["arguments"]["parameters"]}
    assert params["image-ref"] == f"ghcr.io/example/models/digits-classifier:{TAGS['inferentia']}"
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
    assert "--input-shape 1,64" in templates["neuron-export"]["container"]["args"][0]


@pytest.mark.parametrize("name", ["build-inf2", "compile-inf2"])
def test_neuron_work_is_an_export_in_the_training_image_then_a_compile_that_installs_nothing(pools, name):
    """The pickle is read where it was written (step image + training lock); the Neuron image (Python 3.10,
    where numpy 2.4 of the lock cannot install) only gets the framework-neutral layers artifact."""
    doc = _as_dict(_all_workflows(pools)[name])
    templates = _templates(doc)
    tasks = {t["name"]: t for t in templates["main"]["dag"]["tasks"]}
    assert tasks["neuron-compile"]["depends"] == "neuron-export"
    assert tasks["neuron-compile"]["arguments"]["artifacts"] == [
        {"name": "neuron-layers", "from": "{{tasks.neuron-export.outputs.artifacts.neuron-layers}}"}]
    export, compile_ = templates["neuron-export"], templates["neuron-compile"]
    assert export["container"]["image"] == common.DEFAULT_STEP_IMAGE
    assert f"--no-deps -r {common.SOURCE_PATH}/{common.LOCK_FILE}" in export["container"]["args"][0]  # the model's lock
    assert ("python -m pipelines.neuron export --bento-src /work/bento/src --artifact model.pkl --output-dir /work/export "
            "--input-shape 1,64 --input-dtype float32") in export["container"]["args"][0]
    assert export["outputs"]["artifacts"] == [{"name": "neuron-layers", "path": "/work/export"}]
    assert "nodeSelector" not in export and "aws.amazon.com/neuron" not in json.dumps(export)  # any node
    script = compile_["container"]["args"][0]
    assert compile_["container"]["image"] == NeuronOptions().image
    assert "pip install" not in script and common.LOCK_FILE not in script and "model.pkl" not in script
    assert "python -m pipelines.neuron compile --export-dir /work/export" in script
    inputs = {a["name"]: a for a in compile_["inputs"]["artifacts"]}
    assert set(inputs) == {"neuron-layers", "source"} and inputs["neuron-layers"]["path"] == "/work/export"


def test_the_export_step_checks_what_model_yaml_declares():
    from reconciler.catalog.files import load as load_file
    from reconciler.catalog.specs import ModelSpec
    from pipelines.neuron_compile import neuron_export_template, neuron_options_for

    spec = load_file(ModelSpec, ROOT / "models" / "digits-classifier" / "model.yaml")
    options = neuron_options_for(spec)
    assert options.architecture == "sklearn-scaler-mlp" and options.input_shapes == ((1, 64),)
    template = neuron_export_template(common.Source(REPO, COMMIT), options)
    assert "--architecture sklearn-scaler-mlp" in template.args[0]
    hostile = neuron_export_template(common.Source(REPO, COMMIT), NeuronOptions(architecture="x'; rm -rf / #"))
    assert """--architecture 'x'"'"'; rm -rf / #'""" in hostile.args[0]  # quoted: one argument, never a command


def test_gpu_and_cpu_builds_have_no_neuron_step(pools):
    for pool in ("gpu-a10g", "cpu-general"):
        names = [t["name"] for t in _as_dict(_build(pools, pool=pool))["spec"]["templates"]]
        assert "neuron-compile" not in names
    assert image_tag(HASH, pools["cpu-general"], KIND_DIGEST) == TAGS["cpu"]
    assert image_tag(HASH, pools["gpu-a10g"], KIND_DIGEST) == TAGS["gpu"] and TAGS["gpu"].endswith("-cuda")
    assert image_tag(HASH, pools["inf2"], KIND_DIGEST) == TAGS["inferentia"] and TAGS["inferentia"].endswith("-neuron")


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


def test_the_conversion_hash_covers_the_export_code_the_compile_code_and_the_lock(tmp_path):
    from pipelines.neuron import CONVERSION_FILES, conversion_code_hash

    for name in CONVERSION_FILES:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes((ROOT / name).read_bytes())
    base = conversion_code_hash(tmp_path)
    assert base == conversion_code_hash()  # this checkout's files
    assert {"pipelines/neuron.py", common.LOCK_FILE} <= set(CONVERSION_FILES)
    for name in CONVERSION_FILES:
        original = (tmp_path / name).read_bytes()
        (tmp_path / name).write_bytes(original + b"\n# changed\n")
        assert conversion_code_hash(tmp_path) != base, name
        (tmp_path / name).write_bytes(original)
    assert conversion_code_hash(tmp_path) == base


# --------------------------------------------------------------------------- neuron conversion (numpy)


def test_dense_layers_reproduce_the_sklearn_probabilities(tmp_path):
    steps.train("digits-classifier", tmp_path, repo_root=ROOT)
    model = pickle.loads((tmp_path / "model.pkl").read_bytes())
    x = np.random.default_rng(0).uniform(0, 16, size=(20, 64))
    layers = dense_layers(model)
    assert [layer.activation for layer in layers] == ["identity", "relu", "softmax"]
    np.testing.assert_allclose(forward(layers, x), model.predict_proba(x), rtol=1e-6, atol=1e-9)


def test_the_export_of_the_digits_model_reads_back_with_numpy_alone_and_predicts_the_same(tmp_path):
    steps.train("digits-classifier", tmp_path, repo_root=ROOT)
    model = pickle.loads((tmp_path / "model.pkl").read_bytes())
    from pipelines.neuron import main

    assert main(["export", "--model-pkl", str(tmp_path / "model.pkl"), "--output-dir", str(tmp_path / "export"),
                 "--input-shape", "1,64", "--architecture", "sklearn-scaler-mlp"]) == 0
    manifest = json.loads((tmp_path / "export" / MANIFEST_FILE).read_text())
    assert manifest == {"format": 1, "architecture": "sklearn-scaler-mlp", "input_shape": [1, 64],
                        "activations": ["identity", "relu", "softmax"]}
    with np.load(tmp_path / "export" / LAYERS_FILE, allow_pickle=False) as data:  # plain arrays, no pickle
        assert sorted(data.files) == ["bias_0", "bias_1", "bias_2", "weight_0", "weight_1", "weight_2"]
    layers, shape = read_layers(tmp_path / "export")
    assert shape == (1, 64) and [w.weight.shape for w in layers] == [(64, 64), (64, 64), (64, 10)]
    x = np.random.default_rng(1).uniform(0, 16, size=(20, 64))
    np.testing.assert_allclose(forward(layers, x), model.predict_proba(x), rtol=1e-6, atol=1e-9)


def test_the_export_refuses_what_the_recipe_cannot_compile_with_the_fix(tmp_path, capsys):
    from pipelines.neuron import main

    steps.train("iris-classifier", tmp_path, repo_root=ROOT)
    iris = yaml.safe_load((ROOT / "models" / "iris-classifier" / "model.yaml").read_text())["architecture"]
    with pytest.raises(steps.StepError) as caught:
        export_model(tmp_path / "model.pkl", tmp_path / "export", (1, 4), iris)
    assert f"it is a {iris}" in caught.value.message and "sklearn-scaler-mlp" in caught.value.message
    assert "cpu or gpu pool" in caught.value.fix
    assert not (tmp_path / "export").exists()
    # what model.yaml says must be what the pickle is
    with pytest.raises(steps.StepError, match="declares architecture 'sklearn-scaler-mlp'") as caught:
        export_model(tmp_path / "model.pkl", tmp_path / "export", (1, 4), "sklearn-scaler-mlp")
    assert caught.value.fix == f"set `architecture: {iris}` in model.yaml (the plan then checks where it may be served), " \
                               "or retrain the model model.yaml describes"
    assert main(["export", "--model-pkl", str(tmp_path / "model.pkl"), "--output-dir", str(tmp_path / "x"),
                 "--input-shape", "1,4"]) == 1
    assert "cannot compile model.pkl for inferentia" in capsys.readouterr().err


def test_the_export_refuses_an_input_shape_the_first_layer_does_not_take(tmp_path):
    steps.train("digits-classifier", tmp_path, repo_root=ROOT)
    with pytest.raises(steps.StepError, match="first layer takes 64 features") as caught:
        export_model(tmp_path / "model.pkl", tmp_path / "export", (1, 8))
    assert caught.value.fix == "set images.inferentia.inputShapes: [[1, 64]] in model.yaml"


def test_the_architecture_names_are_the_plans(tmp_path):
    """The pickles of the example models are what their model.yaml declares, and the export accepts exactly
    the architectures of the plan's torch-neuronx-dense recipe: one rule at plan time and at export time."""
    from pipelines.neuron import CONVERSION_FILES
    from reconciler.catalog.recipes import load_registry

    recipe = next(r for r in load_registry(ROOT).recipes if r.name == "torch-neuronx-dense")
    assert recipe.architectures == ARCHITECTURES and recipe.code == CONVERSION_FILES
    for model in ("digits-classifier", "iris-classifier"):
        steps.train(model, tmp_path / model, repo_root=ROOT)
        declared = yaml.safe_load((ROOT / "models" / model / "model.yaml").read_text())["architecture"]
        assert architecture_of(pickle.loads((tmp_path / model / "model.pkl").read_bytes())) == declared


def _export(tmp_path, layers, activations, shape=(1, 3)):
    out = tmp_path / "export"
    out.mkdir(exist_ok=True)
    arrays = {}
    for i, (w, b) in enumerate(layers):
        arrays[f"weight_{i}"], arrays[f"bias_{i}"] = w, b
    np.savez(out / LAYERS_FILE, **arrays)
    (out / MANIFEST_FILE).write_text(json.dumps({"format": 1, "input_shape": list(shape), "activations": activations}))
    return out


def test_read_layers_refuses_a_malformed_export(tmp_path):
    good = [(np.ones((3, 2)), np.zeros(2)), (np.ones((2, 4)), np.zeros(4))]
    layers, shape = read_layers(_export(tmp_path, good, ["relu", "softmax"]))
    assert shape == (1, 3) and [layer.activation for layer in layers] == ["relu", "softmax"]
    with pytest.raises(ValueError, match="layer 1 is"):  # 2 outputs feed 3 inputs
        read_layers(_export(tmp_path, [good[0], (np.ones((3, 4)), np.zeros(4))], ["relu", "softmax"]))
    with pytest.raises(ValueError, match="does not take 5 inputs"):
        read_layers(_export(tmp_path, good, ["relu", "softmax"], shape=(1, 5)))
    with pytest.raises(ValueError, match="activations must be"):
        read_layers(_export(tmp_path, good, ["relu", "gelu"]))
    with pytest.raises(ValueError, match="need"):  # a layer missing from the npz
        read_layers(_export(tmp_path, good[:1], ["relu", "softmax"]))
    export = _export(tmp_path, good, ["relu", "softmax"])
    (export / MANIFEST_FILE).write_text(json.dumps({"format": 2}))
    with pytest.raises(ValueError, match="format 2"):
        read_layers(export)
    # an object array (what only a pickle can hold) is refused by allow_pickle=False
    export = _export(tmp_path, [(np.array([object()] * 6, dtype=object).reshape(3, 2), np.zeros(2))], ["relu"])
    with pytest.raises(ValueError):
        read_layers(export)


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


# --------------------------------------------------------------------------- the register step's dvc


def _register_script(**kw) -> str:
    doc = _as_dict(train_workflow(model="iris-classifier", model_hash=HASH, commit=COMMIT, repo_url=REPO, **kw))
    return _templates(doc)["register"]["container"]["args"][0]


@pytest.mark.parametrize("url, requirement", [
    ("s3://models/dvc", "dvc[s3]==3.67.1"),  # S3 and MinIO (endpointurl)
    ("gs://models/dvc", "dvc[gs]==3.67.1"),
    ("azure://models/dvc", "dvc[azure]==3.67.1"),
    ("ssh://user@host/srv/dvc", "dvc[ssh]==3.67.1"),
    ("/srv/dvc-storage", "dvc==3.67.1"),
    ("../.dvc-storage", "dvc==3.67.1"),
    ("https://dvc.example.com/store", "dvc==3.67.1"),  # dvc-http is part of dvc
])
def test_the_register_step_installs_the_dvc_extra_of_the_remote(url, requirement):
    script = _register_script(dvc_remote="store", dvc_remotes={"store": url})
    pins = re.findall(r"'(dvc[^']*)'", script)
    assert pins == [requirement]  # one dvc, pinned, with the remote's extra


def test_every_committed_remote_can_be_pushed_to_and_train_evaluate_install_no_dvc(pools):
    remotes = {"s3remote": "s3://models/dvc", "backup": "gs://backup/dvc", "laptop": "/srv/dvc"}
    doc = _as_dict(train_workflow(model="iris-classifier", model_hash=HASH, commit=COMMIT, repo_url=REPO,
                                  dvc_remote="s3remote", dvc_remotes=remotes))
    templates = _templates(doc)
    assert "'dvc[gs,s3]==3.67.1'" in templates["register"]["container"]["args"][0]  # -p dvc-remote=backup works too
    for step in ("train", "evaluate"):
        assert "dvc" not in templates[step]["container"]["args"][0]
    # remote://<name>/path is the remote it names
    assert common.dvc_requirements({"base": "azure://c/p", "sub": "remote://base/sub"}) == ("dvc[azure]==3.67.1",)
    assert common.dvc_requirements({}) == ("dvc==3.67.1",)


def test_a_remote_dvc_cannot_push_to_is_a_render_error_with_a_fix():
    with pytest.raises(common.DvcConfigError, match="URL scheme 'ftp'") as caught:
        _register_script(dvc_remote="store", dvc_remotes={"store": "ftp://files.example.com/dvc"})
    assert caught.value.fix.startswith("use one of the schemes dvc supports") and "s3" in caught.value.fix
    assert "dvc remote modify store url" in caught.value.fix
    with pytest.raises(common.DvcConfigError, match="not declared in the committed .dvc/config") as caught:
        _register_script(dvc_remote="minio", dvc_remotes={"local": "/srv/dvc"})
    assert "dvc remote add minio" in caught.value.fix
    with pytest.raises(common.DvcConfigError, match="refers to remote 'nowhere'"):
        common.dvc_requirements({"sub": "remote://nowhere/x"})
    with pytest.raises(common.DvcConfigError, match="URL of DVC remote 'minio' is unknown"):
        _register_script(dvc_remote="minio")
    assert "'dvc==3.67.1'" in _register_script()  # nothing to push to: plain dvc


def test_pipeline_render_takes_the_extra_from_the_committed_dvc_config(tmp_path):
    """Through the CLI on a copy of the template: the repository's committed .dvc/config decides (a
    config.local, which the pods never see, does not), and an unsupported scheme is an error with its fix."""
    import subprocess
    import sys

    import git

    from tests.conftest import commit_all, copy_template

    root = copy_template(tmp_path / "repo")
    repo = git.Repo.init(root, initial_branch="main")
    commit_all(repo, "template")

    def render(*extra):
        return subprocess.run([str(Path(sys.executable).parent / "reconciler"), "pipeline", "render", "train", "--model",
                               "iris-classifier", "--env", "dev", "--repo", str(root), "--repo-url", REPO, *extra],
                              capture_output=True, text=True, timeout=300)

    def register(done):
        assert done.returncode == 0, done.stderr
        return _templates(yaml.safe_load(done.stdout))["register"]["container"]["args"][0]

    assert "'dvc==3.67.1'" in register(render())  # the template's local remote
    config = root / ".dvc" / "config"
    config.write_text(config.read_text() + "['remote \"minio\"']\n    url = s3://my-bucket/dvc\n"
                      "    endpointurl = http://minio.argo.svc.cluster.local:9000\n")
    (root / ".dvc" / "config.local").write_text("['remote \"mine\"']\n    url = ftp://nowhere/dvc\n")
    assert "'dvc[s3]==3.67.1'" in register(render())
    config.write_text(config.read_text().replace("s3://my-bucket/dvc", "ftp://files.example.com/dvc"))
    done = render()
    assert done.returncode != 0
    assert "'minio'" in done.stderr and "ftp" in done.stderr and "fix: use one of the schemes" in done.stderr


def test_committed_remotes_reads_what_dvc_itself_writes(tmp_path):
    """The reader is the standard library's (`pipeline render` needs no dvc), so check it on a config written
    by the real dvc: a default remote with options, a quoted URL, and a --local remote that stays out."""
    import subprocess
    import sys

    from reconciler.build.artifacts import committed_remotes

    assert committed_remotes(tmp_path) == {}
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    dvc = [sys.executable, "-m", "dvc"]
    for args in (["init", "-q"], ["remote", "add", "-d", "minio", "s3://my-bucket/dvc"],
                 ["remote", "modify", "minio", "endpointurl", "http://minio:9000"],
                 ["remote", "add", "odd", "/srv/a,b#c"], ["remote", "add", "--local", "mine", "gs://x/y"]):
        subprocess.run(dvc + args, cwd=tmp_path, check=True, capture_output=True, timeout=120)
    assert committed_remotes(tmp_path) == {"minio": "s3://my-bucket/dvc", "odd": "/srv/a,b#c"}
    assert common.dvc_requirements(committed_remotes(tmp_path)) == ("dvc[s3]==3.67.1",)
