"""``reconciler rollout status|promote|abort|pause|resume MODEL ENV``.

The commands read and write the rollout state in the environment's cluster (ConfigMap
``rollout-<model>``). promote / abort are recorded as requests that the next reconcile acts on
(it holds the desired objects a promotion applies); pause / resume take effect at once.
"""

from __future__ import annotations

import json
import time
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from reconciler.catalog.files import load
from reconciler.catalog.specs import EnvironmentSpec
from reconciler.cli.connect import connect_environment
from reconciler.cli.console import err, line, out, styled
from reconciler.cli.options import ContextOption, KubeconfigOption, RepoOption, fail
from reconciler.cluster.identity import verify_cluster
from reconciler.cluster.kube import KubeClient
from reconciler.errors import ReconcilerError
from reconciler.extras import require
from reconciler.report.rollout import report_json, write_png
from reconciler.rollout import machine, store
from reconciler.rollout.state import RolloutState

rollout_app = typer.Typer(help="Canary rollouts: show, promote, abort, pause or resume a model's rollout.",
                          rich_markup_mode=None,
                          no_args_is_help=True)

ModelArg = Annotated[str, typer.Argument(help="model name, e.g. iris-classifier")]
EnvArg = Annotated[str, typer.Argument(help="environment name, e.g. prod")]
RepoOpt = RepoOption
KubeconfigOpt = KubeconfigOption
ContextOpt = ContextOption


class Format(str, Enum):
    text = "text"
    json = "json"


def _console(stderr: bool = False) -> Any:
    return err if stderr else out


def _connect(repo: Path, env_name: str, kubeconfig: Path | None, context: str | None) -> tuple[EnvironmentSpec, KubeClient]:
    """The environment and a client for its cluster (reconciler.cli.connect), its pinned identity checked."""
    rel = f"environments/{env_name}/environment.yaml"
    env = load(EnvironmentSpec, Path(rel), display=rel, root=Path(repo))
    client, target = connect_environment(repo, env_name, kubeconfig, context)
    verify_cluster(client, env_name, env.cluster, target)
    return env, client


def _load(client: KubeClient, model: str, env: EnvironmentSpec) -> store.Stored:
    stored = store.load(client, model, env.namespace)
    if stored is None:
        raise ReconcilerError(f"no rollout recorded for {model} in {env.name} (ConfigMap "
                              f"{env.namespace}/{store.configmap_name(model)} not found)",
                              fix="check the model name; a rollout is recorded once the reconciler syncs a new "
                                  "revision in an environment with canary: true")
    return stored




@rollout_app.command()
def status(model: ModelArg, environment: EnvArg, repo: RepoOpt = Path("."), kubeconfig: KubeconfigOpt = None,
           context: ContextOpt = None, format: Annotated[Format, typer.Option("--format", "-f", help="text or json")] = Format.text,
           png: Annotated[Path | None, typer.Option("--png", help="also write a latency/error chart here")] = None,
           ) -> None:
    """Show the rollout report: per step the weights, stable and canary metrics, the decision and why."""
    try:
        if png is not None:
            require("report")
        env, client = _connect(repo, environment, kubeconfig, context)
        state = _load(client, model, env).state
    except ReconcilerError as exc:
        raise fail(exc) from None
    if format is Format.json:
        typer.echo(json.dumps(report_json(state), indent=2))
    else:
        print_report(state, _console())
    if png is not None:
        write_png(state, png)
        _console(stderr=True).print(f"chart written to {png}")


def _command(model: str, environment: str, repo: Path, kubeconfig: Path | None, context: str | None,
             verb: str) -> None:
    try:
        env, client = _connect(repo, environment, kubeconfig, context)
        stored = _load(client, model, env)
        state, now = stored.state, time.time()
        if not state.phase.active:
            raise ReconcilerError(f"{model} in {environment} has no canary in progress (phase {state.phase.value})",
                                  fix="nothing to do; `reconciler rollout status` shows the last outcome")
        if verb == "pause":
            new = machine.pause(state, now)
        elif verb == "resume":
            new = machine.resume(state, now)
        else:
            new = machine.request(state, verb, now)
        if new != state:
            store.save(client, new, env.namespace, stored.resource_version)
    except ReconcilerError as exc:
        raise fail(exc) from None
    if new == state:
        message = {"pause": "already paused", "resume": "not paused"}.get(verb, f"{verb} already requested")
    elif verb in ("promote", "abort"):
        message = f"{verb} requested: the next reconcile of {environment} carries it out"
    else:
        message = f"{verb}d"
    _console().print(f"{model} in {environment}: {message}")


