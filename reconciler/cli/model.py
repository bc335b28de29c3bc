"""`reconciler model new NAME [--from EXISTING]`: scaffold a model folder (see reconciler.catalog.scaffold)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from reconciler.catalog.scaffold import new_model
from reconciler.cli.options import RepoOption, fail
from reconciler.errors import ReconcilerError

model_app = typer.Typer(name="model", no_args_is_help=True, help="Add models to the repository.",
                        rich_markup_mode=None)


@model_app.command("new")
def new_command(
    name: Annotated[str, typer.Argument(help="the new model's name (a DNS label, e.g. fraud-detector)")],
    source: Annotated[str | None, typer.Option("--from", help="the model folder to copy (default: iris-classifier)")] = None,
    owner: Annotated[str | None, typer.Option(help="the owner: field of the new model.yaml")] = None,
    description: Annotated[str | None, typer.Option(help="one line on what the new model predicts (default: a placeholder that `plan` reports until it is written)")] = None,
    architecture: Annotated[str | None, typer.Option(help="what its train.py fits, e.g. sklearn-scaler-mlp (default: left out; a model served from Inferentia must declare it)")] = None,
    repo: RepoOption = Path("."),
) -> None:
    """Create models/NAME/ from an existing model, with its name, labels and service class rewritten.

    The source's weights, DVC pointers and metrics are not copied: train the new model with
    `reconciler pipeline run train --model NAME --push`, then commit what it lists.
    """
    try:
        written = new_model(repo, name, source, owner=owner, description=description, architecture=architecture)
    except ReconcilerError as exc:
        raise fail(exc) from None
    for path in written:
        typer.echo(f"created {path}")
    if description is None:
        typer.echo(f"describe it: the description: in models/{name}/model.yaml is a placeholder until you write it")
    typer.echo(f"next: edit models/{name}/train.py (your data and estimator) and service.py, then "
               f"`reconciler pipeline run train --model {name} --push` and `reconciler plan`")
