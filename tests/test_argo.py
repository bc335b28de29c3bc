"""The Argo adapter against a local stand-in of the Argo Server REST API (tests/argo_standin.py):
what is sent (body, labels, annotations, parameters, token), and every failure as an ArgoError."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import yaml

from pipelines import common
from pipelines.build_image import build_image_workflow
from pipelines.train import train_workflow
from reconciler import labels
from reconciler.build.argo import ArgoConfig, get_workflow, list_workflows, submit
from reconciler.errors import ArgoError
from reconciler.catalog.files import load
from reconciler.catalog.images import image_tag
from reconciler.catalog.pools import PoolsFile
from tests.argo_standin import ArgoStandIn, validate

ROOT = Path(__file__).resolve().parents[1]
HASH = "sha256:" + "fedcba9876543210" * 4
KIND_DIGEST = "e" * 64  # what the inferentia build adds (reconciler.catalog.image_inputs)
NEURON = image_tag(HASH, "inferentia", KIND_DIGEST)
COMMIT = "0a1b2c3d4e5f60718293a4b5c6d7e8f901234567"
REPO = "https://github.com/example/models-gitops.git"


@pytest.fixture
def server():
    with ArgoStandIn(token="s3cret", namespaces=("argo", "ml")) as standin:
        yield standin


def _config(server: ArgoStandIn, **kw) -> ArgoConfig:
    return ArgoConfig(**{"host": server.url, "token": "s3cret", "namespace": "argo", **kw})


def _build(pool: str = "inf2", model: str = "digits-classifier"):
    pools = load(PoolsFile, ROOT / "environments" / "pools.yaml").pools
    return build_image_workflow(model=model, model_hash=HASH, kind_digest=KIND_DIGEST, commit=COMMIT, repo_url=REPO,
                                registry="ghcr.io/example/models", bento_url="https://example.com/d.bento",
                                environment="prod", pool=pools[pool])


def test_submit_sends_the_workflow_with_labels_annotations_and_parameters(server):
    result = submit(_build(), _config(server))

    assert result.created and result.namespace == "argo"
    assert result.name.startswith(f"build-digits-classifier-{NEURON}-")
    assert result.ui_url == f"{server.url}/workflows/argo/{result.name}"
    [request] = server.requests
    assert request.method == "POST" and request.path == "/api/v1/workflows/argo"
    assert request.headers["Authorization"] == "Bearer s3cret"
    sent = request.body["workflow"]
    assert sent["metadata"]["labels"][labels.MODEL] == "digits-classifier"
    assert sent["metadata"]["labels"][labels.ENVIRONMENT] == "prod"
    assert sent["metadata"]["labels"][labels.GIT_COMMIT] == COMMIT
    assert sent["metadata"]["annotations"][common.COMMIT_URL].endswith(f"/commit/{COMMIT}")
    assert sent["metadata"]["annotations"][common.TITLE] == f"build digits-classifier {NEURON}"
    assert {p["name"]: p["value"] for p in sent["spec"]["arguments"]["parameters"]} == {
        "bento-url": "https://example.com/d.bento",
        "image-ref": f"ghcr.io/example/models/digits-classifier:{NEURON}"}
    # what was sent is what `pipeline render` prints
    assert sent == yaml.safe_load(_build().to_yaml())


def test_generate_name_gets_the_servers_name_and_can_be_found_by_label(server):
    config = _config(server)
    first = submit(train_workflow(model="iris-classifier", model_hash=HASH, commit=COMMIT, repo_url=REPO), config)
    second = submit(train_workflow(model="iris-classifier", model_hash=HASH, commit=COMMIT, repo_url=REPO), config)
    submit(_build(pool="gpu-a10g", model="iris-classifier"), config)

    assert first.name.startswith("train-iris-classifier-") and first.name != second.name
    assert server.requests[0].body["workflow"]["spec"]["arguments"] == {
        "parameters": [{"name": "dvc-remote", "value": ""},  # an empty value is still sent
                       {"name": "propose", "value": "false"}]}  # no remote: nothing to propose back to git
    found = list_workflows(config, labels={labels.MODEL: "iris-classifier", common.PIPELINE: "train"})
    assert sorted(w["metadata"]["name"] for w in found) == sorted([first.name, second.name])
    assert list_workflows(config, labels={labels.MODEL: "nothing"}) == []
    got = get_workflow(first.name, config)
    assert got["metadata"]["labels"][labels.MODEL_HASH] == common.label_value(HASH)
    assert got["status"]["phase"] == "Pending"


def test_the_same_build_twice_is_409_or_already_submitted(server):
    config = _config(server)
    submit(_build(), config)
    with pytest.raises(ArgoError, match="already exists \\(409\\)") as info:
        submit(_build(), config)
    assert "already submitted" in info.value.fix
    again = submit(_build(), config, exists_ok=True)
    assert not again.created and again.name == server.requests[0].body["workflow"]["metadata"]["name"]
    assert len(server.workflows) == 1


def test_wrong_or_missing_token_is_a_401_naming_argo_token(server):
    for token in ("wrong", None):
        with pytest.raises(ArgoError, match="refused the credentials.*401") as info:
            submit(_build(), _config(server, token=token))
        assert "ARGO_TOKEN" in info.value.fix
    assert server.workflows == {}


def test_namespace_forbidden_and_missing_workflow(server):
    with pytest.raises(ArgoError, match="forbids .* namespace 'other' \\(403\\)") as info:
        submit(_build(), _config(server, namespace="other"))
    assert "RoleBinding" in info.value.fix
    with pytest.raises(ArgoError, match="not found.*404"):
        get_workflow("nope", _config(server))


def test_server_side_rejection_and_errors_are_argo_errors(server):
    workflow = _build()
    workflow.arguments = []  # the templates still use {{workflow.parameters.bento-url}}
    with pytest.raises(ArgoError, match="rejected the workflow.*failed to resolve \\{\\{workflow.parameters.bento-url") as info:
        submit(workflow, _config(server))
    assert "argo lint" in info.value.fix
    server.fail_next = 500
    with pytest.raises(ArgoError, match="failed to create workflow .*injected failure"):
        submit(_build(), _config(server))
    server.fail_next = 502  # a status hera has no class for
    with pytest.raises(ArgoError, match="failed to create workflow"):
        submit(_build(), _config(server))


def test_unreachable_server_is_an_argo_error():
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ArgoError, match="cannot reach Argo server") as info:
        submit(_build(), ArgoConfig(host=f"http://127.0.0.1:{port}"))
    assert "ARGO_SERVER" in info.value.fix


def test_config_from_environment():
    with pytest.raises(ArgoError, match="ARGO_SERVER is not set") as info:
        ArgoConfig.from_env({})
    assert "reconciler pipeline render" in info.value.fix
    config = ArgoConfig.from_env({"ARGO_SERVER": "argo.example.com:2746", "ARGO_TOKEN": "t",
                                  "ARGO_NAMESPACE": "ml", "ARGO_INSECURE_SKIP_VERIFY": "true"})
    assert config == ArgoConfig(host="https://argo.example.com:2746", token="t", namespace="ml", verify_ssl=False)
    assert ArgoConfig.from_env({"ARGO_SERVER": "http://localhost:2746/"}).host == "http://localhost:2746"
    assert ArgoConfig.from_env({"ARGO_SERVER": "x:1"}).namespace == "argo"


def test_cli_submit_uses_the_environment(server, monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from reconciler.cli.main import app

    monkeypatch.setenv("ARGO_SERVER", server.url)
    monkeypatch.setenv("ARGO_TOKEN", "s3cret")
    monkeypatch.setenv("ARGO_NAMESPACE", "ml")
    args = ["pipeline", "submit", "train", "--model", "iris-classifier", "--repo", str(ROOT),
            "--repo-url", REPO, "--commit", COMMIT, "--model-hash", HASH]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "submitted: ml/train-iris-classifier-" in result.output
    assert [ns for ns, _ in server.workflows] == ["ml"]
    monkeypatch.setenv("ARGO_TOKEN", "bad")
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1 and "ARGO_TOKEN" in result.output


def test_standin_checks_what_argo_checks():
    good = yaml.safe_load(_build().to_yaml())
    assert validate(good, "argo") == []
    bad = yaml.safe_load(_build().to_yaml())
    bad["metadata"]["labels"]["gitops.ml/model-hash"] = "x" * 64
    bad["metadata"]["namespace"] = "elsewhere"
    bad["spec"]["entrypoint"] = "missing"
    compile_task = next(t for t in bad["spec"]["templates"][-1]["dag"]["tasks"] if t["name"] == "neuron-compile")
    compile_task.pop("arguments")
    bad["spec"]["arguments"]["parameters"][0].pop("value")
    problems = validate(bad, "argo")
    assert any("63 characters" in p for p in problems)
    assert any("does not match the namespace" in p for p in problems)
    assert any("entrypoint 'missing'" in p for p in problems)
    assert any("inputs.parameters.cache-key was not supplied" in p for p in problems)
    assert "spec.arguments.bento-url.value is required" in problems
