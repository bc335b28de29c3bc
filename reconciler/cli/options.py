"""The command line's shared vocabulary: every option two commands share is declared here once, with
one help text, and so is the one way a command fails (`fail`: the error with its fix line, and the
exit code). Connecting to an environment's cluster is reconciler.cli.connect.

A command module takes what it needs:

    from reconciler.cli.options import EnvironmentArgument, RepoOption, fail

    def render(environment: EnvironmentArgument, repo: RepoOption = Path(".")) -> None:
        try:
            ...
        except ReconcilerError as exc:
            raise fail(exc) from None

and is registered with one line in reconciler/cli/main.py (COMMANDS). As in `flux` and `argocd`,
`--repo`, `--kubeconfig`, `--context` and `--state-namespace` mean one thing in every command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from reconciler.cli.exits import ExitCode
from reconciler.errors import ReconcilerError

DEFAULT_STATE_NAMESPACE = "model-gitops"


def absolute_repo(path: Path) -> Path:
    """--repo as an absolute path with symlinks resolved, once, before any command code sees it: a
    relative `.` and a symlinked checkout name the same files in every stage below."""
    return Path(path).expanduser().resolve()


RepoOption = Annotated[Path, typer.Option("--repo", callback=absolute_repo,
                                          help="the model repository (default: the current folder)")]
KubeconfigOption = Annotated[Path | None, typer.Option(
    "--kubeconfig", help="kubeconfig file (default: the environment's cluster.kubeconfig, else $KUBECONFIG or "
                         "~/.kube/config, else the in-cluster ServiceAccount)")]
ContextOption = Annotated[str | None, typer.Option(
    "--context", help="kubeconfig context (default: the environment's cluster.context; any other context is "
                      "refused unless named here)")]
StateNamespaceOption = Annotated[str, typer.Option(
    "--state-namespace", envvar="RECONCILER_STATE_NAMESPACE",
    help="namespace of the reconciler's state and history ConfigMaps (as `run --namespace`)")]
EnvironmentArgument = Annotated[str, typer.Argument(help="environment name, e.g. dev")]
ModelsOption = Annotated[list[str] | None, typer.Option("--model", "-m", help="only this model (repeatable)")]
TraceOption = Annotated[bool, typer.Option(
    "--trace/--no-trace", envvar="RECONCILER_PLAN_TRACE",
    help="run the trace check of models whose compile recipe asks for it (planCheck: trace), which runs the "
         "model's own code; --no-trace (or RECONCILER_PLAN_TRACE=0) runs no model code and says 'not traced'")]


def fail(exc: ReconcilerError, code: int = ExitCode.FAILED) -> typer.Exit:
    """Print `error: <message>` with its fix line (verbatim, never parsed as markup) and return the Exit to
    raise: `raise fail(exc) from None`."""
    # rich (reconciler.cli.console) is imported when an error is printed, not by every command that imports options
    from reconciler.cli.console import print_error  # noqa: PLC0415

    print_error(exc)
    return typer.Exit(int(code))
