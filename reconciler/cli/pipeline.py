"""`reconciler pipeline run|render|submit`: the pipelines on a laptop or as Argo Workflows
(the logic is reconciler.build.pipeline_runner)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
import yaml

from pipelines.common import links_configmap
from pipelines.propose import ProposeError, propose as propose_change
from reconciler.build.argo import ArgoConfig, submit
from reconciler.build.pipeline_runner import StepRun, origin_url, push_note, render_workflow, run_train, serving_kinds
from reconciler.cli.options import ModelsOption, RepoOption, fail
from reconciler.errors import ReconcilerError
from reconciler.extras import require


cli = typer.Typer(name="pipeline", no_args_is_help=True, rich_markup_mode=None,
                  help="Run the training pipeline locally, or render/submit pipelines as Argo Workflows.")


RepoOpt = RepoOption


@cli.command("run")
def run_command(
    name: Annotated[str, typer.Argument(help="the pipeline: train")],
    model: ModelsOption = None,
    register: Annotated[bool, typer.Option(help="dvc add the weights after evaluation")] = True,
    push: Annotated[bool, typer.Option(help="dvc push the weights to the default DVC remote (plan and build elsewhere need them there)")] = False,
    propose: Annotated[bool, typer.Option(help="after a push, commit the new pointer and metrics on a branch "
                                               "train/<model>-<md5> and push it to origin (a PR with GITHUB_TOKEN)")] = False,
    git_credentials: Annotated[Path | None, typer.Option(
        "--git-credentials", help="a folder with the push credentials, as the register pod mounts the environment's "
                                  "pipelines.gitCredentialsSecret: `token` (https) or `ssh-privatekey` + `known_hosts` "
                                  "(default $GITOPS_GIT_CREDENTIALS)")] = None,
    repo: RepoOpt = Path("."),
) -> None:
    """Run a pipeline's steps in this process, in DAG order (no cluster needed)."""
    if name != "train":
        raise fail(ReconcilerError(f"only the train pipeline runs locally, not {name!r}",
                                    fix="image builds need a container engine: `reconciler pipeline submit build-image`"))

    def show(step: StepRun) -> None:
        typer.echo(f"✓ {step.model} {step.step} ({step.seconds:.1f}s): {step.detail}")

    try:
        require("build", "examples")
        runs = run_train(repo, model or None, register=register, push=push or propose, on_step=show)
        if propose:
            for r in runs:
                try:
                    proposal = propose_change(repo, r.model, credentials=git_credentials)
                except ProposeError as exc:
                    raise ReconcilerError(f"{r.model}: proposing the new weights failed: {exc.message}",
                                          fix=exc.fix) from None
                typer.echo(f"proposed {r.model}: branch {proposal.branch} pushed to {proposal.pushed_to}"
                           + (f", pull request {proposal.pull_request}" if proposal.pull_request else ""))
    except ReconcilerError as exc:
        raise fail(exc) from None
    for run in runs:
        shown = {k: v for k, v in run.metrics.items() if k not in ("seed", "model_md5", "test_samples", "dataset")}
        typer.echo(f"{run.model}: " + ", ".join(f"{k} {v}" for k, v in shown.items())
                   + (f" ({run.metrics['test_samples']} held-out samples)" if "test_samples" in run.metrics else ""))
    if register:
        typer.echo("commit: " + " ".join(str(p) for r in runs for p in (
            *(f"models/{r.model}/{o}.dvc" for o in r.outputs), f"models/{r.model}/metrics.json",
            f"models/{r.model}/.gitignore")))
        typer.echo(push_note(Path(repo), push, [r.model for r in runs]))
    else:
        typer.echo("not registered (--no-register): nothing was added to DVC or pushed")



# the options `pipeline render` and `pipeline submit` share
PipelineArg = Annotated[str, typer.Argument(help="train, build-image or neuron-compile")]
ModelOpt = Annotated[str, typer.Option("--model", "-m", help="the model the workflow is for")]
EnvOpt = Annotated[str, typer.Option("--env", "-e", help="the environment whose registry and pools the workflow uses")]
CommitOpt = Annotated[str | None, typer.Option(help="default: HEAD")]
RepoUrlOpt = Annotated[str | None, typer.Option(help="default: the origin remote's URL")]
ModelHashOpt = Annotated[str | None, typer.Option(help="default: the working tree's model hash")]
BentoUrlOpt = Annotated[str | None, typer.Option(help="build-image: where the exported bento is")]
PoolOpt = Annotated[str | None, typer.Option(help="build-image: the pool to build for (default: the first)")]


@cli.command("render")
def render_command(
    name: PipelineArg,
    model: ModelOpt,
    environment: EnvOpt = "dev",
    commit: CommitOpt = None,
    repo_url: RepoUrlOpt = None,
    model_hash: ModelHashOpt = None,
    bento_url: BentoUrlOpt = None,
    pool: PoolOpt = None,
    repo: RepoOpt = Path("."),
) -> None:
    """Print a pipeline's Argo Workflow as YAML (commit it, or `argo submit` it). build-image without
    --pool prints one workflow per pool kind the model is served from (one image per kind)."""
    try:
        require("pipelines")
        kinds = serving_kinds(repo, model, environment) if name == "build-image" and pool is None else [None]
        workflows = [render_workflow(repo, name, model, environment=environment, commit=commit, repo_url=repo_url,
                                     model_hash=model_hash, bento_url=bento_url, pool=pool, kind=kind)
                     for kind in kinds]
    except ReconcilerError as exc:
        raise fail(exc) from None
    sys.stdout.write("---\n".join(w.to_yaml() for w in workflows))


@cli.command("links")
def links_command(
    repo_url: RepoUrlOpt = None,
    namespace: Annotated[str, typer.Option(help="the Argo controller's namespace")] = "argo",
    repo: RepoOpt = Path("."),
) -> None:
    """Print the workflow-controller ConfigMap `links` (commit and pull-request links in the Argo UI)."""
    try:
        url = repo_url or origin_url(repo)
        sys.stdout.write(yaml.safe_dump(links_configmap(url, namespace), sort_keys=False))
    except ValueError as exc:
        raise fail(ReconcilerError(str(exc))) from None
    except ReconcilerError as exc:
        raise fail(exc) from None


@cli.command("submit")
def submit_command(
    name: PipelineArg,
    model: ModelOpt,
    environment: EnvOpt = "dev",
    commit: CommitOpt = None,
    repo_url: RepoUrlOpt = None,
    model_hash: ModelHashOpt = None,
    bento_url: BentoUrlOpt = None,
    pool: PoolOpt = None,
    repo: RepoOpt = Path("."),
) -> None:
    """Submit a pipeline to the Argo server in ARGO_SERVER (ARGO_TOKEN, ARGO_NAMESPACE)."""
    try:
        require("pipelines")
        workflow = render_workflow(repo, name, model, environment=environment, commit=commit, repo_url=repo_url,
                                   model_hash=model_hash, bento_url=bento_url, pool=pool)
        result = submit(workflow, ArgoConfig.from_env(), exists_ok=True)
    except ReconcilerError as exc:
        raise fail(exc) from None
    state = "submitted" if result.created else "already submitted"
    typer.echo(f"{state}: {result.namespace}/{result.name}  {result.ui_url}")
