"""Cluster identity: which cluster a command talks to, and whether it is the environment's.

An environment names its cluster twice, both in its `environment.yaml`:

- ``cluster.context``: the kubeconfig context. A command uses it when the kubeconfig has it, and refuses
  when it does not (the current context is never used silently: a dev context must not receive prod).
  ``--context NAME`` given explicitly is the operator's deliberate choice and wins.
- ``cluster.kubeSystemUID`` (optional): the UID of the cluster's ``kube-system`` namespace, which is
  created once per cluster and never changes. When set, every pass reads it and refuses on a mismatch,
  also in-cluster and also with ``--context``: a reconciler pointed at the wrong cluster never writes.

`choose_context` and `check_target` are pure; `connect` and `verify_cluster` do the I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reconciler.cluster.protocol import Cluster
from reconciler.errors import ClusterIdentityError, KubeError
from reconciler.results import ObjectRef
from reconciler.catalog.files import load
from reconciler.catalog.specs import Cluster as ClusterSpec, EnvironmentSpec
from reconciler.cluster.kube import KubeClient, _default_kubeconfig_exists

KUBE_SYSTEM = ObjectRef("v1", "Namespace", None, "kube-system")
UID_COMMAND = "kubectl get namespace kube-system -o jsonpath='{.metadata.uid}'"


@dataclass(frozen=True)
class Target:
    """The cluster a client talks to: the kubeconfig context (None in-cluster) and the API server URL."""

    context: str | None
    server: str
    explicit: bool = False  # the context was given with --context
    kubeconfig: str | None = None

    def describe(self) -> str:
        where = f"context {self.context}" if self.context is not None else "in-cluster ServiceAccount"
        return f"{where}, server {self.server}" + (" (--context given)" if self.explicit else "")


def choose_context(environment: str, declared: str, *, explicit: str | None, current: str | None,
                   available: list[str], kubeconfig: str) -> str:
    """The kubeconfig context to use for `environment`. Pure.

    `explicit` (from --context) wins; otherwise the environment's declared context, which the
    kubeconfig must have. The current context is never a fallback.
    """
    if explicit:
        return explicit
    if declared in available:
        return declared
    raise ClusterIdentityError(
        f"environment {environment} is for kubeconfig context {declared!r}, but {kubeconfig} has no such "
        f"context (the current one is {current!r}); refusing to use {current!r} for {environment}",
        fix=f"add the context {declared!r} to the kubeconfig (or set cluster.kubeconfig in environments/"
            f"{environment}/environment.yaml), or pass --context {current or 'NAME'} to act on that cluster "
            "on purpose")


def check_target(environment: str, cluster: ClusterSpec, target: Target) -> None:
    """Refuse when the context in use is not the environment's, unless it was given explicitly. Pure."""
    if target.context is None or target.explicit or target.context == cluster.context:
        return
    raise ClusterIdentityError(
        f"environment {environment} is for kubeconfig context {cluster.context!r}, but this client uses "
        f"{target.context!r} (server {target.server}); refusing to act",
        fix=f"use the context {cluster.context!r}, or pass --context {target.context} to act on that cluster "
            "on purpose")


def check_uid(environment: str, cluster: ClusterSpec, target: Target, uid: str | None) -> None:
    """Refuse when the environment pins a cluster identity and the server is another cluster. Pure."""
    wanted = cluster.kubeSystemUID
    if not wanted or uid == wanted:
        return
    raise ClusterIdentityError(
        f"environment {environment} is pinned to the cluster whose kube-system namespace has UID {wanted}, "
        f"but {target.describe()} has {uid or 'no kube-system namespace'}: this is another cluster; refusing to act",
        fix="point the kubeconfig (or the reconciler's Deployment) at the environment's cluster; if the cluster "
            f"was rebuilt, update cluster.kubeSystemUID in environments/{environment}/environment.yaml "
            f"(`{UID_COMMAND}`)")


