"""`reconciler suspend ENV`, `resume ENV` and `events ENV`: as `flux suspend` / `flux resume` / `flux events`.

Suspend writes an annotation on the environment's state ConfigMap (reconciler.run.loop.SUSPEND_ANNOTATION):
`reconciler run` skips a suspended environment on every pass, `reconciler sync` refuses it, and `status`
shows it. Events are the reconciler's own (what it did) and the cluster's about its objects
(reconciler.run.events), newest first.
"""

from __future__ import annotations

import getpass
import json
import sys
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from reconciler.catalog.load import load_catalog
from reconciler.cli.connect import connect_environment
from reconciler.cli.console import out
from reconciler.cli.options import (DEFAULT_STATE_NAMESPACE, ContextOption, EnvironmentArgument, KubeconfigOption,
                                    RepoOption, StateNamespaceOption, fail)
from reconciler.errors import ReconcilerError
from reconciler.run.events import environment_events, record_event
from reconciler.run.record import set_suspended


class EventsFormat(str, Enum):
    text = "text"
    json = "json"


def _who() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (a container's arbitrary uid)
        return "unknown user"


def _set_suspension(repo: Path, environment: str, kubeconfig: Path | None, context: str | None, state_namespace: str,
                    note: str | None, reason: str, message: str, now: datetime) -> None:
    """Write (note) or clear (None) the environment's suspension, then record the Event that says so."""
    try:
        kube, _ = connect_environment(repo, environment, kubeconfig, context)
        set_suspended(kube, environment, state_namespace, note)
    except ReconcilerError as exc:
        raise fail(exc) from None
    record_event(kube, environment, state_namespace, reason, message, now=now)


def suspend_command(
    environment: EnvironmentArgument,
    reason: Annotated[str, typer.Option(help="why, shown by `status` and `events`")] = "",
    repo: RepoOption = Path("."),
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
    state_namespace: StateNamespaceOption = DEFAULT_STATE_NAMESPACE,
) -> None:
    """Stop `reconciler run` (and `sync`) from changing ENV until `reconciler resume ENV` (as `flux suspend`)."""
    now = datetime.now(timezone.utc)
    note = f"{now.strftime('%Y-%m-%dT%H:%M:%SZ')} by {_who()}" + (f": {reason}" if reason else "")
    _set_suspension(repo, environment, kubeconfig, context, state_namespace, note,
                    "Suspended", f"suspended {note}", now)
    out.print(f"suspended {environment} ({note}); `reconciler run` and `reconciler sync` leave it as it is until "
              f"`reconciler resume {environment}`")


def resume_command(
    environment: EnvironmentArgument,
    repo: RepoOption = Path("."),
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
    state_namespace: StateNamespaceOption = DEFAULT_STATE_NAMESPACE,
) -> None:
    """Let `reconciler run` reconcile ENV again (as `flux resume`); its next pass catches up."""
    _set_suspension(repo, environment, kubeconfig, context, state_namespace, None,
                    "Resumed", f"resumed by {_who()}", datetime.now(timezone.utc))
    out.print(f"resumed {environment}; `reconciler run` catches up on its next pass (`reconciler reconcile "
              f"{environment}` asks for it now)")


def events_command(
    environment: EnvironmentArgument,
    fmt: Annotated[EventsFormat, typer.Option("--format", "-f", help="text or json")] = EventsFormat.text,
    repo: RepoOption = Path("."),
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
    state_namespace: StateNamespaceOption = DEFAULT_STATE_NAMESPACE,
) -> None:
    """What the reconciler did to ENV and what the cluster did with its objects, newest first (as `flux events`)."""
    try:
        namespace = load_catalog(repo, only=set()).environment(environment).namespace
        kube, _ = connect_environment(repo, environment, kubeconfig, context)
        events = environment_events(kube, environment, namespace, state_namespace)
    except ReconcilerError as exc:
        raise fail(exc) from None
    if fmt is EventsFormat.json:
        sys.stdout.write(json.dumps([e.as_dict() for e in events], indent=2, sort_keys=True) + "\n")
        return
    if not events:
        out.print(f"{environment} ({namespace}): no events (the API server keeps Events for an hour by default)")
    for e in events:
        count = f" (x{e.count})" if e.count > 1 else ""
        out.print(f"{e.time:<20}  {e.type:<7}  {e.reason:<20}  {e.source:<22}  {e.object}: {e.message}{count}")
