"""`reconciler quickstart`: the main job, end to end, on this repository, with nothing but a laptop.

train (the same step functions the Argo pipeline runs) -> DVC add + push to the local remote ->
build Bentos for models whose content hash has none -> plan a first deployment -> hydrate the
manifests of every environment. Each stage is the same code a pull request, a merge or the
long-running reconciler uses; only the cluster is left out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from reconciler.build.builder import BuildOptions, build_models
from reconciler.build.pipeline_runner import run_train
from reconciler.cli.console import line, out as console, styled, title
from reconciler.cli.options import RepoOption, fail
from reconciler.cli.plan import print_plan
from reconciler.errors import ReconcilerError
from reconciler.extras import require
from reconciler.desired.state import desired_at
from reconciler.plan.revisions import EMPTY, plan_revisions
from reconciler.render import hydrate as hydration
from reconciler.source import git as source


def _stage(name: str) -> None:
    console.rule(title(name, "bold"))


def quickstart(
    repo: RepoOption = Path("."),
    out: Annotated[Path, typer.Option(help="where the hydrated manifests go")] = Path("hydrated"),
    train: Annotated[bool, typer.Option("--train/--no-train", help="train the example models first")] = True,
    build: Annotated[bool, typer.Option("--build/--no-build", help="build Bentos for changed models")] = True,
) -> None:
    """Train, track with DVC, build, plan and hydrate the example models: the main job on a laptop."""
    try:
        require("build", "examples")
        root = source.toplevel(repo)
        if train:
            _stage("1. train -> evaluate -> register (DVC add + push to the local remote)")
            for run in run_train(root, push=True, on_step=lambda s: console.print(
                    f"  {s.model:<20} {s.step:<9} {s.seconds:5.1f}s  {s.detail}")):
                metrics = ", ".join(f"{k}={v:.3f}" for k, v in run.metrics.items() if isinstance(v, float))
                console.print(line("  ", styled("✓", "green"), f" {run.model}: {metrics}"))
        if build:
            _stage("2. build Bentos (only models whose content hash has no build yet)")
            report = build_models(root, options=BuildOptions(engine=None, argo=False))
            for name, result in sorted(report.results.items()):
                style = "red" if result.error else "green"
                tag = f" {result.bento}" if result.bento else ""
                console.print(line("  ", styled(f"{result.action.value:>10}", style), f" {name}{tag}  {result.message}"))
                if result.error:
                    console.print(f"    {result.error}")
            console.print("  images: no container engine or Argo server is used here; on a merge the image "
                          "build runs as an Argo Workflow (`reconciler pipeline render build-image`)")
        _stage("3. plan: what a first deployment of the working tree creates, per environment")
        state = desired_at(root, None)
        plan = plan_revisions(root, EMPTY, None, after=state)
        print_plan(plan, console, diffs=False)
        _stage(f"4. hydrate: rendered manifests for Argo CD / Flux in {out}/")
        ready = {env: r for env, r in state.renders.items() if not r.errors}
        target = out if out.is_absolute() else root / out
        for written in hydration.hydrate_folder(ready, target, state.revision):
            files = ", ".join(sorted(p.name for p in Path(written.target).iterdir()))
            console.print(line("  ", styled("✓", "green"), f" {written.environment}: {written.target}/ ({files})"))
        if not plan.ok or len(ready) != len(state.renders) or state.env_errors:
            console.print(styled("some models or environments have errors (above): they were not hydrated", "bold red"))
            raise typer.Exit(1)
    except ReconcilerError as exc:
        raise fail(exc) from None
    console.print("\nNext: edit a model (e.g. models/digits-classifier/model.yaml) and run `reconciler plan` "
                  "to see what the change does in each environment.")