@rollout_app.command()
def promote(model: ModelArg, environment: EnvArg, repo: RepoOpt = Path("."), kubeconfig: KubeconfigOpt = None,
            context: ContextOpt = None) -> None:
    """Promote the canary now, skipping the remaining steps."""
    _command(model, environment, repo, kubeconfig, context, "promote")


@rollout_app.command()
def abort(model: ModelArg, environment: EnvArg, repo: RepoOpt = Path("."), kubeconfig: KubeconfigOpt = None,
          context: ContextOpt = None) -> None:
    """Abort the canary: all traffic back to stable, canary removed."""
    _command(model, environment, repo, kubeconfig, context, "abort")


@rollout_app.command()
def pause(model: ModelArg, environment: EnvArg, repo: RepoOpt = Path("."), kubeconfig: KubeconfigOpt = None,
          context: ContextOpt = None) -> None:
    """Freeze the canary at its current weight (no analysis, no deadline)."""
    _command(model, environment, repo, kubeconfig, context, "pause")


@rollout_app.command()
def resume(model: ModelArg, environment: EnvArg, repo: RepoOpt = Path("."), kubeconfig: KubeconfigOpt = None,
           context: ContextOpt = None) -> None:
    """Resume a paused canary."""
    _command(model, environment, repo, kubeconfig, context, "resume")


def _fmt(metrics: dict[str, Any] | None) -> str:
    if not metrics:
        return "no data"
    parts = []
    err, p95, cost = metrics.get("error_rate"), metrics.get("p95_ms"), metrics.get("cost_per_1000")
    parts.append("err n/a" if err is None else f"err {err:.2%}")
    parts.append("p95 n/a" if p95 is None else f"p95 {p95:.0f}ms")
    if cost is not None:
        parts.append(f"${cost:.4f}/1k")
    return " ".join(parts)


def print_report(state: RolloutState, console: Any) -> None:
    data = report_json(state)
    status = data["phase"] + (f" (paused: {state.pause_reason or 'by a user'})" if state.paused else "") + (
        f", {state.requested} requested" if state.requested else "")
    achieved = "" if state.achieved_weight is None or state.achieved_weight == state.canary_weight else \
        f", {state.achieved_weight:.0f}% achieved"
    console.print(line(styled(state.model, "bold"), " in ", styled(state.environment, "bold"), f": {status}; "
                  f"canary {state.canary_revision or '-'} at {state.canary_weight}%{achieved} "
                  f"(step {data['step']}/{len(state.policy.steps)}), stable {state.stable_revision or '-'}; "
                  f"failed checks {state.failed_checks}/{state.policy.failure_threshold}, inconclusive "
                  f"{state.inconclusive_checks}/{state.policy.inconclusive_limit}"))
    if state.cross_pool:
        console.print(f"across pools: stable on {state.stable_pool}, canary on {state.canary_pool}")
    if data["guard"]["summary"]:
        console.print(f"last judgement: {data['guard']['summary']}")
    table = Table(show_lines=False)
    for column in ("at", "decision", "weights s/c", "achieved", "stable", "canary", "why"):
        table.add_column(column, overflow="fold")
    for row in data["history"]:
        got = row.get("achieved_weight")
        table.add_row(row["at"], row["decision"], f"{row['stable_weight']}/{row['canary_weight']}",
                      "" if got is None else f"{got:.0f}%",
                      _fmt(row["stable"]), _fmt(row["canary"]), "; ".join(row["reasons"]))
    console.print(table)
    if state.outcome:
        console.print(f"outcome: {state.outcome}")
