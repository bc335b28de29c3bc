"""The user's path: the INSTALLED `reconciler` (this venv's console script) run as a subprocess from the root
of a fresh `git clone`, after README command 1 (`reconciler quickstart`), with default flags, for every command
of the README's tables; the cluster commands on a real API server (envtest), reached through a kubeconfig whose
contexts carry the names the environments declare (as a user's would). A relative `--repo` and a checkout
reached through a symlink are run too.

One clone and one API server of its own (a user's new cluster: nothing of other tests recorded in it) per pytest
worker; the `xdist_group` keeps these tests on one worker, so README command 1 runs once.
The tests of this module build on each other in file order (sync, then status, ...), as a user's hour does.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from reconciler.source import guard
from tests.conftest import TEMPLATE_MODELS
from tests.envtest import ControlPlane
from tests.envtest_fixtures import start_control_plane
from tests.test_kind_images import _Served

PROJECT = Path(__file__).resolve().parents[1]
RECONCILER = Path(sys.executable).parent / "reconciler"  # the console script pip installed into the venv
CONTEXTS = {"dev": "kind-dev", "staging": "staging-eks", "prod": "prod-eks"}  # environments/*/environment.yaml

pytestmark = [pytest.mark.xdist_group("user_path"), pytest.mark.slow]


def words(text: str) -> str:
    """Output with its line wrapping undone (a non-TTY console wraps at its width)."""
    return " ".join(text.split())


class User:
    """A user at a shell: runs the installed command in a folder, with their environment variables."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root = root
        self.env = env

    def run(self, *args: str, cwd: Path | None = None, ok: tuple[int, ...] = (0,), timeout: float = 600,
            **extra_env: str) -> subprocess.CompletedProcess:
        proc = subprocess.run([str(RECONCILER), *args], cwd=cwd or self.root, env={**self.env, **extra_env},
                              capture_output=True, text=True, timeout=timeout)
        assert proc.returncode in ok, (f"`reconciler {' '.join(args)}` exited {proc.returncode}\n"
                                       f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
        return proc

    def git(self, *args: str) -> str:
        return subprocess.run(["git", *args], cwd=self.root, env=self.env, check=True, capture_output=True,
                              text=True).stdout.strip()

    def head(self) -> str:
        return self.git("rev-parse", "HEAD")


@pytest.fixture(scope="session")
def user(tmp_path_factory: pytest.TempPathFactory) -> User:
    """A fresh clone of this project's committed HEAD, on `main` as a GitHub clone is, after README command 1."""
    assert RECONCILER.is_file(), f"no installed console script at {RECONCILER}: `pip install -e '.[test]'`"
    home = tmp_path_factory.mktemp("user")
    root = home / "model-gitops"
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "RECONCILER_IMAGES_FILE")}
    env.update(BENTOML_HOME=str(home / "bentoml"), BENTOML_DO_NOT_TRACK="true", PWD=str(root))
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(PROJECT), str(root)], check=True, env=env)
    subprocess.run(["git", "checkout", "--quiet", "-B", "main"], cwd=root, check=True, env=env)
    person = User(root, env)
    person.run("quickstart")  # README command 1 (its venv + install part is this test run's own venv)
    return person


