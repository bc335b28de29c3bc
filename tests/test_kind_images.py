"""One bento and image per pool kind, with real `bentoml build`: what each kind's Dockerfile holds."""

from __future__ import annotations

from pathlib import Path

import git
import pytest
import yaml

from pipelines import steps
from reconciler.build.builder import BuildOptions, build_models
from reconciler.catalog.image_lock import digests_of, resolve_images
from reconciler.catalog.images import image_tag
from reconciler.catalog.accelerators import ARTIFACT_ENV, COMPILED_FILE, NEURON_PIP_INDEX, neuron_sdk
from reconciler.catalog.load import load_catalog
from reconciler.render.environment import render_environment
from reconciler.results import Action
from reconciler.source.hashing import model_hashes
from tests.conftest import commit_all

MODEL = "digits-classifier"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The template with digits served from cpu, gpu and inf2 in prod, trained, and built for prod."""
    from tests.conftest import copy_template

    tmp = tmp_path_factory.mktemp("kinds")
    root = copy_template(tmp / "repo")
    repo = git.Repo.init(root, initial_branch="main")
    spec_path = root / "models" / MODEL / "model.yaml"
    spec = yaml.safe_load(spec_path.read_text())
    spec["accelerator"] = {"prod": ["cpu-general", "gpu-a10g", "inf2"]}
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    folder = root / "models" / MODEL
    steps.train(MODEL, folder)
    steps.register(folder, root)
    commit_all(repo, "digits on three pool kinds")
    home = tmp / "bentoml"
    mp = pytest.MonkeyPatch()
    mp.setenv("BENTOML_HOME", str(home))
    mp.setenv("RECONCILER_CONTAINER_ENGINE", "none")
    mp.delenv("ARGO_SERVER", raising=False)
    try:
        report = build_models(root, [MODEL], BuildOptions(home=home, registry="registry.test/models",
                                                          environment="prod", engine=None))
    finally:
        mp.undo()
    return root, home, report


def _tags(root: Path, model_hash: str) -> dict[str, str]:
    """The model's image tag per kind: its content hash and what each kind's build adds (image_inputs)."""
    catalog = load_catalog(root)
    kinds = digests_of(catalog)
    return {k: image_tag(model_hash, k, kinds.of(catalog.models[MODEL].spec, k)) for k in ("cpu", "gpu", "inferentia")}


def _bento_dir(home: Path, tag: str) -> Path:
    name, version = tag.split(":")
    return home / "bentos" / name / version


def test_one_bento_per_pool_kind(built):
    root, home, report = built
    result = report.results[MODEL]
    assert result.action is Action.created, result.as_dict()
    tags = _tags(root, result.hash)
    assert tags["gpu"].endswith("-cuda") and tags["inferentia"].endswith("-neuron") and "-" not in tags["cpu"]
    assert result.bentos == {k: f"{MODEL}:{t}" for k, t in tags.items()}
    assert result.images == {k: f"registry.test/models/{MODEL}:{t}" for k, t in tags.items()}
    for tag in result.bentos.values():
        assert (_bento_dir(home, tag) / "bento.yaml").is_file(), tag


# a platform change the model's content hash does not see, and the only kind whose image holds it
PLATFORM_CHANGES = {
    # the dense recipe's conversion (pipelines/neuron.py, its `code:`): it compiles digits' Neuron artifact
    "recipe": ("inferentia", "import subprocess, sys\nfrom pathlib import Path\n"
               "p = Path('pipelines/neuron.py'); p.write_text(p.read_text() + '# the conversion changed\\n')\n"
               "subprocess.run(['git', 'commit', '-qam', 'recipe'], check=True)\n", None),
    # a reconciler release with another CUDA base for gpu images (reconciler/catalog/accelerators.py)
    "cuda": ("gpu", "", "from reconciler.catalog import accelerators; accelerators.CUDA_VERSION = '12.6.3'; "),
}


@pytest.mark.parametrize("change", sorted(PLATFORM_CHANGES))
def test_a_platform_change_only_the_kind_overlay_or_recipe_sees_rebuilds_that_kinds_image_only(built, change,
                                                                                                 tmp_path):
    """Before the kind's inputs were in its tag, `reconciler build` found the old tag's bento (or image) and
    reused it: the cluster never got the new CUDA base or the new compiled artifact."""
    import json
    import os
    import shutil
    import subprocess
    import sys

    root, home, report = built
    kind, edit, patch = PLATFORM_CHANGES[change]
    work, store = tmp_path / "repo", tmp_path / "bentoml"
    shutil.copytree(root, work, symlinks=True)
    shutil.copytree(home, store, symlinks=True)
    env = {**os.environ, "BENTOML_HOME": str(store), "RECONCILER_CONTAINER_ENGINE": "none", "BENTOML_DO_NOT_TRACK": "true"}
    env.pop("ARGO_SERVER", None)
    if edit:
        subprocess.run([sys.executable, "-c", edit], cwd=work, check=True, env=env)
    args = ["build", "--env", "prod", "--registry", "registry.test/models", "--model", MODEL, "-o", "json"]
    # the console script, run by the (patched, for a reconciler release) interpreter
    command = [sys.executable, "-c", f"import sys; {patch or ''}from reconciler.cli import main; "
                                     f"sys.argv = ['reconciler', *sys.argv[1:]]; main()", *args]
    done = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    after = json.loads(done.stdout[done.stdout.index("{"):])["models"][0]
    before = report.results[MODEL].bentos
    assert after["action"] == "created" and after["built"][-1:] == ["build"], after  # one bento built, no image
    assert {k for k in before if after["bentos"][k] != before[k]} == {kind}, (before, after["bentos"])
    for other in set(before) - {kind}:
        assert f"{other}: bento {before[other]} exists" in after["message"]
    assert (_bento_dir(store, after["bentos"][kind]) / "bento.yaml").is_file()
    dockerfile = (_bento_dir(store, after["bentos"][kind]) / "env" / "docker" / "Dockerfile").read_text()
    if change == "cuda":
        assert "nvidia/cuda:12.6.3" in dockerfile, dockerfile[:2000]
    if change == "recipe":  # the render of this commit names the image the build made (same interpreter: no patch)
        assert f"{MODEL}:{_tags(work, report.results[MODEL].hash)[kind]}" == after["bentos"][kind]


def test_each_kinds_dockerfile_and_requirements(built):
    _, home, report = built
    bentos = report.results[MODEL].bentos
    sdk = neuron_sdk()
    files = {}
    for kind, tag in bentos.items():
        folder = _bento_dir(home, tag)
        dockerfile = (folder / "env" / "docker" / "Dockerfile").read_text()
        requirements = (folder / "env" / "python" / "requirements.txt").read_text()
        files[kind] = (dockerfile, requirements, folder)
    cpu_docker, cpu_reqs, _ = files["cpu"]
    gpu_docker, gpu_reqs, _ = files["gpu"]
    inf_docker, inf_reqs, inf_dir = files["inferentia"]
    # gpu: a CUDA base; nothing Neuron
    assert "nvidia/cuda" in gpu_docker and "torch-neuronx" not in gpu_reqs
    # inferentia: torch-neuronx from the Neuron package index, the Neuron runtime, the compiled artifact's path
    assert f"torch-neuronx=={sdk.torch_neuronx}" in inf_reqs and f"neuronx-cc=={sdk.neuronx_cc}" in inf_reqs
    assert NEURON_PIP_INDEX in inf_reqs
    # BentoML copies the setup script to env/docker/script__<hash> and RUNs it in the Dockerfile
    (script,) = (p for p in (inf_dir / "env" / "docker").iterdir() if p.name.startswith("script__"))
    assert f"./env/docker/{script.name}" in inf_docker
    assert f"aws-neuronx-runtime-lib={sdk.runtime_lib}" in script.read_text()
    assert ARTIFACT_ENV in inf_docker and f"/home/bentoml/bento/src/{COMPILED_FILE}" in inf_docker
    assert "nvidia/cuda" not in inf_docker
    # torch-neuronx has wheels for the release's Pythons only (3.8-3.10): the image's Python is 3.10, not the builder's
    assert f"python:{sdk.python_version}-slim" in inf_docker
    # cpu: neither
    for text in (cpu_docker, cpu_reqs):
        assert "nvidia/cuda" not in text and "neuron" not in text.lower()
    # the model's own packages are in every kind's image
    for _, reqs, _ in files.values():
        assert "scikit-learn" in reqs


def test_each_deployment_references_its_own_kinds_image(built):
    root, _, report = built
    catalog = load_catalog(root)
    hashes = model_hashes(root, None, [catalog.models[MODEL]])
    images = resolve_images(catalog, "prod", hashes)
    result = render_environment(catalog, "prod", models={MODEL}, images=images)
    assert result.errors == {}
    by_pool = {d["metadata"]["name"]: d["spec"]["template"]["spec"]["containers"][0]["image"]
               for d in result.models[MODEL].objects if d["kind"] == "Deployment"}
    tags = _tags(root, report.results[MODEL].hash)
    repo = f"ghcr.io/example/models/{MODEL}"
    assert by_pool == {f"{MODEL}-cpu-general": f"{repo}:{tags['cpu']}", f"{MODEL}-gpu-a10g": f"{repo}:{tags['gpu']}",
                       f"{MODEL}-inf2": f"{repo}:{tags['inferentia']}"}


# --------------------------------------------------------------------------- serving: readiness and version


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Served:
    """`bentoml serve TAG` on 127.0.0.1 in a child process (its own process group, stopped at exit)."""

    def __init__(self, home: Path, tag: str, env: dict[str, str] | None = None, python: Path | None = None) -> None:
        import os
        import subprocess
        import sys

        self.port = _free_port()
        self.tag = tag
        # python: another environment's (a model's serving environment), whose BentoML runs as `python -m bentoml`
        bentoml = [str(python), "-m", "bentoml"] if python else [str(Path(sys.executable).with_name("bentoml"))]
        self.proc = subprocess.Popen(
            [*bentoml, "serve", tag, "--host", "127.0.0.1", "--port", str(self.port)],
            env={**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true", **(env or {})},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def wait_live(self, deadline_s: float = 120) -> None:
        import time

        import httpx

        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise AssertionError("bentoml serve exited:\n" + self.proc.stdout.read().decode(errors="replace"))
            try:
                if httpx.get(self.url("/livez"), timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise AssertionError("bentoml serve did not come up")

    def stop(self) -> None:
        import os
        import signal

        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except Exception:
                os.killpg(self.proc.pid, signal.SIGKILL)


def test_the_served_header_the_metric_labels_and_the_pod_annotations_name_the_same_version(built, oci_registry,
                                                                                          tmp_path, monkeypatch):
    """Issue #15 item 6 end to end: real bentos, a real registry, the image lock, the render of a later commit,
    `bentoml serve`.

    No container engine here, so the images are pushed as the image-build workflow pushes them (labelled
    with the commit of the bento they hold), over the registry's API (tests/oci_registry.py). The Neuron
    image carries no label: its commit comes from the local bento with that tag."""
    import shutil

    import httpx

    from reconciler import labels as L
    from reconciler.catalog.image_lock import IMAGES_LOCK, ImageStore
    from reconciler.desired.state import desired_at

    root, home, report = built
    result = report.results[MODEL]
    built_from = git.Repo(root).head.commit.hexsha  # the bentos were built at this commit
    digests = {tag: oci_registry.push(f"models/{MODEL}", tag, None if tag.endswith("-neuron") else {L.GIT_COMMIT: built_from},
                                      index=tag.endswith("-cuda"))
               for tag in _tags(root, result.hash).values()}
    reg = oci_registry
    # later commits: prod pulls from this registry; the next build records the digests and build commits
    work = tmp_path / "repo"
    shutil.copytree(root, work, symlinks=True)
    repo = git.Repo(work)
    env_file = work / "environments" / "prod" / "environment.yaml"
    env_spec = yaml.safe_load(env_file.read_text())
    env_spec["registry"] = f"{reg.host}/models"
    env_file.write_text(yaml.safe_dump(env_spec, sort_keys=False))
    commit_all(repo, "prod pulls from the test registry")
    monkeypatch.setenv("BENTOML_HOME", str(home))
    monkeypatch.setenv("RECONCILER_CONTAINER_ENGINE", "none")
    monkeypatch.delenv("ARGO_SERVER", raising=False)
    again = build_models(work, [MODEL], BuildOptions(home=home, registry=f"{reg.host}/models", environment="prod",
                                                     engine=None)).results[MODEL]
    assert (again.action, again.built) == (Action.unchanged, []), again.as_dict()
    lock = ImageStore.read(work / IMAGES_LOCK)
    assert lock.digests == {f"{reg.host}/models/{MODEL}:{tag}": digest for tag, digest in digests.items()}
    assert lock.commits == {f"{reg.host}/models/{MODEL}:{tag}": built_from for tag in digests}
    rendered_at = commit_all(repo, "record the image digests")  # what the merge workflow commits back
    assert rendered_at != built_from

    state = desired_at(work, rendered_at, ["prod"])
    assert not state.env_errors and state.renders["prod"].errors == {}
    deployments = [o for o in state.renders["prod"].models[MODEL].objects if o["kind"] == "Deployment"]
    assert len(deployments) == 3
    md5 = yaml.safe_load((root / "models" / MODEL / "model.pkl.dvc").read_text())["outs"][0]["md5"]
    for deploy in deployments:
        pod = deploy["spec"]["template"]
        assert "@sha256:" in pod["spec"]["containers"][0]["image"]
        annotations = pod["metadata"]["annotations"]
        assert {k: annotations.get(k) for k in (L.GIT_COMMIT, L.MODEL_HASH, L.WEIGHTS_MD5)} == {
            L.GIT_COMMIT: built_from, L.MODEL_HASH: result.hash, L.WEIGHTS_MD5: md5}

    served = _Served(home, result.bentos["cpu"])
    try:
        served.wait_live()
        response = httpx.post(served.url("/predict"), json={"images": [[0.0] * 64]}, timeout=30)
        assert response.status_code == 200, response.text
        header = response.headers["x-model-version"]
        assert header == f"hash={result.hash}; commit={built_from}; weights-md5={md5}"
        metrics = httpx.get(served.url("/metrics"), timeout=10).text
        line = next(ln for ln in metrics.splitlines() if ln.startswith("gitops_ml_requests_total{"))
        assert f'model_hash="{result.hash}"' in line and f'git_commit="{built_from}"' in line
        assert f'weights_md5="{md5}"' in line and 'endpoint="/predict"' in line
    finally:
        served.stop()


def test_with_the_device_present_and_the_artifact_missing_the_service_is_not_ready_and_does_not_fall_back(built, tmp_path):
    import httpx

    _, home, report = built
    dev = tmp_path / "dev"
    dev.mkdir()
    (dev / "neuron0").touch()  # a fake Neuron device node: the device is "present"
    served = _Served(home, report.results[MODEL].bentos["inferentia"], env={
        "MODEL_DEVICE_ROOT": str(dev), "MODEL_ACCELERATOR_KIND": "inferentia",  # what the -neuron image sets
        "MODEL_DEVICE_GLOBS": "neuron*",
        "MODEL_ACCELERATOR_ARTIFACT": str(tmp_path / "missing" / COMPILED_FILE)})
    try:
        served.wait_live()
        ready = httpx.get(served.url("/readyz"), timeout=10)
        assert ready.status_code == 503, ready.text
        answer = httpx.post(served.url("/predict"), json={"images": [[0.0] * 64]}, timeout=30)
        assert answer.status_code >= 500  # no prediction from the CPU model while the device is held
    finally:
        served.stop()
