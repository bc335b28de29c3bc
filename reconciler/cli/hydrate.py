"""`reconciler hydrate`: write rendered manifests to folders or rendered/<env> branches."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from reconciler.cli.console import err as console, line, out, print_model_errors, styled
from reconciler.cli.exits import ExitCode, outcome
from reconciler.cli.options import RepoOption, fail
from reconciler.errors import ReconcilerError
from reconciler.plan.desired import desired_at
from reconciler.render import hydrate as hydration
from reconciler.render.cache import RenderCache, default_folder


def hydrate(
    out_dir: Annotated[Path | None, typer.Option("--out", help="write <out>/<env>/manifest.yaml (e.g. --out hydrated)")] = None,
    branch_prefix: Annotated[str | None, typer.Option(help="commit each environment to branch <prefix><env>")] = None,
    layout: Annotated[str, typer.Option(
        help="plain: manifest.yaml + hydrator.metadata per environment (Argo CD source hydrator layout); "
             "kustomize: a file per model and a kustomization.yaml")] = "plain",
    rev: Annotated[str | None, typer.Option(help="revision to render (default: HEAD for branches, the working tree for --out)")] = None,
    environment: Annotated[list[str] | None, typer.Option("--env", "-e", help="only this environment (repeatable; default: all)")] = None,
    repo: RepoOption = Path("."),
) -> None:
    """Write rendered manifests for Argo CD or Flux to sync from (no cluster needed).

    An environment with any invalid model is not written at all: nothing of an environment is
    published until all of it validated. docs/hydrated-output.md shows the Argo CD Application and
    Flux Kustomization that read a rendered/<env> branch, and what that path does not do.
    """
    if (out_dir is None) == (branch_prefix is None):
        raise fail(ReconcilerError("give exactly one of --out DIR or --branch-prefix PREFIX",
                                   fix="e.g. `reconciler hydrate --out hydrated` or `--branch-prefix rendered/`"),
                   ExitCode.USAGE)
    if layout not in hydration.LAYOUTS:
        raise fail(ReconcilerError(f"unknown --layout {layout!r}", fix="use --layout plain or --layout kustomize"),
                   ExitCode.USAGE)
    if branch_prefix is not None and rev is None:
        rev = "HEAD"
    try:
        # the render cache: what the merge's hydrate renders, a later plan of a pull request reuses
        state = desired_at(repo, rev, environment or None, cache=RenderCache(default_folder()))
        ready = {}
        for env, render_result in state.renders.items():
            if render_result.errors:
                print_model_errors(dict[str, object](render_result.errors), env)
                console.print(styled(f"{env}: not written, {len(render_result.errors)} model(s) have errors", "yellow"))
            else:
                ready[env] = render_result
        for env, err in state.env_errors.items():
            console.print(line(styled(f"✗ environment {env}", "bold red"), f":\n{err}"))
        if out_dir is not None:
            results = hydration.hydrate_folder(ready, out_dir, state.revision, layout)
        else:
            assert branch_prefix is not None  # exactly one of --out and --branch-prefix (checked above)
            results = hydration.hydrate_branches(ready, repo, state.revision, branch_prefix, layout)
    except ReconcilerError as exc:
        raise fail(exc) from None
    for r in results:
        note = f" (commit {r.committed[:12]})" if r.committed else (" (unchanged)" if branch_prefix else "")
        out.print(line(styled("✓", "green"), f" {r.environment}: {r.files} model(s) -> {r.target}{note}"))
    raise typer.Exit(outcome(done=len(results), failed=len(state.renders) + len(state.env_errors) - len(results)))