def verify_cluster(kube: Cluster, environment: str, cluster: ClusterSpec, target: Target | None) -> None:
    """Both checks, for the environment's spec at the commit being applied (reads kube-system when pinned)."""
    if target is None:
        return
    check_target(environment, cluster, target)
    if not cluster.kubeSystemUID:
        return
    try:
        live = kube.get(KUBE_SYSTEM)
    except KubeError as exc:
        raise ClusterIdentityError(
            f"cannot read the identity of {target.describe()} (namespace kube-system) for {environment}: "
            f"{exc.message}", fix="grant `get` on namespaces to the reconciler (environments/reconciler/rbac.yaml "
                                 "does), or check the server is reachable") from None
    check_uid(environment, cluster, target, ((live or {}).get("metadata") or {}).get("uid"))


def kubeconfig_contexts(path: str | None) -> tuple[list[str], str | None]:
    """The context names of a kubeconfig (None: $KUBECONFIG or ~/.kube/config) and its current context."""
    from kubernetes import config as k8s_config

    try:
        contexts, current = k8s_config.list_kube_config_contexts(path)
    except k8s_config.ConfigException as exc:
        raise KubeError(f"cannot load Kubernetes configuration from {path or '~/.kube/config'}: {exc}",
                        fix="pass --kubeconfig PATH (and --context NAME), or run inside a cluster "
                            "with a ServiceAccount") from None
    except (OSError, ValueError, TypeError) as exc:
        raise KubeError(f"cannot read kubeconfig {path}: {exc}", fix="check the file exists and is valid YAML") from None
    return [c.get("name") for c in contexts or []], (current or {}).get("name")


def connect(environment: str, cluster: ClusterSpec, *, repo: Path | None = None, kubeconfig: str | Path | None = None,
            context: str | None = None, **client_kwargs: Any) -> tuple[KubeClient, Target]:
    """A client for the environment's cluster, and the Target it talks to. Raises ClusterIdentityError.

    kubeconfig: --kubeconfig, else the environment's cluster.kubeconfig (relative to the repository),
    else $KUBECONFIG / ~/.kube/config, else the in-cluster ServiceAccount.
    """

    path = str(kubeconfig) if kubeconfig else None
    if path is None and cluster.kubeconfig:
        declared = Path(cluster.kubeconfig).expanduser()
        path = str(declared if declared.is_absolute() or repo is None else Path(repo) / declared)
    if path is None and not _default_kubeconfig_exists():
        client = KubeClient.from_kubeconfig(None, None, **client_kwargs)
        return client, Target(None, _server(client))
    available, current = kubeconfig_contexts(path)
    chosen = choose_context(environment, cluster.context, explicit=context, current=current, available=available,
                            kubeconfig=path or "the kubeconfig ($KUBECONFIG or ~/.kube/config)")
    client = KubeClient.from_kubeconfig(path, chosen, **client_kwargs)
    return client, Target(chosen, _server(client), explicit=bool(context), kubeconfig=path)


def run_target(client: Cluster, kubeconfig: str | Path | None, context: str | None) -> Target:
    """The Target of a client made for `run` (one client for every environment it reconciles)."""

    path = str(kubeconfig) if kubeconfig else None
    if path is None and not _default_kubeconfig_exists():
        return Target(None, _server(client))
    _, current = kubeconfig_contexts(path)
    return Target(context or current, _server(client), explicit=bool(context), kubeconfig=path)


def environment_cluster(repo: Path, environment: str) -> ClusterSpec:
    """The `cluster` of an environment as the working tree declares it (the commit's is checked again)."""

    rel = f"environments/{environment}/environment.yaml"
    return load(EnvironmentSpec, Path(rel), display=rel, root=Path(repo).resolve()).cluster


def _server(client: object) -> str:
    """The API server URL of a KubeClient; "unknown" for a client without one (a stand-in)."""
    host = getattr(getattr(getattr(client, "api_client", None), "configuration", None), "host", None)
    return str(host) if host else "unknown"
