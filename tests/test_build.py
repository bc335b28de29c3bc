"""`reconciler build`: real git, real DVC with a local-directory remote, real `bentoml build`."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import git
import pytest
import yaml
from typer.testing import CliRunner

from reconciler.build.bento import find_bento, stage_context
from reconciler.build.bento import staged_files
from reconciler.build.builder import BuildOptions, NO_IMAGE_BACKEND, build_models
from reconciler.catalog.image_lock import IMAGES_LOCK, ImageStore, digests_of, resolve_images
from reconciler.catalog.images import image_tag
from reconciler.catalog.load import load_catalog
from reconciler.cli.main import app
from reconciler.errors import ArgoError, ArtifactError, BuildError
from reconciler.source.hashing import model_hashes
from reconciler.results import Action
from tests.argo_standin import ArgoStandIn

DVC = str(Path(sys.executable).with_name("dvc"))
SERVICE = ("import bentoml\nfrom common.features import scale\n\n@bentoml.service\nclass Svc:\n"
           "    @bentoml.api\n    def predict(self, x: float) -> float:\n        return scale(x)\n")


def write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def dvc(root: Path, *args: str) -> None:
    subprocess.run([DVC, *args, "-q"], cwd=root, check=True, capture_output=True)


def add_model(root: Path, name: str, service: str = SERVICE) -> None:
    write(root, f"models/{name}/model.yaml",
          f"name: {name}\nowner: t@example.com\nservice: service.py:Svc\nartifacts: [weights.txt.dvc]\n")
    write(root, f"models/{name}/service.py", service)
    write(root, f"models/{name}/bentofile.yaml", "service: service.py:Svc\ninclude: ['*.py', 'weights.txt']\n")
    write(root, f"models/{name}/weights.txt", f"weights of {name}\n")


@pytest.fixture
def env(tmp_path: Path, monkeypatch) -> dict[str, Path]:
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "bentoml"))
    monkeypatch.setenv("RECONCILER_IMAGES_FILE", str(tmp_path / "images.json"))
    monkeypatch.setenv("RECONCILER_CONTAINER_ENGINE", "none")
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    for var in ("ARGO_SERVER", "RECONCILER_BENTO_URL", "RECONCILER_REGISTRY_USERNAME"):
        monkeypatch.delenv(var, raising=False)
    return {"home": tmp_path / "bentoml", "images": tmp_path / "images.json"}


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """tiny + other (data pushed), nodata (data never pushed), badsvc (service cannot be imported)."""
    tmp_path = tmp_path_factory.mktemp("template")
    root = tmp_path / "repo"
    root.mkdir()
    r = git.Repo.init(root)
    r.git.config("user.email", "t@example.com")
    r.git.config("user.name", "t")
    write(root, "environments/pools.yaml", "pools:\n  cpu-general: {kind: cpu, hourlyPrice: 0.1}\n")
    write(root, "environments/dev/environment.yaml",
          "name: dev\ncluster: {context: kind-dev}\nnamespace: models-dev\nregistry: localhost:1/models\n"
          "pools: [cpu-general]\n")
    write(root, "common/__init__.py", "")
    write(root, "common/features.py", "def scale(x):\n    return 2 * x\n")
    for name in ("tiny", "other", "nodata"):
        add_model(root, name)
    # imported by name at run time, so the plan's import check (an `import` statement) cannot see it
    add_model(root, "badsvc", service="import importlib\nimportlib.import_module('not_a_module_anywhere')\n" + SERVICE)
    dvc(root, "init")
    dvc(root, "remote", "add", "-d", "local", str(tmp_path / "remote"))
    dvc(root, "add", "models/tiny/weights.txt", "models/other/weights.txt", "models/badsvc/weights.txt")
    dvc(root, "push")
    dvc(root, "add", "models/nodata/weights.txt")  # trained but never pushed
    shutil.rmtree(root / ".dvc" / "cache")  # a fresh clone: everything must come from the remote
    for name in ("tiny", "other", "nodata", "badsvc"):
        (root / f"models/{name}/weights.txt").unlink()
    r.git.add(A=True)
    r.index.commit("models")
    r.create_remote("origin", "https://github.com/example/models.git")
    return root


@pytest.fixture
def repo(template: Path, tmp_path: Path) -> Path:
    """A fresh clone-like copy of the template (same DVC remote, empty DVC cache)."""
    root = tmp_path / "repo"
    shutil.copytree(template, root, symlinks=True)
    return root


def tags(repo: Path, hashes: dict, kind: str = "cpu") -> dict[str, str]:
    """Each model's image tag for a pool kind: its content hash and what the kind's build adds."""
    catalog = load_catalog(repo)
    kinds = digests_of(catalog)
    return {m: image_tag(h, kind, kinds.of(catalog.models[m].spec, kind)) for m, h in hashes.items()}


def bentos(home: Path) -> set[str]:
    return {f"{p.parent.name}:{p.name}" for p in (home / "bentos").glob("*/*") if (p / "bento.yaml").is_file()}


@pytest.mark.slow
def test_builds_only_what_changed(repo: Path, env, serve) -> None:
    home = env["home"]
    first = build_models(repo, options=BuildOptions(home=home))
    r = first.results
    assert {n: x.action for n, x in r.items()} == {"tiny": Action.created, "other": Action.created,
                                                   "nodata": Action.failed, "badsvc": Action.failed}
    assert not first.ok
    # one broken model never blocks the others, and each failure says what to do
    assert isinstance(r["nodata"].error, ArtifactError) and "dvc push" in r["nodata"].error.fix
    assert "models/nodata/weights.txt" in r["nodata"].error.message
    assert isinstance(r["badsvc"].error, BuildError) and "not_a_module_anywhere" in r["badsvc"].error.message
    assert r["tiny"].built == ["fetch", "build"]

    hashes = model_hashes(repo, None, load_catalog(repo).models.values())
    tag = tags(repo, hashes)
    tiny = find_bento(home, "tiny", tag["tiny"])
    assert tiny is not None and r["tiny"].bento == tiny.tag == f"tiny:{tag['tiny']}"
    meta = yaml.safe_load((tiny.path / "bento.yaml").read_text())
    assert meta["labels"]["gitops.ml/model-hash"] == hashes["tiny"].digest
    assert (tiny.path / "src/weights.txt").read_text() == "weights of tiny\n"  # fetched from the DVC remote
    assert (tiny.path / "src/common/features.py").is_file()  # shared code staged at its repository path
    assert bentos(home) == {f"tiny:{tag['tiny']}", f"other:{tag['other']}"}

    # second build of the unchanged repo, through the CLI, with a registry that has no images: builds nothing
    reg = serve(None, {})
    result = CliRunner().invoke(app, ["build", "--repo", str(repo), "--registry", f"{reg.host}/models",
                                      "--model", "tiny", "--model", "other", "-o", "json"])
    assert result.exit_code == 0, result.output
    second = json.loads(result.stdout[result.stdout.index("{"):])
    assert [(m["model"], m["action"], m["built"]) for m in second["models"]] == [
        ("other", "unchanged", []), ("tiny", "unchanged", [])]
    assert NO_IMAGE_BACKEND in second["models"][1]["message"]
    assert second["models"][1]["image"] == f"{reg.host}/models/tiny:{tag['tiny']}"
    assert any(m == "HEAD" for m, _, _ in reg.requests)
    assert len(bentos(home)) == 2

    # the CLI exits non-zero when any model failed
    failing = CliRunner().invoke(app, ["build", "--repo", str(repo), "--model", "nodata"])
    assert failing.exit_code == 1 and "dvc push" in failing.stdout

    # new weights for one model (only its .dvc md5 changes): only that model is rebuilt
    (repo / "models/tiny/weights.txt").write_text("better weights\n")
    dvc(repo, "add", "models/tiny/weights.txt")
    dvc(repo, "push", "models/tiny/weights.txt.dvc")
    third = build_models(repo, ["tiny", "other"], BuildOptions(home=home))
    assert {n: x.action for n, x in third.results.items()} == {"tiny": Action.created, "other": Action.unchanged}
    assert third.results["tiny"].hash != hashes["tiny"].digest
    assert len(bentos(home)) == 3


@pytest.mark.slow
def test_without_a_container_engine_images_are_handed_to_argo(repo: Path, env, serve, monkeypatch,
                                                                tmp_path: Path) -> None:
    (repo / "models/tiny/weights.txt").write_text("w\n")  # the workspace already has the data
    dvc(repo, "add", "models/tiny/weights.txt")
    reg = serve(None, {})
    options = BuildOptions(home=env["home"], registry=f"{reg.host}/models", environment="dev", engine=None)
    with ArgoStandIn(token="s3cret", namespaces=("argo",)) as argo:
        monkeypatch.setenv("ARGO_SERVER", argo.url)
        monkeypatch.setenv("ARGO_TOKEN", "s3cret")
        report = build_models(repo, ["tiny"], options)
        tiny = report.results["tiny"]
        assert tiny.action is Action.failed and isinstance(tiny.error, ArgoError)
        assert "RECONCILER_BENTO_URL" in tiny.error.fix
        assert tiny.built == ["fetch", "build"]  # the bento was built; only the image hand-off failed

        monkeypatch.setenv("RECONCILER_BENTO_URL", "https://artifacts.example.com/{model}-{tag}.bento")
        monkeypatch.setenv("RECONCILER_BENTO_EXPORT", str(tmp_path / "exports" / "{model}-{tag}.bento"))
        tiny = build_models(repo, ["tiny"], options).results["tiny"]
        short = tiny.bento.split(":")[1]  # the image tag (images.image_tag)
        assert (tiny.action, tiny.built) == (Action.created, ["image"]), tiny.error
        assert (tmp_path / "exports" / f"tiny-{short}.bento").stat().st_size > 0
        [(namespace, name)] = list(argo.workflows)
        params = {p["name"]: p["value"] for p in argo.workflows[namespace, name]["spec"]["arguments"]["parameters"]}
        assert params["bento-url"] == f"https://artifacts.example.com/tiny-{short}.bento"
        assert params["image-ref"] == f"{reg.host}/models/tiny:{short}"
        assert f"argo/{name}" in tiny.message
        again = build_models(repo, ["tiny"], options).results["tiny"]  # still building on the cluster
        assert (again.action, again.built) == (Action.unchanged, []) and "already submitted" in again.message
        assert len(argo.workflows) == 1


def test_existing_image_in_registry_skips_everything(repo: Path, env, serve) -> None:
    catalog = load_catalog(repo)
    hashes = model_hashes(repo, None, [catalog.models["tiny"]])
    digest = "sha256:" + hashlib.sha256(b"tiny image").hexdigest()
    tag = tags(repo, hashes)["tiny"]
    reg = serve(None, {"models/tiny": {tag: digest}})
    report = build_models(repo, ["tiny"], BuildOptions(home=env["home"], registry=f"{reg.host}/models"))
    tiny = report.results["tiny"]
    assert (tiny.action, tiny.built, tiny.image) == (Action.unchanged, [], f"{reg.host}/models/tiny@{digest}")
    assert not (env["home"] / "bentos").exists() or bentos(env["home"]) == set()
    # HEAD for the digest; GET for the image's labels (its build commit), which the stand-in does not serve
    assert [m for m, _, _ in reg.requests] == ["HEAD", "GET"]
    assert ImageStore.read(repo / IMAGES_LOCK).commit(f"{reg.host}/models/tiny:{tag}") is None
    # the digest is recorded in the repository's lock (committed by the merge workflow), so rendering pins it
    assert ImageStore.read(repo / IMAGES_LOCK).get(f"{reg.host}/models/tiny:{tag}") == digest


def test_resolve_images_pins_known_digests(repo: Path, env) -> None:
    catalog = load_catalog(repo)
    hashes = model_hashes(repo, None, [catalog.models["tiny"], catalog.models["other"]])
    store = ImageStore(repo / IMAGES_LOCK)
    digest = "sha256:" + "1" * 64
    cpu, gpu, neuron = (tags(repo, hashes, kind) for kind in ("cpu", "gpu", "inferentia"))
    store.record(f"localhost:1/models/tiny:{cpu['tiny']}", digest)
    images = resolve_images(catalog, "dev", hashes)
    assert images == {"tiny": f"localhost:1/models/tiny@{digest}",
                      "other": f"localhost:1/models/other:{cpu['other']}",
                      # the CUDA and Neuron images of gpu and inferentia pools: their own tags, digests not known yet
                      "tiny/gpu": f"localhost:1/models/tiny:{gpu['tiny']}",
                      "other/gpu": f"localhost:1/models/other:{gpu['other']}",
                      "tiny/inferentia": f"localhost:1/models/tiny:{neuron['tiny']}",
                      "other/inferentia": f"localhost:1/models/other:{neuron['other']}"}
    assert gpu["tiny"].endswith("-cuda") and neuron["tiny"].endswith("-neuron")
    assert resolve_images(catalog, catalog.environments["dev"], hashes, store=ImageStore.read(repo / IMAGES_LOCK)) == images
    # the machine's own state plays no part: an explicitly empty lock gives tags
    assert resolve_images(catalog, "dev", hashes, store=ImageStore(repo / "none.json"))["tiny"].endswith(cpu["tiny"])


def test_staged_context_is_what_was_hashed(repo: Path, tmp_path: Path) -> None:
    catalog = load_catalog(repo)
    (repo / "models/tiny/weights.txt").write_text("w\n")
    (repo / "models/tiny/notes.log").write_text("x")
    (repo / ".gitignore").write_text("*.log\n")
    h = model_hashes(repo, None, [catalog.models["tiny"]])["tiny"]
    files, shared = staged_files(repo, "models/tiny", h)
    assert shared == ["common/__init__.py", "common/features.py"]
    assert set(files) == {".gitignore", "bentofile.yaml", "service.py", "weights.txt", *shared}
    staged = stage_context(files, repo / "models/tiny/bentofile.yaml", service="service.py:Svc", name="tiny",
                           model_hash=h.digest, shared=shared, dest=tmp_path / "ctx")
    config = yaml.safe_load(staged.read_text())
    assert config["include"] == ["*.py", "weights.txt", *shared]
    assert config["python"] == {"lock_packages": False}  # offline builds: no lock unless asked for
    assert config["name"] == "tiny" and config["labels"]["gitops.ml/model-hash"] == h.digest
    assert (tmp_path / "ctx/common/features.py").is_file() and not (tmp_path / "ctx/notes.log").exists()
    with pytest.raises(BuildError, match="staged twice"):
        stage_context(files, repo / "models/tiny/bentofile.yaml", service="s.py:S", name="tiny", model_hash="x",
                      shared=shared, dest=tmp_path / "ctx")


def test_fetch_outside_a_dvc_repository_is_an_artifact_error(tmp_path: Path) -> None:
    from reconciler.build.artifacts import fetch

    (tmp_path / "m.pkl.dvc").write_text("outs:\n- md5: 0\n  path: m.pkl\n")
    with pytest.raises(ArtifactError, match="not a DVC repository") as err:
        fetch(tmp_path, [tmp_path / "m.pkl.dvc"])
    assert "dvc init" in err.value.fix


def test_an_image_found_in_the_registry_locks_the_commit_its_label_names(repo: Path, env, oci_registry) -> None:
    """A fresh builder (no local bento) finds images another build pushed: the digest and, from the image's
    gitops.ml/git-commit label, the commit it was built from go into the lock (a real registry)."""
    catalog = load_catalog(repo)
    hashes = model_hashes(repo, None, [catalog.models["tiny"], catalog.models["other"]])
    built_from = "5e" * 20
    tag = tags(repo, hashes)
    tiny = oci_registry.push("models/tiny", tag["tiny"], {"gitops.ml/git-commit": built_from}, index=True)
    other = oci_registry.push("models/other", tag["other"])  # built by something that sets no label
    report = build_models(repo, ["tiny", "other"], BuildOptions(home=env["home"], registry=f"{oci_registry.host}/models",
                                                                 engine=None))
    assert {n: (r.action, r.built) for n, r in report.results.items()} == {
        "tiny": (Action.unchanged, []), "other": (Action.unchanged, [])}
    lock = ImageStore.read(repo / IMAGES_LOCK)
    tiny_tag, other_tag = (f"{oci_registry.host}/models/{m}:{tag[m]}" for m in ("tiny", "other"))
    assert (lock.get(tiny_tag), lock.commit(tiny_tag)) == (tiny, built_from)
    assert (lock.get(other_tag), lock.commit(other_tag)) == (other, None)  # unknown: no guess
