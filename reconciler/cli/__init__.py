"""The command layer: every typer app and rich printing, one module per command group.
Library packages never import it; it may import all of them.

`reconciler.cli:main` is the console script: the typer app, with a missing optional dependency
reported as the extra to install instead of a traceback.
"""

from __future__ import annotations

import sys

from reconciler.cli.main import app

__all__ = ["app", "main"]


def main() -> None:
    from reconciler.extras import missing_extra

    try:
        app()
    except ImportError as exc:
        error = missing_extra(exc)
        if error is None:
            raise
        from reconciler.cli.console import print_error

        print_error(error)
        sys.exit(2)
