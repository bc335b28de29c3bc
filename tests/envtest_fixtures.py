"""pytest fixtures on a real Kubernetes API server (see :mod:`tests.envtest`). Imported by tests/conftest.py.

* ``envtest`` (session): the running :class:`~tests.envtest.ControlPlane` of this pytest worker: etcd +
  kube-apiserver with RBAC, the upstream HTTPRoute / VirtualService / PodMonitor CRDs installed, an audit log.
  Skipped when no binaries are found (the reason says how to get them), but never under ``CI=true``.
* ``kcm`` (session): the same control plane with kube-controller-manager started (Deployments get
  ReplicaSets and Pods, garbage collection, namespace deletion). Ask for it when a test needs controllers;
  once started it keeps running for the rest of the worker's session, so no test may rely on its absence.
* ``kube`` (function): an admin :class:`reconciler.cluster.kube.KubeClient` with fast retries.
* ``new_namespace`` (function): ``new_namespace(prefix="t") -> name`` creates a fresh namespace, deleted
  after the test (it then goes Terminating, as on a real cluster).
* ``namespace`` (function): one fresh namespace.
* ``sim_nodes`` (function, starts ``kcm``): a :class:`tests.sim_nodes.SimulatedNodes`, one Node per pool;
  ``with sim_nodes.running(ns): ...`` binds and readies fitting Pods; ``sim_nodes.stuck("digits", "pending")``.
* ``envtest_repo`` (function): ``template_repo`` with every environment's namespace renamed to a fresh one
  (committed), so ``reconcile_pass`` / ``Reconciler`` tests do not meet a previous test's objects:
  ``envtest_repo.root``, ``envtest_repo.namespaces["staging"]``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import git
import pytest
import yaml

from tests.envtest import HOW_TO_GET, ControlPlane, EnvtestUnavailable, find_assets


def under_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1", "yes")


def _unavailable(reason: str) -> NoReturn:
    if under_ci():
        pytest.fail(f"CI=true and the real API server is unavailable: {reason}", pytrace=False)
    pytest.skip(f"real Kubernetes API server unavailable: {reason}")


def start_control_plane(data: Path) -> ControlPlane:
    """A new control plane in `data`, or the test skipped (failed under CI=true) saying what to install."""
    try:
        assets = find_assets()
    except EnvtestUnavailable as exc:
        _unavailable(str(exc))
    if assets is None:
        _unavailable("no envtest binaries: " + HOW_TO_GET)
    try:
        return ControlPlane.start(data, assets)
    except EnvtestUnavailable as exc:
        _unavailable(str(exc))
    raise AssertionError("unreachable")  # _unavailable skips or fails


@pytest.fixture(scope="session")
def envtest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    plane = start_control_plane(tmp_path_factory.mktemp("envtest"))
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="session")
def kcm(envtest: ControlPlane) -> ControlPlane:
    envtest.start_controller_manager()
    return envtest


@pytest.fixture
def kube(envtest: ControlPlane):
    from reconciler.cluster.kube import KubeClient, RetryPolicy

    client = KubeClient.from_kubeconfig(envtest.kubeconfig,
                                        retry=RetryPolicy(attempts=4, initial=0.05, cap=0.5, max_retry_after=1))
    yield client
    client.close()


@pytest.fixture
def sim_nodes(kcm: ControlPlane, kube):
    """One simulated Node per pool of environments/pools.yaml (tests/sim_nodes.py), deleted after the test."""
    from tests.sim_nodes import SimulatedNodes

    nodes = SimulatedNodes(kube)
    yield nodes
    nodes.delete()


@pytest.fixture
def new_namespace(envtest: ControlPlane) -> Iterator[Callable[..., str]]:
    made: list[str] = []

    def make(prefix: str = "t") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        status, body = envtest.raw("POST", "/api/v1/namespaces",
                                   {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        if status != 201:
            raise RuntimeError(f"creating namespace {name}: HTTP {status}: {body}")
        made.append(name)
        return name

    yield make
    envtest.delete_namespaces(made)


@pytest.fixture
def namespace(new_namespace: Callable[..., str]) -> str:
    return new_namespace()


@dataclass
class EnvtestRepo:
    root: Path
    namespaces: dict[str, str]  # environment name -> its (fresh) namespace


def isolate_environments(root: Path, suffix: str | None = None) -> dict[str, str]:
    """Rename every environment's namespace in ``root/environments/*/environment.yaml`` to a fresh one
    (``<namespace>-<suffix>``); returns {environment: namespace}. Edits files only: the caller commits."""
    suffix = suffix or uuid.uuid4().hex[:6]
    out: dict[str, str] = {}
    for path in sorted((root / "environments").glob("*/environment.yaml")):
        text = path.read_text()
        doc = yaml.safe_load(text) or {}
        old = doc.get("namespace")
        if not old:
            continue
        new = f"{old}-{suffix}"
        lines = [f"namespace: {new}" if line.strip() == f"namespace: {old}" else line for line in text.splitlines()]
        path.write_text("\n".join(lines) + "\n")
        out[doc.get("name") or path.parent.name] = new
    return out


@pytest.fixture
def envtest_repo(template_repo: Path, envtest: ControlPlane) -> Iterator[EnvtestRepo]:
    namespaces = isolate_environments(template_repo)
    repo = git.Repo(template_repo)
    repo.git.add("-A")
    repo.git.commit("-m", "environments in fresh namespaces for this test")
    yield EnvtestRepo(template_repo, namespaces)
    envtest.delete_namespaces(namespaces.values())
