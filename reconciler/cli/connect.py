"""Connecting a command to a cluster: the one helper every cluster command uses.

Nothing is printed before the API server answered one GET /version; then `cluster: <context>, server
<url>` goes to stderr, so a person (and a CI log) sees which cluster a command acts on.
"""

from __future__ import annotations

from pathlib import Path

from reconciler.cli.console import err
from reconciler.cluster.identity import Target, connect, environment_cluster, kubeconfig_contexts
from reconciler.cluster.kube import KubeClient


def connect_environment(repo: Path, environment: str, kubeconfig: Path | None,
                        context: str | None) -> tuple[KubeClient, Target]:
    """A client for the environment's cluster whose API server answered, and the Target it talks to.

    An unreadable --kubeconfig is reported first; the environment's cluster.context picks the context
    (another is refused unless --context names it: reconciler.cluster.identity)."""
    if kubeconfig is not None:
        kubeconfig_contexts(str(kubeconfig))
    client, target = connect(environment, environment_cluster(repo, environment), repo=repo,
                             kubeconfig=kubeconfig, context=context)
    client.check_connection()
    err.print(f"cluster: {target.describe()}")
    return client, target


def connect_kubeconfig(kubeconfig: Path | None, context: str | None) -> KubeClient:
    """A client for a kubeconfig context (no environment to choose it), whose API server answered."""
    client = KubeClient.from_kubeconfig(kubeconfig, context)
    client.check_connection()
    return client


def connect_cluster(repo: Path, environment: str | None, kubeconfig: Path | None, context: str | None) -> KubeClient:
    """A client whose API server answered: the environment's cluster, or with no environment the kubeconfig's
    context (`status` and `history` without ENV)."""
    if environment is not None:
        return connect_environment(repo, environment, kubeconfig, context)[0]
    return connect_kubeconfig(kubeconfig, context)
