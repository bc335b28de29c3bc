"""`reconciler render ENV`: print an environment's rendered, validated manifests."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from reconciler.cli.console import print_model_errors
from reconciler.cli.exits import outcome
from reconciler.cli.options import EnvironmentArgument, ModelsOption, RepoOption, fail
from reconciler.catalog.load import unknown_model_fix
from reconciler.errors import ReconcilerError
from reconciler.desired.state import desired_at
from reconciler.render.secrets import check_decryption


def render(
    environment: EnvironmentArgument,
    model: ModelsOption = None,
    rev: Annotated[str | None, typer.Option(help="git revision to render (default: the working tree)")] = None,
    repo: RepoOption = Path("."),
) -> None:
    """Print the rendered, validated manifests of one environment."""
    try:
        state = desired_at(repo, rev, [environment], set(model) if model else None, review=False)
    except ReconcilerError as exc:
        raise fail(exc) from None
    if environment in state.env_errors:
        raise fail(state.env_errors[environment])
    result = state.renders[environment]
    if model:
        unknown = set(model) - set(result.models) - set(result.errors)
        for name in sorted(unknown):
            result.errors[name] = ReconcilerError(f"no model named {name!r} in models/",
                                                  fix=unknown_model_fix(repo, name))
    # SOPS Secrets: printed encrypted, as committed (what hydrate writes); decrypted in memory only to
    # prove the environment's key opens them (a model whose key is missing or wrong fails closed)
    for name, refused in check_decryption(result).items():
        result.models.pop(name, None)
        result.errors[name] = refused
    sys.stdout.write(result.to_yaml())
    for name in sorted(result.models):
        for sealed in result.models[name].secrets:
            sys.stdout.write(sealed.text if sealed.text.startswith("---") else "---\n" + sealed.text)
    print_model_errors(dict[str, object](result.errors), environment)
    raise typer.Exit(outcome(done=len(result.models), failed=len(result.errors)))
