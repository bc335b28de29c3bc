"""The `reconciler` command line: render, plan, hydrate, build, sync, run, rollout.

Commands import their heavy dependencies (hera, bentoml, dvc, kubernetes) inside the command
function, so `reconciler --help` and `reconciler plan` stay fast.
"""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from reconciler.cli.console import err as console, line, out, print_error, print_model_errors, styled
from reconciler.cli.exits import ExitCode, outcome
from reconciler.errors import ReconcilerError

# Help is click's plain formatter (HELP_SETTINGS): paragraphs are re-wrapped to the terminal's width,
# not the source's line breaks, and help text is never parsed as rich markup ("[dry run]" stays).
HELP = {"rich_markup_mode": None, "context_settings": {"max_content_width": 1000}}


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            shown = version("model-gitops-reconciler")
        except PackageNotFoundError:  # running from a checkout that was never installed
            shown = "unknown (not installed)"
        typer.echo(f"reconciler {shown}")
        raise typer.Exit()


app = typer.Typer(
    name="reconciler",
    help="GitOps reconciler for ML models: validate, plan, build, render and roll out models to Kubernetes.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish, PowerShell
    **HELP,  # type: ignore[arg-type]
)


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", "-V", callback=_version, is_eager=True,
                                          help="print the reconciler's version and exit")] = False,
) -> None:
    """GitOps reconciler for ML models: validate, plan, build, render and roll out models to Kubernetes."""

RepoOption = Annotated[Path, typer.Option("--repo", help="the model repository (default: the current folder)")]


class PlanFormat(str, Enum):
    text = "text"
    markdown = "markdown"
    json = "json"


def fail(exc: ReconcilerError, code: int = 1) -> typer.Exit:
    print_error(exc)
    return typer.Exit(code)


def report_model_errors(errors: dict[str, object], where: str) -> None:
    print_model_errors(errors, where)


@app.command()
def render(
    environment: Annotated[str, typer.Argument(help="environment name, e.g. dev")],
    model: Annotated[list[str] | None, typer.Option("--model", "-m", help="only this model (repeatable)")] = None,
    rev: Annotated[str | None, typer.Option(help="git revision to render (default: the working tree)")] = None,
    repo: RepoOption = Path("."),
) -> None:
    """Print the rendered, validated manifests of one environment."""
    from reconciler.plan.desired import desired_at

    try:
        state = desired_at(repo, rev, [environment], set(model) if model else None)
    except ReconcilerError as exc:
        raise fail(exc) from None
    if environment in state.env_errors:
        raise fail(state.env_errors[environment])
    result = state.renders[environment]
    if model:
        unknown = set(model) - set(result.models) - set(result.errors)
        for name in sorted(unknown):
            result.errors[name] = ReconcilerError(f"no model named {name!r} in models/",
                                                  fix="check the name against the folders under models/")
    # SOPS Secrets: printed encrypted, as committed (what hydrate writes); decrypted in memory only to
    # prove the environment's key opens them (a model whose key is missing or wrong fails closed)
    from reconciler.render.secrets import check_decryption

    for name, refused in check_decryption(result).items():
        result.models.pop(name, None)
        result.errors[name] = refused
    sys.stdout.write(result.to_yaml())
    for name in sorted(result.models):
        for sealed in result.models[name].secrets:
            sys.stdout.write(sealed.text if sealed.text.startswith("---") else "---\n" + sealed.text)
    report_model_errors(result.errors, environment)
    raise typer.Exit(outcome(done=len(result.models), failed=len(result.errors)))


