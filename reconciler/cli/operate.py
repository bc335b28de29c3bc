"""Everyday operator commands: `status`, `diff`, `history`, `rollback`, `reconcile`.

The counterparts of `argocd app get/diff/history/rollback` and `flux get` / `flux reconcile`. Each
connects first (no output before the cluster is known to answer), then reads; only `rollback`
and `reconcile` write.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from reconciler.catalog.load import load_catalog
from reconciler.cli.connect import connect_cluster
from reconciler.cli.console import line, out, print_error, print_model_errors, styled
from reconciler.cli.options import (DEFAULT_STATE_NAMESPACE, ContextOption, KubeconfigOption, RepoOption,
                                    StateNamespaceOption, fail)
from reconciler.cli.sync import OutputFormat, _print_result
from reconciler.errors import ReconcilerError, closest, did_you_mean
from reconciler.labels import MANAGER
from reconciler.desired.state import desired_at
from reconciler.run import history
from reconciler.run.record import request_reconcile
from reconciler.run.notify import Notifier
from reconciler.run.rollback import rollback
from reconciler.run.status import EnvironmentStatus, gather, to_markdown, to_text
from reconciler.source.git import upstream_head
from reconciler.sync.server_diff import diff_environment


class Format(str, Enum):
    text = "text"
    json = "json"
    markdown = "markdown"


RepoOpt = RepoOption
KubeconfigOpt = KubeconfigOption
ContextOpt = ContextOption
StateNsOpt = StateNamespaceOption
FormatOpt = Annotated[Format, typer.Option("--format", "-f", help="text, json or markdown")]




def _environments(repo: Path, only: str | None) -> list[str]:
    catalog = load_catalog(Path(repo).resolve(), only=set())
    names = sorted(set(catalog.environments) | {e for e in catalog.env_errors if e != "*"})
    if only is not None:
        if only not in names:
            match = closest(only, names)
            raise ReconcilerError(f"no environment named {only!r}{did_you_mean(only, names)} "
                                  f"(known: {', '.join(names) or 'none'})",
                                  fix=f"use {match!r}" if match else "pick one of the folders under environments/")
        return [only]
    return names


def status_command(
    environment: Annotated[str | None, typer.Argument(help="one environment (default: all)")] = None,
    fmt: FormatOpt = Format.text,
    head: Annotated[str | None, typer.Option(
        help="the revision 'synced' is measured against (default: the upstream branch's head as the remote has it "
             "now, else the checkout's HEAD)")] = None,
    repo: RepoOpt = Path("."),
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
    state_namespace: StateNsOpt = DEFAULT_STATE_NAMESPACE,
) -> None:
    """Per environment and model: deployed commit, synced or out of sync, drift (and which fields), health, canary;
    the source revision as the remote has it, the sync policy, a suspension, and every object's sync and health."""
    try:
        names = _environments(repo, environment)
        kube = connect_cluster(repo, environment, kubeconfig, context)
    except ReconcilerError as exc:
        raise fail(exc) from None
    statuses = []
    upstream = upstream_head(repo) if head is None else None  # one question to the remote for every environment
    for name in names:
        try:
            statuses.append(gather(kube, repo, name, state_namespace=state_namespace, head=head, upstream=upstream))
        except ReconcilerError as exc:
            statuses.append(EnvironmentStatus(name, "", error=str(exc)))
    if fmt is Format.json:
        sys.stdout.write(json.dumps([s.as_dict() for s in statuses], indent=2, sort_keys=True) + "\n")
    elif fmt is Format.markdown:
        sys.stdout.write(to_markdown(statuses))
    else:
        for text in to_text(statuses):
            out.print(text)
    if any(s.error for s in statuses):
        raise typer.Exit(1)


