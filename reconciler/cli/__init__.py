"""The command layer: every typer app and rich printing, one module per command (reconciler/cli/main.py
lists them). Library packages never import it; it may import all of them.

`reconciler.cli:main` is the console script: the typer app, with a missing optional dependency
reported as the extra to install instead of a traceback.
"""

from __future__ import annotations

import sys

import typer

from reconciler.cli.main import app
from reconciler.extras import missing_extra

__all__ = ["app", "main"]


def main() -> None:
    try:
        app()
    except ImportError as exc:
        error = missing_extra(exc)
        if error is None:
            raise
        typer.echo(f"error: {error}", err=True)
        sys.exit(2)
