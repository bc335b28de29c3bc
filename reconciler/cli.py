"""The `reconciler` command line: render, plan, hydrate, build, sync, run, rollout.

Commands import their heavy dependencies (hera, bentoml, dvc, kubernetes) inside the command
function, so `reconciler --help` and `reconciler plan` stay fast.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    name="reconciler",
    help="GitOps reconciler for ML models: validate, plan, build, render and roll out models to Kubernetes.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# Area command modules register themselves here, one line each (keep imports light: the modules
# must import heavy libraries inside their command functions).
