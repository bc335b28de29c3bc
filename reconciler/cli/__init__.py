"""The command layer: every typer app and rich printing, one module per command group.
Library packages never import it; it may import all of them.

`reconciler.cli:app` is the console script entry point."""
from reconciler.cli.main import app

__all__ = ["app"]
