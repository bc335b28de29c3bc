"""`reconciler run`: the long-running reconciler (the loop itself is reconciler.run.loop)."""

from __future__ import annotations

import logging
import os
import signal
import socket
from pathlib import Path
from typing import Annotated

import typer

from reconciler.cli.options import ContextOption, KubeconfigOption, fail
from reconciler.cluster.identity import run_target
from reconciler.cluster.kube import KubeClient
from reconciler.cluster.protocol import Cluster
from reconciler.errors import KubeError, ReconcilerError
from reconciler.results import ObjectRef
from reconciler.run.loop import Reconciler, RunConfig
from reconciler.run.reconcile import reconcile_pass
from reconciler.run.notify import Notifier
from reconciler.source.verify import VerifyPolicy
from reconciler.sync.engine import SyncResult
from reconciler.sync.planner import SyncOptions


def run_command(
    repo_url: Annotated[str, typer.Option("--repo-url", help="git remote to watch (URL or path)")],
    environment: Annotated[list[str], typer.Option("--env", "--environment", "-e", help="environment to reconcile (repeatable)")],
    branch: Annotated[str, typer.Option(help="branch to follow")] = "main",
    workdir: Annotated[Path, typer.Option(help="where the local clone lives")] = Path("/tmp/reconciler/repo"),
    interval: Annotated[float, typer.Option(help="seconds between polls of the remote")] = 60.0,
    resync_every: Annotated[float, typer.Option(help="seconds between full resyncs of an up-to-date environment")] = 600.0,
    namespace: Annotated[str | None, typer.Option(help="namespace of the Lease and state ConfigMaps (default: $POD_NAMESPACE or model-gitops)")] = None,
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
    listen: Annotated[str, typer.Option(help="host:port for /webhook, /metrics and /healthz (in a cluster: 0.0.0.0:8080)")] = "127.0.0.1:8080",
    probe_listen: Annotated[str, typer.Option("--probe-listen", help="host:port for the kubelet's /healthz and /readyz, apart from webhook traffic (in a cluster: 0.0.0.0:8081; empty: off)")] = "127.0.0.1:8081",
    identity: Annotated[str | None, typer.Option(help="this replica's Lease identity (default: $POD_NAME or host-pid)")] = None,
    prune: Annotated[bool, typer.Option("--prune/--no-prune", help="delete owned objects that left git")] = True,
    self_heal: Annotated[bool, typer.Option("--self-heal", help="re-apply objects changed in the cluster (drift) on every pass")] = False,
    prometheus_url: Annotated[str | None, typer.Option(envvar="RECONCILER_PROMETHEUS_URL", help="Prometheus for canary analysis (without it a canary never promotes)")] = None,
    prometheus_deadline: Annotated[float, typer.Option("--prometheus-deadline", envvar="RECONCILER_PROMETHEUS_DEADLINE", help="seconds for each whole Prometheus request (a slow Prometheus makes the analysis inconclusive, never stalls the pass)")] = 10.0,
    verify_gpg_keyring: Annotated[Path | None, typer.Option("--verify-gpg-keyring", envvar="RECONCILER_VERIFY_GPG_KEYRING", help="apply only commits signed by a key of this exported GPG keyring (gpg --export --armor)")] = None,
    verify_ssh_allowed_signers: Annotated[Path | None, typer.Option("--verify-ssh-allowed-signers", envvar="RECONCILER_VERIFY_SSH_ALLOWED_SIGNERS", help="apply only commits signed by an SSH key of this allowed-signers file (git's gpg.ssh.allowedSignersFile format)")] = None,
) -> None:
    """Run the reconciler: follow a git branch and keep the environments in sync (leader-elected).

    The webhook secret is read from $RECONCILER_WEBHOOK_SECRET (no secret: every webhook is refused
    and the loop relies on polling); with $RECONCILER_METRICS_TOKEN set, /metrics wants
    `Authorization: Bearer <token>`."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    host, _, port = listen.rpartition(":")
    secret = os.environ.get("RECONCILER_WEBHOOK_SECRET")
    config = RunConfig(repo_url=repo_url, branch=branch, workdir=workdir, environments=list(environment),
                       state_namespace=namespace or os.environ.get("POD_NAMESPACE", "model-gitops"),
                       interval=interval, resync_every=resync_every,
                       identity=identity or os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}",
                       listen=(host or "127.0.0.1", int(port)), probe_listen=_address(probe_listen),
                       webhook_secret=secret.encode() if secret else None,
                       metrics_token=os.environ.get("RECONCILER_METRICS_TOKEN") or None)
    try:
        kube = KubeClient.from_kubeconfig(kubeconfig, context)
    except ReconcilerError as exc:
        raise fail(exc) from None
    # each pass checks every environment's cluster.context and kubeSystemUID against this target
    target = run_target(kube, kubeconfig, context)
    typer.echo(f"cluster: {target.describe()}", err=True)
    try:
        require_state_namespace(kube, config.state_namespace)
    except ReconcilerError as exc:
        raise fail(exc) from None
    verify = VerifyPolicy(verify_gpg_keyring, verify_ssh_allowed_signers)
    if verify.enabled:
        typer.echo(f"commits must be signed: {verify.describe()}", err=True)
    # RECONCILER_GITHUB_REPO + RECONCILER_GITHUB_TOKEN: commit statuses; RECONCILER_WEBHOOK_URL: Slack-compatible posts
    reconciler = Reconciler(kube, config, SyncOptions(prune=prune, self_heal=self_heal, prometheus_url=prometheus_url, prometheus_deadline=prometheus_deadline,
                                                      target=target, verify=verify), sync=sync_and_report,
                            notify=Notifier.from_env())
    signal.signal(signal.SIGTERM, lambda *_: reconciler.stop())
    signal.signal(signal.SIGINT, lambda *_: reconciler.stop())
    reconciler.start_http()
    try:
        reconciler.run()
    finally:
        reconciler.stop_http()


def _address(text: str) -> tuple[str, int] | None:
    """host:port -> (host, port); empty -> None (the listener is off)."""
    if not text.strip():
        return None
    host, _, port = text.strip().rpartition(":")
    try:
        return host or "127.0.0.1", int(port)
    except ValueError:
        typer.echo(f"error: --probe-listen {text!r} is not host:port (e.g. 0.0.0.0:8081)", err=True)
        raise typer.Exit(2) from None


def require_state_namespace(kube: Cluster, namespace: str) -> None:
    """The Lease and the state ConfigMaps live in ``namespace``; without it no replica can ever lead, and the
    loop would only log a 404 on every turn while /healthz says ok. A client that may not read namespaces
    (403) is let through: its namespace-scoped RBAC then says whether the namespace is usable."""
    try:
        found = kube.get(ObjectRef("v1", "Namespace", None, namespace))
    except KubeError as exc:
        if exc.status == 403:
            return
        raise
    if found is None:
        raise ReconcilerError(f"the state namespace {namespace} does not exist: the leader-election Lease and the "
                              "state ConfigMaps are kept there, so no replica could ever lead",
                              fix=f"create it (`kubectl create namespace {namespace}`, or apply environments/reconciler), "
                                  "or pass --namespace NAME")
    if (found.get("status") or {}).get("phase") == "Terminating":
        raise ReconcilerError(f"the state namespace {namespace} is being deleted (Terminating)",
                              fix="wait until it is gone and create it again, or pass --namespace NAME")


def sync_and_report(kube: Cluster, repo: Path, commit: str, environment: str, options: SyncOptions) -> SyncResult:
    """The loop's pass: reconcile_pass, whose report stage tells GitHub of a canary that ended in it when
    RECONCILER_GITHUB_TOKEN and GITHUB_REPOSITORY are set (never fails the pass)."""
    return reconcile_pass(kube, repo, commit, environment, options, environ=os.environ)