@app.command()
def plan(
    base: Annotated[str, typer.Option(help="the revision changes are measured from; 'empty' for a first deployment")] = "HEAD",
    head: Annotated[str | None, typer.Option(help="the revision to plan (default: the working tree)")] = None,
    environment: Annotated[list[str] | None, typer.Option("--env", "-e", help="only this environment (repeatable)")] = None,
    fmt: Annotated[PlanFormat, typer.Option("--format", "-f", help="text (a terminal), markdown (a PR comment) or json")] = PlanFormat.text,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="write the plan to a file too")] = None,
    artifact: Annotated[Path | None, typer.Option(
        help="write the complete plan (plan.md with every diff, plan.json) into this folder, e.g. for a CI artifact")] = None,
    diffs: Annotated[bool, typer.Option(help="show manifest diffs in text output")] = True,
    full: Annotated[bool, typer.Option(
        help="render every model at both revisions, without the render cache (slow; the incremental plan is "
             "tested to be identical)")] = False,
    check_artifacts: Annotated[bool, typer.Option(help="check that changed models' DVC-tracked weights are in the DVC remote (existence only, nothing is downloaded)")] = True,
    repo: RepoOption = Path("."),
) -> None:
    """Show, per environment, which models change between two revisions and the manifest diff.

    The markdown format is a PR comment: capped at GitHub's 65,536 characters (largest diffs left
    out first, saying so); --artifact keeps the complete plan beside it.
    """
    from reconciler.plan.desired import plan_revisions
    from reconciler.cli.plan import print_plan
    from reconciler.report.plan import plan_json, plan_markdown

    try:
        result = plan_revisions(repo, base, head, environment or None, full=full, check_artifacts=check_artifacts)
    except ReconcilerError as exc:
        raise fail(exc) from None
    for note in result.notes:
        console.print(f"note: {note}")
    if fmt is PlanFormat.text:
        print_plan(result, out, diffs=diffs)
        text = None
    else:
        text = plan_markdown(result) if fmt is PlanFormat.markdown else plan_json(result)
        sys.stdout.write(text)
    if output is not None:
        output.write_text(text if text is not None else plan_json(result), encoding="utf-8")
    if artifact is not None:
        artifact.mkdir(parents=True, exist_ok=True)
        (artifact / "plan.md").write_text(plan_markdown(result, limit=sys.maxsize, max_diff_lines=sys.maxsize),
                                          encoding="utf-8")
        (artifact / "plan.json").write_text(plan_json(result), encoding="utf-8")
    envs = result.environments.values()
    raise typer.Exit(outcome(done=sum(1 for e in envs if not e.error),
                             failed=sum(1 for e in envs if e.error) + sum(1 for e in envs for m in e.models.values()
                                                                          if m.error)))


@app.command()
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
    from reconciler.render import hydrate as hydration
    from reconciler.plan.desired import desired_at

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
        from reconciler.render.cache import RenderCache, default_folder

        # the render cache: what the merge's hydrate renders, a later plan of a pull request reuses
        state = desired_at(repo, rev, environment or None, cache=RenderCache(default_folder()))
        ready = {}
        for env, render_result in state.renders.items():
            if render_result.errors:
                report_model_errors(render_result.errors, env)
                console.print(styled(f"{env}: not written, {len(render_result.errors)} model(s) have errors", "yellow"))
            else:
                ready[env] = render_result
        for env, err in state.env_errors.items():
            console.print(line(styled(f"✗ environment {env}", "bold red"), f":\n{err}"))
        if out_dir is not None:
            results = hydration.hydrate_folder(ready, out_dir, state.revision, layout)
        else:
            results = hydration.hydrate_branches(ready, repo, state.revision, branch_prefix, layout)
    except ReconcilerError as exc:
        raise fail(exc) from None
    for r in results:
        note = f" (commit {r.committed[:12]})" if r.committed else (" (unchanged)" if branch_prefix else "")
        out.print(line(styled("✓", "green"), f" {r.environment}: {r.files} model(s) -> {r.target}{note}"))
    raise typer.Exit(outcome(done=len(results), failed=len(state.renders) + len(state.env_errors) - len(results)))


# Command groups, one module each under reconciler/cli/ (keep imports light: the modules import
# heavy libraries inside their command functions).
from reconciler.cli.pipeline import cli as pipeline_cli  # noqa: E402
app.add_typer(pipeline_cli, name="pipeline")
from reconciler.cli.build import register as register_build  # noqa: E402
register_build(app)
from reconciler.cli.rollout import rollout_app  # noqa: E402
app.add_typer(rollout_app, name="rollout")
from reconciler.cli.sync import sync_command  # noqa: E402
from reconciler.cli.run import run_command  # noqa: E402
app.command("sync")(sync_command); app.command("run")(run_command)  # noqa: E702
from reconciler.cli.quickstart import quickstart  # noqa: E402
app.command("quickstart")(quickstart)
from reconciler.cli.model import model_app  # noqa: E402
app.add_typer(model_app, name="model")
from reconciler.cli.operate import register as register_operate  # noqa: E402
register_operate(app)
