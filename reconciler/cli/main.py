"""The `reconciler` command line: the root command and the table of every command.

A command is one module under reconciler/cli/ and one line in COMMANDS: its name, where it lives
(`module:function` for a command, `module:app` for a typer group) and the one-line summary `--help`
lists. The module is imported only when its command runs (or its own --help is asked for), so
`reconciler --help` imports typer and this file, and `reconciler plan` imports what plan uses and
nothing of build, BentoML, DVC, Hera or matplotlib (tests/test_cli_imports.py checks the set of
modules each command imports; tests/test_cli_help.py checks each summary is its command's own).
This is click's lazy group ("LazyGroup" in click's documentation), on typer's group class.
"""

from __future__ import annotations

import importlib
from difflib import get_close_matches
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

# Help is click's plain formatter: paragraphs are re-wrapped to the terminal's width, not the source's
# line breaks, and help text is never parsed as rich markup ("[dry run]" stays).
HELP: dict[str, Any] = {"rich_markup_mode": None, "context_settings": {"max_content_width": 1000}}


@dataclass(frozen=True)
class Entry:
    """One registered command: `target` is "module:attribute", a function (a command) or a typer.Typer (a group)."""

    target: str
    summary: str


COMMANDS: dict[str, Entry] = {
    "render": Entry("reconciler.cli.render:render", "Print the rendered, validated manifests of one environment."),
    "plan": Entry("reconciler.cli.plan:plan",
                  "Show, per environment, which models change between two revisions and the manifest diff."),
    "hydrate": Entry("reconciler.cli.hydrate:hydrate",
                     "Write rendered manifests for Argo CD or Flux to sync from (no cluster needed)."),
    "build": Entry("reconciler.cli.build:build",
                   "Build only what changed: fetch DVC artifacts, build a Bento per pool kind tagged with its image tag (the "
                   "content hash and what the kind's build adds), and build + push its image where a container engine (or "
                   "ARGO_SERVER) is available."),
    "sync": Entry("reconciler.cli.sync:sync_command",
                  "Apply the current commit of the repository to one environment's cluster (server-side apply, "
                  "prune, health)."),
    "run": Entry("reconciler.cli.run:run_command",
                 "Run the reconciler: follow a git branch and keep the environments in sync (leader-elected)."),
    "quickstart": Entry("reconciler.cli.quickstart:quickstart",
                        "Train, track with DVC, build, plan and hydrate the example models: the main job on a laptop."),
    "status": Entry("reconciler.cli.operate:status_command",
                    "Per environment and model: deployed commit, synced or out of sync, drift (and which fields), "
                    "health, canary; the source revision as the remote has it, the sync policy, a suspension, and "
                    "every object's sync and health."),
    "diff": Entry("reconciler.cli.operate:diff_command",
                  "Field-level diff of what git renders against the live cluster, from a server-side dry run."),
    "history": Entry("reconciler.cli.operate:history_command",
                     "The environment's syncs and rollbacks, newest last (ids for `rollback --to`)."),
    "rollback": Entry("reconciler.cli.operate:rollback_command",
                      "Sync an older commit and pause auto-sync of the environment until a newer commit arrives."),
    "reconcile": Entry("reconciler.cli.operate:reconcile_command",
                       "Ask the in-cluster `reconciler run` to fetch and reconcile ENV now (as `flux reconcile "
                       "--with-source`)."),
    "suspend": Entry("reconciler.cli.suspend:suspend_command",
                     "Stop `reconciler run` (and `sync`) from changing ENV until `reconciler resume ENV` "
                     "(as `flux suspend`)."),
    "resume": Entry("reconciler.cli.suspend:resume_command",
                    "Let `reconciler run` reconcile ENV again (as `flux resume`); its next pass catches up."),
    "events": Entry("reconciler.cli.suspend:events_command",
                    "What the reconciler did to ENV and what the cluster did with its objects, newest first "
                    "(as `flux events`)."),
    "pipeline": Entry("reconciler.cli.pipeline:cli",
                      "Run the training pipeline locally, or render/submit pipelines as Argo Workflows."),
    "rollout": Entry("reconciler.cli.rollout:rollout_app",
                     "Canary rollouts: show, promote, abort, pause or resume a model's rollout."),
    "model": Entry("reconciler.cli.model:model_app", "Add models to the repository."),
}


# click's UsageError, which typer vendors without a public name (typer.BadParameter derives from it)
UsageError: type[Exception] = typer.BadParameter.__mro__[1]


def load_command(name: str, entry: Entry) -> TyperCommand | TyperGroup:
    """Import the command's module and build its click command (a group for a typer.Typer)."""
    module, _, attribute = entry.target.partition(":")
    target = getattr(importlib.import_module(module), attribute)
    command: TyperCommand | TyperGroup
    if isinstance(target, typer.Typer):
        command = typer.main.get_group(target)
    else:
        holder = typer.Typer(**HELP)
        holder.command(name)(target)
        built = typer.main.get_command(holder)
        assert isinstance(built, TyperCommand)
        command = built
    command.name = name
    return command


class LazyCommands(TyperGroup):
    """typer's group, with the commands of COMMANDS imported on first use."""

    def list_commands(self, ctx: Any) -> list[str]:
        return [*COMMANDS, *(name for name in self.commands if name not in COMMANDS)]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            self.commands[cmd_name] = load_command(cmd_name, COMMANDS[cmd_name])
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        # the listing reads the summaries of COMMANDS: no command module is imported for `--help`
        listed = {name: self.commands.get(name) or TyperCommand(name, help=COMMANDS[name].summary)
                  for name in self.list_commands(ctx)}
        saved, self.commands = self.commands, listed
        try:
            super().format_commands(ctx, formatter)
        finally:
            self.commands = saved

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        # typer's "Did you mean ...?" looks at the loaded commands only: suggest from every registered name
        try:
            return super().resolve_command(ctx, args)
        except UsageError as exc:
            matches = get_close_matches(args[0], self.list_commands(ctx)) if args else []
            message = str(getattr(exc, "message", ""))
            if matches and "Did you mean" not in message:
                exc.message = message.rstrip(".") + ". Did you mean " + ", ".join(map(repr, matches)) + "?"  # type: ignore[attr-defined]
            raise


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415 - only for --version

        try:
            shown = version("model-gitops-reconciler")
        except PackageNotFoundError:  # running from a checkout that was never installed
            shown = "unknown (not installed)"
        typer.echo(f"reconciler {shown}")
        raise typer.Exit()


app = typer.Typer(
    name="reconciler",
    cls=LazyCommands,
    help="GitOps reconciler for ML models: validate, plan, build, render and roll out models to Kubernetes.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish, PowerShell
    **HELP,
)


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", "-V", callback=_version, is_eager=True,
                                          help="print the reconciler's version and exit")] = False,
) -> None:
    """GitOps reconciler for ML models: validate, plan, build, render and roll out models to Kubernetes."""
