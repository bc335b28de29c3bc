"""The command line's help: every command and option explains itself, text is wrapped by the terminal
(not the source's line breaks) and never parsed as markup, --version and shell completion exist, and
the same short flags mean the same thing in every command."""

from __future__ import annotations

import inspect
import re
from importlib.metadata import version

import typer.main
from typer.testing import CliRunner

from reconciler.cli import app
from reconciler.cli.main import COMMANDS

SHORT_FLAGS = {"-e": "--env", "-m": "--model", "-f": "--format", "-o": "--output", "-V": "--version"}


def _commands(command, path: tuple[str, ...] = ()):
    yield path, command
    if hasattr(command, "list_commands"):  # a group: the root's commands are loaded on first use
        ctx = command.make_context("reconciler", ["--help"], resilient_parsing=True)
        for name in command.list_commands(ctx):
            yield from _commands(command.get_command(ctx, name), (*path, name))


def test_every_command_and_option_has_help_and_short_flags_agree():
    missing, clashes = [], []
    for path, command in _commands(typer.main.get_command(app)):
        if path and not (command.help or "").strip():
            missing.append(" ".join(path))
        for param in command.params:
            if param.name == "help":
                continue
            if not (getattr(param, "help", None) or "").strip():
                missing.append(f"{' '.join(path) or 'reconciler'} {param.opts[0]}")
            for flag in param.opts:
                if flag in SHORT_FLAGS and SHORT_FLAGS[flag] not in param.opts:
                    clashes.append(f"{' '.join(path)}: {flag} is {param.opts}, elsewhere {SHORT_FLAGS[flag]}")
    assert not missing, "no help text: " + ", ".join(missing)
    assert not clashes, "; ".join(clashes)


def test_every_registered_command_loads_and_the_listing_shows_its_own_summary():
    root = typer.main.get_command(app)
    ctx = root.make_context("reconciler", ["--help"], resilient_parsing=True)
    assert list(COMMANDS) == root.list_commands(ctx)
    for name, entry in COMMANDS.items():
        command = root.get_command(ctx, name)
        assert command is not None and command.name == name
        first_paragraph = " ".join(inspect.cleandoc(command.help or "").split("\n\n")[0].split())
        assert entry.summary == first_paragraph, f"{name}: COMMANDS says {entry.summary!r}, the command {first_paragraph!r}"
    listed = CliRunner().invoke(app, ["--help"], terminal_width=400, env={"COLUMNS": "400"}).output
    for name, entry in COMMANDS.items():
        assert re.search(rf"^  {name} +{re.escape(entry.summary)}$", listed, re.MULTILINE), name


def test_a_mistyped_command_is_answered_with_the_registered_names():
    result = CliRunner().invoke(app, ["rolout"])
    assert result.exit_code == 2 and "Did you mean 'rollout'?" in result.output


def test_help_is_wrapped_by_the_terminal_and_never_parsed_as_markup():
    wide = CliRunner().invoke(app, ["hydrate", "--help"], terminal_width=200, env={"COLUMNS": "200"})
    assert wide.exit_code == 0
    # the docstring breaks this sentence after "is"; the help joins it again and wraps where the terminal ends
    assert "nothing of an environment is published until all of it validated." in wide.output
    narrow = CliRunner().invoke(app, ["sync", "--help"], terminal_width=60, env={"COLUMNS": "60"})
    assert max(len(line) for line in narrow.output.splitlines()) <= 60
    assert "<bool>" not in narrow.output
    plan = CliRunner().invoke(app, ["plan", "--help"], terminal_width=200, env={"COLUMNS": "200"}).output
    assert "[default: HEAD]" in plan  # printed as written: help is not rich markup


def test_version_and_shell_completion():
    shown = CliRunner().invoke(app, ["--version"])
    assert shown.exit_code == 0 and shown.output.strip() == f"reconciler {version('model-gitops-reconciler')}"
    assert CliRunner().invoke(app, ["-V"]).output == shown.output
    top = CliRunner().invoke(app, ["--help"]).output
    assert "--install-completion" in top and "--show-completion" in top