@pytest.fixture(scope="session")
def fresh_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """A control plane of its own (envtest), as a user's new cluster: no state namespace, no namespace of an
    environment, and no other test's syncs recorded for `dev` in the default state namespace."""
    plane = start_control_plane(tmp_path_factory.mktemp("user-cluster"))
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="session")
def user_kubeconfig(fresh_cluster: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The server under the context names the environments declare (`cluster.context`), current context
    kind-dev: what a user's ~/.kube/config holds for these clusters."""
    doc = yaml.safe_load(Path(fresh_cluster.kubeconfig).read_text())
    (context,) = doc["contexts"]
    doc["contexts"] = [{"name": name, "context": context["context"]} for name in CONTEXTS.values()]
    doc["current-context"] = CONTEXTS["dev"]
    path = tmp_path_factory.mktemp("kube") / "config"
    path.write_text(yaml.safe_dump(doc))
    path.chmod(0o600)
    return path


@pytest.fixture
def cluster_user(user: User, user_kubeconfig: Path) -> User:
    return User(user.root, {**user.env, "KUBECONFIG": str(user_kubeconfig)})


# --------------------------------------------------------------------------- README command 1, offline commands


def test_readme_command_1_leaves_git_status_clean(user):
    assert user.git("status", "--porcelain") == ""
    for env in ("dev", "staging", "prod"):
        assert (user.root / "hydrated" / env / "manifest.yaml").is_file()


def test_plan_from_the_repository_root(user):
    nothing = user.run("plan")
    assert words(nothing.stdout).count("no change") == 3, nothing.stdout
    first = words(user.run("plan", "--base", "empty").stdout)
    assert "Plan empty -> worktree" in first and f"dev: {len(TEMPLATE_MODELS)} model(s) changed" in first, first
    as_json = user.run("plan", "--base", "empty", "--format", "json").stdout
    assert all(f'"{model}"' in as_json for model in TEMPLATE_MODELS), as_json


def test_render_and_hydrate_from_the_repository_root(user, tmp_path):
    rendered = [d for d in yaml.safe_load_all(user.run("render", "dev").stdout) if d]
    deployments = sorted(d["metadata"]["name"] for d in rendered if d["kind"] == "Deployment")
    assert deployments == [f"{model}-cpu-general" for model in TEMPLATE_MODELS]  # dev serves every model on CPU
    only = [d for d in yaml.safe_load_all(user.run("render", "prod", "--model", "iris-classifier").stdout) if d]
    assert {d["metadata"]["labels"].get("gitops.ml/model") for d in only if d["kind"] == "Deployment"} \
        == {"iris-classifier"}
    user.run("hydrate", "--out", str(tmp_path / "out"))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["dev", "prod", "staging"]
    assert user.git("status", "--porcelain") == ""


def test_build_and_the_pipelines_from_the_repository_root(user):
    built = words(user.run("build").stdout)
    # README command 1 built every model's Bento at these content hashes: nothing is built again
    assert all(f"unchanged {model}" in built for model in TEMPLATE_MODELS), built
    trained = words(user.run("pipeline", "run", "train", "--model", "iris-classifier").stdout)
    assert "iris-classifier" in trained
    assert user.git("status", "--porcelain") == "", "retraining at the lock changed committed files"
    train = yaml.safe_load(user.run("pipeline", "render", "train", "--model", "iris-classifier").stdout)
    assert train["kind"] == "Workflow"
    image = user.run("pipeline", "render", "build-image", "--model", "iris-classifier",
                     "--bento-url", "https://bentos.example.com/iris.bento").stdout
    assert all(d["kind"] == "Workflow" for d in yaml.safe_load_all(image) if d)
    neuron = yaml.safe_load(user.run("pipeline", "render", "neuron-compile", "--model", "digits-classifier",
                                     "--env", "prod", "--bento-url", "https://bentos.example.com/digits.bento").stdout)
    assert neuron["kind"] == "Workflow"


# every endpoint of each example model, with an input and what a correct answer is
ENDPOINTS = {
    "iris-classifier": {
        "/predict": ({"features": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}, [0, 2]),
        "/species": ({"features": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}, ["setosa", "virginica"]),
    },
    "digits-classifier": {
        "/predict": ("digits", None),  # the first images of scikit-learn's digits set, answered by their labels
    },
    "wine-classifier": {
        "/predict": ("wine", None),  # a wine of each cultivar from scikit-learn's wine set, answered by its class
    },
}


def test_every_model_of_the_template_has_its_endpoints_listed_here():
    assert sorted(ENDPOINTS) == list(TEMPLATE_MODELS)


@pytest.mark.parametrize("model", sorted(ENDPOINTS))
def test_every_endpoint_of_the_example_services_answers_under_bentoml_serve(user, model):
    """README command 1 built each example's Bento; `bentoml serve` runs it, in an environment of the model's own
    lock plus BentoML (what its image installs: torch for the PyTorch model, which the reconciler's environment
    does not have), and every API route the Bento declares is called (an endpoint calling another endpoint in
    process used to time out after 10 s)."""
    import httpx
    from sklearn.datasets import load_digits, load_wine

    from reconciler.catalog.environments import serving_python

    (version,) = [p.name for p in (Path(user.env["BENTOML_HOME"]) / "bentos" / model).iterdir()
                  if p.is_dir() and "-" not in p.name]  # the cpu Bento (-cuda / -neuron are the pool kinds')
    bento = yaml.safe_load((Path(user.env["BENTOML_HOME"]) / "bentos" / model / version / "bento.yaml").read_text())
    routes = {r["route"] for r in bento["schema"]["routes"]}
    assert routes == set(ENDPOINTS[model]), f"{model} serves {routes}: give every route an input here"
    served = _Served(Path(user.env["BENTOML_HOME"]), f"{model}:{version}", python=serving_python(user.root, model))
    try:
        served.wait_live()
        for route, (body, expected) in ENDPOINTS[model].items():
            if body == "digits":
                digits = load_digits()
                body, expected = {"images": digits.data[:5].tolist()}, digits.target[:5].tolist()
            elif body == "wine":
                wine, rows = load_wine(), [0, 70, 150]
                body, expected = {"measurements": wine.data[rows].tolist()}, wine.target[rows].tolist()
            response = httpx.post(served.url(route), json=body, timeout=60)
            assert response.status_code == 200, f"{model} {route}: HTTP {response.status_code} {response.text}"
            assert response.json() == expected, f"{model} {route}: {response.json()}"
            assert response.headers.get("x-model-version"), f"{model} {route}: no X-Model-Version header"
    finally:
        served.stop()


def test_pipeline_links_needs_an_https_origin_and_says_so(user):
    local = user.run("pipeline", "links", ok=(1,))
    assert "is not an https URL" in words(local.stderr + local.stdout)
    url = user.git("remote", "get-url", "origin")
    user.git("remote", "set-url", "origin", "https://github.com/example-org/model-gitops.git")  # a GitHub clone's
    try:
        links = yaml.safe_load(user.run("pipeline", "links").stdout)
        assert links["kind"] == "ConfigMap"
        assert "https://github.com/example-org/model-gitops" in yaml.safe_dump(links)
    finally:
        user.git("remote", "set-url", "origin", url)


def test_model_new_from_the_repository_root(user):
    try:
        user.run("model", "new", "fraud-detector", "--from", "iris-classifier")
        spec = yaml.safe_load((user.root / "models/fraud-detector/model.yaml").read_text())
        assert spec["name"] == "fraud-detector"
        assert not (user.root / "models/fraud-detector/model.pkl").exists()  # weights are not copied
    finally:
        shutil.rmtree(user.root / "models/fraud-detector", ignore_errors=True)
    assert user.git("status", "--porcelain") == ""


# --------------------------------------------------------------------------- cluster commands (envtest)


def test_sync_creates_the_state_namespace_and_status_shows_the_first_sync(cluster_user):
    head = cluster_user.head()
    synced = cluster_user.run("sync", "dev")
    text = words(synced.stdout)
    assert "created the state namespace model-gitops" in text and "recorded as history id 1" in text, text
    assert "cluster: context kind-dev" in synced.stderr
    status = words(cluster_user.run("status", "dev").stdout)
    assert f"dev (models-dev): synced; deployed {head[:12]}" in status, status
    assert "never synced" not in status
    history = cluster_user.run("history", "dev").stdout.splitlines()
    assert [line.split()[:2] + line.split()[3:5] for line in history] == [["1", head[:12], "sync", "ok"]]


def test_diff_status_and_rollback_from_the_repository_root(cluster_user):
    diff = words(cluster_user.run("diff", "dev").stdout)
    assert re.search(r"diff dev \(models-dev\) @ worktree: 0 of \d+ object\(s\) differ", diff), diff
    everything = words(cluster_user.run("status").stdout)
    assert "staging (models-staging): never synced" in everything and "dev (models-dev): synced" in everything
    rolled = words(cluster_user.run("rollback", "dev", "--to", "1").stdout)
    assert f"rolled back dev to {cluster_user.head()[:12]}" in rolled, rolled
    assert "rollback ok" in words(cluster_user.run("history", "dev").stdout)


def test_run_reconciles_a_new_commit_and_reconcile_asks_it_to(cluster_user, tmp_path):
    # `reconcile` annotates the environment's state record, which a sync writes: this test does not rely on another
    # test of the module having synced dev first (pytest-xdist may run it first, on a worker of its own)
    cluster_user.run("sync", "dev")
    spec = cluster_user.root / "environments/dev/environment.yaml"
    original = spec.read_text()
    spec.write_text(original.replace("replicasFactor: 0.5", "replicasFactor: 1.0"))
    cluster_user.git("commit", "--quiet", "-am", "dev: full replicas")
    new = cluster_user.head()
    try:
        asked = words(cluster_user.run("reconcile", "dev").stdout)
        assert "requested a reconcile of dev" in asked, asked
        proc = subprocess.Popen([str(RECONCILER), "run", "--repo-url", ".", "--env", "dev",
                                 "--listen", "127.0.0.1:0", "--workdir", str(tmp_path / "mirror")],
                                cwd=cluster_user.root, env=cluster_user.env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and proc.poll() is None:
                if f"{new[:12]}" in cluster_user.run("history", "dev").stdout:
                    break
                time.sleep(1)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            output = proc.communicate(timeout=60)[0]
        history = cluster_user.run("history", "dev").stdout.splitlines()
        assert any(line.split()[1] == new[:12] and "sync" in line.split() for line in history), \
            f"`reconciler run` did not sync {new[:12]}:\n{output}\n{history}"
        status = words(cluster_user.run("status", "dev").stdout)
        assert f"deployed {new[:12]}" in status, status
    finally:
        spec.write_text(original)
        cluster_user.git("commit", "--quiet", "-am", "dev: back to half replicas")


def test_rollout_commands_on_a_canary_from_the_repository_root(cluster_user):
    cluster_user.run("sync", "staging")  # the first deployment: stable, no canary
    service = cluster_user.root / "models/iris-classifier/service.py"
    original = service.read_text()
    service.write_text(original + "# v2\n")
    cluster_user.git("commit", "--quiet", "-am", "iris: v2")
    try:
        started = words(cluster_user.run("sync", "staging").stdout)
        assert "canary iris-classifier: start" in started, started
        status = words(cluster_user.run("rollout", "status", "iris-classifier", "staging").stdout)
        assert status.startswith("iris-classifier in staging: initializing"), status
        for verb, says in (("pause", "paused"), ("resume", "resumed"), ("promote", "promote requested"),
                           ("abort", "abort requested")):
            out = words(cluster_user.run("rollout", verb, "iris-classifier", "staging").stdout)
            assert f"iris-classifier in staging: {says}" in out, out
    finally:
        service.write_text(original)
        cluster_user.git("commit", "--quiet", "-am", "iris: back to v1")


# --------------------------------------------------------------------------- a relative --repo, a symlinked checkout


def _measured_head(user: User) -> str:
    """The revision `status` measures 'synced' against by default: the upstream branch's head as the remote has it
    now (`git ls-remote`), else the checkout's HEAD (earlier tests of this module commit locally, so the two
    differ when the clone has an upstream)."""
    try:
        upstream = user.git("rev-parse", "--abbrev-ref", "--symbolic-full-name", "@{upstream}").strip()
    except subprocess.CalledProcessError:  # no upstream: the checkout's HEAD
        return user.head()
    remote, _, branch = upstream.partition("/")
    listed = user.git("ls-remote", remote, f"refs/heads/{branch}").split()
    return listed[0] if listed else user.head()


def test_a_relative_repo_and_a_symlinked_checkout(cluster_user, tmp_path):
    parent = cluster_user.root.parent
    checkout = cluster_user.head()[:12]
    head = _measured_head(cluster_user)[:12]
    relative = words(cluster_user.run("status", "dev", "--repo", cluster_user.root.name, cwd=parent).stdout)
    assert "dev (models-dev)" in relative and f"head {head}" in relative, relative
    cluster_user.run("render", "dev", "--repo", cluster_user.root.name, cwd=parent)
    cluster_user.run("plan", "--repo", f"../{parent.name}/{cluster_user.root.name}", cwd=parent)

    link = tmp_path / "checkout"
    link.symlink_to(cluster_user.root, target_is_directory=True)
    for args, cwd in ((("--repo", str(link)), tmp_path), (("--repo", "checkout"), tmp_path), ((), link)):
        assert "Deployment" in cluster_user.run("render", "dev", *args, cwd=cwd).stdout
        status = words(cluster_user.run("status", "dev", *args, cwd=cwd).stdout)
        assert f"head {head}" in status and re.search(r"digits-classifier: \d+ objects", status), status
        diff = words(cluster_user.run("diff", "dev", *args, cwd=cwd, ok=(0, 1)).stdout)
        assert "diff dev (models-dev)" in diff, diff
    assert checkout == cluster_user.head()[:12]


# --------------------------------------------------------------------------- the read guard itself


def test_the_guard_reads_a_relative_root_and_a_path_spelled_through_a_symlinked_root(tmp_path, monkeypatch):
    real = tmp_path / "real"
    (real / "environments/dev").mkdir(parents=True)
    (real / "environments/dev/environment.yaml").write_text("name: dev\n")
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    assert guard.read_text(Path("real"), "environments/dev/environment.yaml") == "name: dev\n"
    assert guard.read_text(link, link / "environments/dev/environment.yaml") == "name: dev\n"
    assert guard.read_text(Path("link"), Path("link").absolute() / "environments/dev/environment.yaml") \
        == "name: dev\n"
    (tmp_path / "secret").write_text("no")
    with pytest.raises(Exception, match="leaves the repository"):
        guard.read_text(link, link / ".." / "secret")
