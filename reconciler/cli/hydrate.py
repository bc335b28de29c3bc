"""`reconciler hydrate`: write rendered manifests to folders or rendered/<env> branches."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from reconciler.cli.console import err as console, line, out, print_model_errors, styled
from reconciler.cli.exits import ExitCode, outcome
from reconciler.cli.options import RepoOption, fail
from reconciler.errors import ReconcilerError
from reconciler.desired.state import desired_at
from reconciler.plan.hydration import hydrate_branches
from reconciler.render import hydrate as hydration
from reconciler.render.cache import RenderCache, default_folder


def hydrate(
    out_dir: Annotated[Path | None, typer.Option("--out", help="write <out>/<env>/ (e.g. --out hydrated)")] = None,
    branch_prefix: Annotated[str | None, typer.Option(help="commit each environment to branch <prefix><env>")] = None,
    layout: Annotated[str, typer.Option(
        help="plain: a folder per environment (manifest.yaml, <model>.model.yaml, hydrator.metadata), read as a "
             "directory by Argo CD and Flux; kustomize: the same plus a kustomization.yaml")] = "plain",
    rev: Annotated[str | None, typer.Option(help="revision to render (default: HEAD for branches, the working tree for --out)")] = None,
    environment: Annotated[list[str] | None, typer.Option("--env", "-e", help="only this environment (repeatable; default: all)")] = None,
    full: Annotated[bool, typer.Option("--full", help="with --branch-prefix: render every model, not only those "
                                       "changed since the branch's source commit")] = False,
    repo: RepoOption = Path("."),
) -> None:
    """Write rendered manifests for Argo CD or Flux to sync from (no cluster needed).

    With --branch-prefix, an environment whose branch this reconciler wrote renders only the models that
    changed since the branch's source commit; the others keep their files (docs/hydrated-output.md).

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
        cache = RenderCache(default_folder())
        if branch_prefix is not None:
            done = hydrate_branches(repo, rev or "HEAD", environment or None, prefix=branch_prefix, layout=layout,
                                    cache=cache, full=full)
            model_errors, env_errors, results = done.model_errors, done.env_errors, done.results
            attempted, scope = len(done.scope) + len(env_errors), done.scope
        else:
            assert out_dir is not None  # exactly one of --out and --branch-prefix (checked above)
            state = desired_at(repo, rev, environment or None, cache=cache, review=False)
            model_errors = {env: dict(r.errors) for env, r in state.renders.items() if r.errors}
            env_errors = dict(state.env_errors)
            results = hydration.hydrate_folder({e: r for e, r in state.renders.items() if not r.errors}, out_dir,
                                               state.revision, layout)
            attempted, scope = len(state.renders) + len(env_errors), {}
        for env, errors in sorted(model_errors.items()):
            print_model_errors(dict[str, object](errors), env)
            console.print(styled(f"{env}: not written, {len(errors)} model(s) have errors", "yellow"))
        for env, err in env_errors.items():
            console.print(line(styled(f"✗ environment {env}", "bold red"), f":\n{err}"))
    except ReconcilerError as exc:
        raise fail(exc) from None
    for r in results:
        note = f" (commit {r.committed[:12]})" if r.committed else (" (unchanged)" if branch_prefix else "")
        rendered = f"rendered {scope[r.environment]}" if r.environment in scope else f"{r.files} model(s)"
        out.print(line(styled("✓", "green"), f" {r.environment}: {rendered} -> {r.target}{note}"))
    raise typer.Exit(outcome(done=len(results), failed=attempted - len(results)))
