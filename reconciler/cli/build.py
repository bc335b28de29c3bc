"""`reconciler build`: the command and its live progress table (the logic is reconciler.build.builder)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.live import Live
from rich.table import Table

from reconciler.build.builder import NO_IMAGE_BACKEND, STEPS, BuildOptions, build_models
from reconciler.catalog.load import load_catalog
from reconciler.cli.console import err as console, line, out, styled
from reconciler.cli.exits import outcome
from reconciler.cli.options import ModelsOption, RepoOption, fail
from reconciler.errors import ReconcilerError
from reconciler.extras import require


_MARKS = {"running": ("…", "yellow"), "done": ("✓", "green"), "skipped": ("–", "dim"), "failed": ("✗", "bold red")}


def build_command(
    model: list[str] | None = None,
    env: str | None = None,
    registry: str | None = None,
    repo: Path = Path("."),
    bentoml_home_dir: Path | None = None,
    output: str = "text",
) -> None:
    """Build what changed: a Bento (and an image) per model whose content hash has none yet."""
    try:
        require("build")
        if env and not registry:
            registry = load_catalog(Path(repo).resolve(), only=set()).environment(env).registry
        options = BuildOptions(home=bentoml_home_dir, registry=registry, environment=env)
        state: dict[str, dict[str, str]] = {}

        def table() -> Table:
            t = Table("model", *STEPS, box=None, pad_edge=False)
            for name in sorted(state):
                t.add_row(name, *(styled(*_MARKS.get(state[name].get(s, ""), ("", ""))) for s in STEPS))
            return t

        with Live(table(), console=console, transient=False, auto_refresh=False,
                  redirect_stdout=False, redirect_stderr=False) as live:
            def progress(name: str, step: str, status: str) -> None:
                state.setdefault(name, {})[step] = status
                live.update(table(), refresh=True)

            report = build_models(Path(repo), model or None, options, progress)
        if not console.is_terminal:
            console.print()  # Live leaves its last frame without a line break when not on a terminal
    except ReconcilerError as exc:
        raise fail(exc) from None
    if output == "json":
        sys.stdout.write(json.dumps(report.as_dict(), indent=2) + "\n")
    else:
        no_backend = False
        for name in sorted(report.results):
            r = report.results[name]
            message = r.message
            if NO_IMAGE_BACKEND in message:  # said once, below
                no_backend, message = True, message.replace(NO_IMAGE_BACKEND, "image not built (see below)")
            colour = {"created": "green", "unchanged": "dim", "failed": "bold red"}.get(r.action.value, "")
            out.print(line(styled(f"{r.action.value:9}", colour), f" {name}"
                           + (f" {r.hash[:12]}" if r.hash else "") + (f": {message}" if message else "")))
            if r.error is not None:
                out.print("  " + str(r.error).replace("\n", "\n  "))
        if no_backend:
            out.print(NO_IMAGE_BACKEND[0].upper() + NO_IMAGE_BACKEND[1:] + ".")
        out.print(f"build: {report.summary}")
    failed = sum(1 for r in report.results.values() if r.error is not None or r.action.value == "failed")
    raise typer.Exit(outcome(done=len(report.results) - failed, failed=failed))


def build(
    model: ModelsOption = None,
    env: Annotated[str | None, typer.Option("--env", "-e", help="build images for this environment's registry")] = None,
    registry: Annotated[str | None, typer.Option(help="image registry prefix (default: the environment's)")] = None,
    repo: RepoOption = Path("."),
    bentoml_home: Annotated[Path | None, typer.Option("--bentoml-home", envvar="BENTOML_HOME",
                                                      help="the Bento store (default: ~/bentoml)")] = None,
    output: Annotated[str, typer.Option("--output", "-o", help="text or json")] = "text",
) -> None:
    """Build only what changed: fetch DVC artifacts, build a Bento per pool kind tagged with its image tag (the
    content hash and what the kind's build adds), and build + push its image where a container engine (or
    ARGO_SERVER) is available."""
    build_command(model, env, registry, repo, bentoml_home, output)
