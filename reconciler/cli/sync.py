"""`reconciler sync`: apply one commit to one environment's cluster, and print the result."""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from reconciler.cli.connect import connect_environment
from reconciler.cli.console import line, out, print_error, styled, title as text_title
from reconciler.cli.exits import ExitCode, outcome
from reconciler.cli.options import (DEFAULT_STATE_NAMESPACE, ContextOption, EnvironmentArgument, KubeconfigOption,
                                    RepoOption, StateNamespaceOption, fail)
from reconciler.errors import KubeError, ReconcilerError
from reconciler.run.reconcile import reconcile_pass
from reconciler.run.record import suspension
from reconciler.run.rollback import record_manual_sync
from reconciler.source.verify import VerifyPolicy
from reconciler.sync.planner import SyncOptions


class OutputFormat(str, Enum):
    text = "text"
    json = "json"


def _print_result(result: Any, fmt: OutputFormat) -> None:
    if fmt is OutputFormat.json:
        sys.stdout.write(json.dumps(result.as_dict(), indent=2, sort_keys=True) + "\n")
        return
    title = f"sync {result.environment} ({result.namespace})" + (" [dry run]" if result.dry_run else "")
    if result.commit:
        title += f" @ {result.commit[:12]}"
    table = Table(title=text_title(title), show_lines=False)
    for col in ("model", "created", "configured", "unchanged", "pruned", "skipped", "failed", "health"):
        table.add_column(col, justify="left" if col in ("model", "health") else "right")
    for model, summary in result.by_model().items():
        counts = summary.as_dict()
        health = result.health.get(model)
        table.add_row(styled(model, ""), *[str(counts.get(a, "")) for a in
                               ("created", "configured", "unchanged", "pruned", "skipped", "failed")],
                      health.status.value if health else "")
    out.print(table)
    for r in result.objects:
        if r.action.value != "unchanged" or r.message:
            colour = {"failed": "red", "skipped": "yellow", "pruned": "magenta"}.get(r.action.value, "green")
            out.print(line("  ", styled(f"{r.action.value:<10}", colour), f" {r.ref}" + (f"  ({r.message})" if r.message else "")))
    for model, errors in sorted(result.model_errors.items()):
        out.print(line(styled(f"✗ {model}", "bold red"), " not synced:"))
        for e in errors:
            out.print(f"    - {e}")
    for note in result.notes:
        out.print(styled(f"note: {note}", "dim"))
    if result.error:
        print_error(result.error, out)
    summary = result.summary().would() if result.dry_run else str(result.summary())
    out.print(f"{summary} in {result.duration:.2f}s")


def sync_command(
    environment: EnvironmentArgument,
    repo: RepoOption = Path("."),
    rev: Annotated[str, typer.Option(help="git revision to apply")] = "HEAD",
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="validate server-side and show the plan; write nothing")] = False,
    prune: Annotated[bool, typer.Option("--prune/--no-prune", help="delete owned objects that left git")] = True,
    self_heal: Annotated[bool, typer.Option("--self-heal", help="re-apply objects changed in the cluster")] = False,
    allow_empty_prune: Annotated[bool, typer.Option("--allow-empty-prune", help="allow pruning everything when the render is empty")] = False,
    confirm_prune_kinds: Annotated[list[str] | None, typer.Option("--confirm-prune-kinds", help="also prune these protected kinds (Namespace, PersistentVolumeClaim); repeatable or comma-separated")] = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="wait for the synced models to become healthy")] = False,
    timeout: Annotated[float, typer.Option(help="seconds to wait for health")] = 300.0,
    fmt: Annotated[OutputFormat, typer.Option("--format", "-f", help="text or json")] = OutputFormat.text,
    prometheus_url: Annotated[str | None, typer.Option(envvar="RECONCILER_PROMETHEUS_URL", help="Prometheus for canary analysis (without it a canary never promotes)")] = None,
    prometheus_deadline: Annotated[float, typer.Option("--prometheus-deadline", envvar="RECONCILER_PROMETHEUS_DEADLINE", help="seconds for each whole Prometheus request (a slow Prometheus makes the analysis inconclusive, never stalls the pass)")] = 10.0,
    verify_gpg_keyring: Annotated[Path | None, typer.Option("--verify-gpg-keyring", envvar="RECONCILER_VERIFY_GPG_KEYRING", help="apply only commits signed by a key of this exported GPG keyring (gpg --export --armor)")] = None,
    verify_ssh_allowed_signers: Annotated[Path | None, typer.Option("--verify-ssh-allowed-signers", envvar="RECONCILER_VERIFY_SSH_ALLOWED_SIGNERS", help="apply only commits signed by an SSH key of this allowed-signers file (git's gpg.ssh.allowedSignersFile format)")] = None,
    state_namespace: StateNamespaceOption = DEFAULT_STATE_NAMESPACE,
) -> None:
    """Apply the current commit of the repository to one environment's cluster (server-side apply, prune, health)."""
    kinds = frozenset(k.strip() for item in (confirm_prune_kinds or []) for k in item.split(",") if k.strip())
    try:
        # no result table before the cluster is known to answer
        kube, target = connect_environment(repo, environment, kubeconfig, context)
        note = suspension(kube, environment, state_namespace)
        if note is not None and not dry_run:
            raise ReconcilerError(f"{environment} is suspended ({note}): not synced",
                                  fix=f"`reconciler resume {environment}` first, or see what would change with "
                                      f"`reconciler sync {environment} --dry-run`")
        options = SyncOptions(prune=prune, allow_empty_prune=allow_empty_prune, confirm_prune_kinds=kinds,
                              self_heal=self_heal, dry_run=dry_run, wait=wait, timeout=timeout,
                              prometheus_url=prometheus_url, prometheus_deadline=prometheus_deadline, target=target,
                              verify=VerifyPolicy(verify_gpg_keyring, verify_ssh_allowed_signers))
        result = reconcile_pass(kube, repo, rev, environment, options, environ=os.environ)
    except ReconcilerError as exc:
        raise fail(exc) from None
    if note is not None:
        result.notes.append(f"{environment} is suspended ({note}): a dry run only")
    if not dry_run:
        try:
            recorded = record_manual_sync(kube, environment, result, state_namespace=state_namespace,
                                          now=datetime.now(timezone.utc))
        except KubeError as exc:
            recorded = f"not recorded: {exc.message}"
        if recorded:
            result.notes.append(recorded)
    _print_result(result, fmt)
    raise typer.Exit(exit_code(result))


def exit_code(result: Any) -> ExitCode:
    """0 all synced and healthy; 1 the environment failed as a whole (or nothing of it was synced);
    3 partial: a model skipped for its errors, an object failed, a prune refused, a model unhealthy."""
    if result.ok:
        return ExitCode.OK
    if result.error is not None:
        return ExitCode.FAILED
    summary = result.summary().as_dict()
    done = sum(int(summary.get(a, 0)) for a in ("created", "configured", "unchanged", "pruned"))
    problems = len(result.model_errors) + int(summary.get("failed", 0))
    return outcome(done=done, failed=problems, refused=len(result.refused)) if problems or result.refused \
        else ExitCode.PARTIAL  # everything was applied, but not everything is healthy