def diff_command(
    environment: Annotated[str, typer.Argument(help="environment to compare, e.g. dev")],
    rev: Annotated[str | None, typer.Option(help="git revision to compare (default: the working tree)")] = None,
    fmt: FormatOpt = Format.text,
    repo: RepoOpt = Path("."),
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
) -> None:
    """Field-level diff of what git renders against the live cluster, from a server-side dry run.

    Exit code 0: no difference, 1: differences, 2: the diff could not be made (as `kubectl diff`;
    the other commands exit 1 on an error)."""
    try:
        _environments(repo, environment)
        kube = connect_cluster(repo, environment, kubeconfig, context)
        state = desired_at(repo, rev, [environment])
        if environment in state.env_errors:
            raise state.env_errors[environment]
        diff = diff_environment(kube, state, environment, field_manager=MANAGER)
    except ReconcilerError as exc:
        raise fail(exc, 2) from None
    if fmt is Format.json:
        sys.stdout.write(json.dumps(diff.as_dict(), indent=2, sort_keys=True) + "\n")
    else:
        changed = [o for o in diff.objects if o.action != "update" or o.changes]
        out.print(f"diff {environment} ({diff.namespace}) @ {diff.revision[:12]}: "
                  f"{len(changed)} of {len(diff.objects)} object(s) differ")
        for obj in changed:
            colour = {"create": "green", "prune": "magenta", "error": "red"}.get(obj.action, "yellow")
            verb = {"create": "would create", "prune": "would prune", "error": "cannot diff", "update": "would change"}
            out.print(line(styled(f"{verb[obj.action]:<13}", colour), f" {obj.ref}" + (f" ({obj.error})" if obj.error else "")))
            for change in obj.changes:
                out.print(f"    {change}")
        print_model_errors(dict[str, object](diff.model_errors), environment)
    if diff.model_errors:
        raise typer.Exit(2)
    if diff.changed:
        raise typer.Exit(1)


def history_command(
    environment: Annotated[str, typer.Argument(help="environment, e.g. prod")],
    fmt: FormatOpt = Format.text,
    repo: RepoOpt = Path("."),
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
    state_namespace: StateNsOpt = DEFAULT_STATE_NAMESPACE,
) -> None:
    """The environment's syncs and rollbacks, newest last (ids for `rollback --to`)."""
    try:
        _environments(repo, environment)
        kube = connect_cluster(repo, environment, kubeconfig, context)
        entries = history.load(kube, environment, state_namespace)
    except ReconcilerError as exc:
        raise fail(exc) from None
    if fmt is Format.json:
        sys.stdout.write(json.dumps([asdict(e) for e in entries], indent=2, sort_keys=True) + "\n")
        return
    if fmt is Format.markdown:
        rows = ["| id | commit | time | action | result | summary |", "|---|---|---|---|---|---|"]
        rows += [f"| {e.id} | `{e.commit[:12]}` | {e.time} | {e.action} | {'ok' if e.ok else 'not ok'} | {e.summary} |"
                 for e in entries]
        sys.stdout.write("\n".join(rows) + "\n")
        return
    if not entries:
        out.print(f"{environment}: no history yet (in namespace {state_namespace}); `reconciler run`, `sync` and "
                  "`rollback` record it")
    for e in entries:
        out.print(f"{e.id:>4}  {e.commit[:12]}  {e.time:<20}  {e.action:<8}  {'ok    ' if e.ok else 'not ok'}  {e.summary}")


def rollback_command(
    environment: Annotated[str, typer.Argument(help="environment to roll back, e.g. prod")],
    to: Annotated[str, typer.Option("--to", help="a history id (`reconciler history ENV`) or a git revision")],
    repo: RepoOpt = Path("."),
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
    state_namespace: StateNsOpt = DEFAULT_STATE_NAMESPACE,
) -> None:
    """Sync an older commit and pause auto-sync of the environment until a newer commit arrives.

    As `argocd app rollback`: `reconciler run` leaves the environment at that commit while the branch
    head stays the one it was rolled back from; the next merge is synced as usual."""
    try:
        _environments(repo, environment)
        kube = connect_cluster(repo, environment, kubeconfig, context)
        done = rollback(kube, repo, environment, to, state_namespace=state_namespace,
                        now=datetime.now(timezone.utc), notify=Notifier.from_env())
    except ReconcilerError as exc:
        raise fail(exc) from None
    _print_result(done.result, OutputFormat.text)
    if done.error:
        print_error(done.error)
        raise typer.Exit(1)
    out.print(f"rolled back {environment} to {done.commit[:12]}; `reconciler run` will not move it until a commit "
              f"newer than {done.pinned_head[:12]} arrives (history id {done.history_id})")
    if not done.result.ok:
        raise typer.Exit(1)


def reconcile_command(
    environment: Annotated[str, typer.Argument(help="environment the running reconciler should reconcile now")],
    repo: RepoOpt = Path("."),
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
    state_namespace: StateNsOpt = DEFAULT_STATE_NAMESPACE,
) -> None:
    """Ask the in-cluster `reconciler run` to fetch and reconcile ENV now (as `flux reconcile --with-source`)."""
    when = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    try:
        _environments(repo, environment)
        kube = connect_cluster(repo, environment, kubeconfig, context)
        request_reconcile(kube, environment, state_namespace, when)
    except ReconcilerError as exc:
        raise fail(exc) from None
    out.print(f"requested a reconcile of {environment} at {when}; follow it with `reconciler status {environment}`")
