"""The example models' training pipeline on Argo: train -> evaluate -> register, as a DAG.

The DAG is built from `pipelines.steps.STEPS` (the same graph the local runner walks) and every task
runs `python -m pipelines.steps <step>` in the repository checked out at the workflow's commit, so
a laptop run (`reconciler pipeline run train`) and a cluster run execute the same code.

Every step installs the model's own lock (`models/<model>/requirements.lock`, else the shared
`pipelines/requirements.lock`: pipelines/locks.py) with `pip install --no-deps -r`, exactly what the local
runner's training environment holds, so a LightGBM or PyTorch model trains on the cluster with its framework.

Outputs of the workflow: the `model` (the folder of the artifacts model.yaml declares, model.pkl by
default), `metrics` (metrics.json) and `pointer` (the first artifact's `.dvc`; `pointer-<i>` for the others)
artifacts, and the `metrics` parameter (the JSON) for the Argo UI. Commit the pointers and metrics.json;
with a `dvc-remote` the register step also pushes the weights.

Credentials reach the register step only: the DVC remote's as env vars from the Secret named by
`pipelines.dvcCredentialsSecret`, git's (to push the proposal branch) as the Secret named by
`pipelines.gitCredentialsSecret`, mounted read-only at pipelines.gitauth.MOUNT_PATH. The workflow names
the Secrets, never their values.
"""

from __future__ import annotations

import shlex

from . import common, gitauth
from .locks import SHARED_LOCK, index_options
from .steps import METRICS_FILE, MODEL_FILE, STEPS

STEP_RETRY_LIMIT = 1
OUT_DIR = "/work/out"  # the declared artifacts, as train() writes them (the `model` artifact: a folder)
METRICS_IN = "/work/metrics/" + METRICS_FILE  # where register receives metrics.json


def _model_dir(model: str) -> str:
    return f"{common.SOURCE_PATH}/models/{model}"


def lock_install(lock: str, pins: dict[str, str] | None = None) -> str:
    """The shell line installing exactly the model's lock in a step pod (`--no-deps`: the lock is complete)."""
    extra = " ".join(shlex.quote(a) for a in index_options(pins or {}))
    return (f"pip install --quiet --disable-pip-version-check --no-deps -r {shlex.quote(f'{common.SOURCE_PATH}/{lock}')}"
            + (f" {extra}" if extra else ""))


def _shell(lock_line: str, command: str, requirements: tuple[str, ...] = ()) -> str:
    lines = ["set -eu", lock_line]
    if requirements:  # the platform's own tools (dvc for register), resolved with their dependencies
        lines.append("pip install --quiet --disable-pip-version-check " + " ".join(f"'{r}'" for r in requirements))
    return "\n".join([*lines, f"cd {common.SOURCE_PATH}", command])


GIT_CREDENTIALS_VOLUME = "git-credentials"
# the propose push needs git (and ssh for an ssh remote); a slim Python image has neither, so they are
# installed from the image's own Debian release when missing (a step image with them skips this)
ENSURE_GIT = ("command -v git >/dev/null 2>&1 && { [ ! -f \"${GITOPS_GIT_CREDENTIALS:-}/ssh-privatekey\" ] || "
              "command -v ssh >/dev/null 2>&1; } || { apt-get update -qq && "
              "apt-get install -y -qq --no-install-recommends git openssh-client ca-certificates >/dev/null; }")


def _git_credentials(secret: str | None) -> tuple[list | None, list | None]:
    """(volumes, env) of the register step for the environment's git credentials Secret (none: no push auth)."""
    if not secret:
        return None, None
    from hera.workflows import Env, SecretVolume

    volume = SecretVolume(name=GIT_CREDENTIALS_VOLUME, secret_name=secret, mount_path=gitauth.MOUNT_PATH,
                          read_only=True, default_mode=0o400)  # owner-read only: ssh refuses looser keys
    return [volume], [Env(name=gitauth.CREDENTIALS_ENV, value=gitauth.MOUNT_PATH)]


def _templates(model: str, source: common.Source, image: str, dvc_credentials_secret: str | None = None,
               git_credentials_secret: str | None = None,
               register_requirements: tuple[str, ...] = common.REGISTER_REQUIREMENTS,
               lock_line: str = "", outputs: tuple[str, ...] = (MODEL_FILE,)) -> dict:
    from hera.workflows import Artifact, Container, Parameter, RetryStrategy
    from hera.workflows import models as m

    # step outputs live in /work/out (not inside the /src checkout: artifacts are not nested);
    # register copies the weights into the model folder and `dvc add`s them there
    model_dir = _model_dir(model)
    src = common.source_artifact(source)
    weights, metrics = OUT_DIR, f"{OUT_DIR}/{METRICS_FILE}"
    declared = "".join(f" --output {shlex.quote(o)}" for o in outputs)
    copies = " ".join(shlex.quote(f"{OUT_DIR}/{o}") for o in outputs)
    pointers = [Artifact(name="pointer" if i == 0 else f"pointer-{i}", path=f"{model_dir}/{o}.dvc")
                for i, o in enumerate(outputs)]
    retry = RetryStrategy(limit=str(STEP_RETRY_LIMIT))
    # the DVC remote's credentials (e.g. AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY) from the Secret the
    # environment names (pipelines.dvcCredentialsSecret): every key becomes an env var of the register pod
    credentials = [m.EnvFromSource(secret_ref=m.SecretEnvSource(name=dvc_credentials_secret))] \
        if dvc_credentials_secret else None
    git_volumes, git_env = _git_credentials(git_credentials_secret)
    return {
        "train": Container(
            name="train", image=image, command=["sh", "-c"], retry_strategy=retry,
            args=[_shell(lock_line, f"python -m pipelines.steps train --model {model} --model-dir {OUT_DIR}{declared}")],
            inputs=[src],
            outputs=[Artifact(name="model", path=weights)],
        ),
        "evaluate": Container(
            name="evaluate", image=image, command=["sh", "-c"], retry_strategy=retry,
            args=[_shell(lock_line, f"python -m pipelines.steps evaluate --model {model} --model-dir {OUT_DIR}{declared}")],
            inputs=[src, Artifact(name="model", path=weights)],
            outputs=[Artifact(name="metrics", path=metrics),
                     Parameter(name="metrics", value_from=m.ValueFrom(path=metrics), global_name="metrics")],
        ),
        "register": Container(
            name="register", image=image, command=["sh", "-c"], retry_strategy=retry, env_from=credentials,
            env=git_env, volumes=git_volumes,
            args=[_shell(lock_line,
                         f"cp -R {copies} {METRICS_IN} {model_dir}/\n"
                         f"python -m pipelines.steps register --model-dir {model_dir}{declared} "
                         f"--repo-root {common.SOURCE_PATH} --push-remote '{{{{workflow.parameters.dvc-remote}}}}'\n"
                         # close the loop: the new pointer + metrics.json as a branch (and a PR with GITHUB_TOKEN)
                         "if [ '{{workflow.parameters.propose}}' = true ]; then\n"
                         "  export GIT_AUTHOR_NAME=model-gitops GIT_AUTHOR_EMAIL=model-gitops@users.noreply.github.com\n"
                         "  export GIT_COMMITTER_NAME=model-gitops GIT_COMMITTER_EMAIL=model-gitops@users.noreply.github.com\n"
                         f"  {ENSURE_GIT}\n"
                         # pushes with the mounted credentials ($GITOPS_GIT_CREDENTIALS, pipelines.gitauth)
                         f"  python -m pipelines.propose --repo-root {common.SOURCE_PATH} --model {model}\n"
                         "fi", register_requirements)],
            inputs=[src, Artifact(name="model", path=weights), Artifact(name="metrics", path=METRICS_IN)],
            outputs=pointers,
        ),
    }


# which artifacts each step takes from which earlier step
_WIRING: dict[str, list[tuple[str, str]]] = {
    "train": [],
    "evaluate": [("train", "model")],
    "register": [("train", "model"), ("evaluate", "metrics")],
}


def _register_requirements(dvc_remote: str, remotes: dict[str, str] | None) -> tuple[str, ...]:
    """dvc, with the extras of the committed remotes, for the register step; checks `dvc_remote` is one of them."""
    if remotes is None:
        if dvc_remote:
            raise common.DvcConfigError(f"the URL of DVC remote {dvc_remote!r} is unknown, so the register step "
                                        "cannot know which dvc plugin its push needs",
                                        "pass dvc_remotes=reconciler.build.artifacts.committed_remotes(<repo root>)")
        return common.REGISTER_REQUIREMENTS
    if dvc_remote and dvc_remote not in remotes:
        declared = ", ".join(sorted(remotes)) or "none"
        raise common.DvcConfigError(f"the DVC remote {dvc_remote!r} (pipelines.dvcRemote) is not declared in the "
                                    f"committed {common.DVC_CONFIG} (it declares: {declared}), so `dvc push -r "
                                    f"{dvc_remote}` would fail in the register step",
                                    f"`dvc remote add {dvc_remote} <url>` and commit {common.DVC_CONFIG}, or set "
                                    "pipelines.dvcRemote to a declared remote")
    return common.dvc_requirements(remotes)


def train_workflow(
    *,
    model: str,
    model_hash: str,
    commit: str,
    repo_url: str,
    environment: str = "dev",
    namespace: str | None = None,
    image: str = common.DEFAULT_STEP_IMAGE,
    dvc_remote: str = "",
    dvc_remotes: dict[str, str] | None = None,
    dvc_credentials_secret: str | None = None,
    git_credentials_secret: str | None = None,
    operations: common.Operations = common.Operations(),
    run: common.RunContext = common.RunContext(),
    lock: str = SHARED_LOCK,
    lock_pins: dict[str, str] | None = None,
    outputs: tuple[str, ...] = (MODEL_FILE,),
):
    """The train -> evaluate -> register Workflow for one model at one commit (a hera Workflow).

    `lock` is the repository path of the model's lock (pipelines.locks.lock_relpath), which every step installs
    (`lock_pins`: its pins, for PyTorch's variant index); `outputs` are the artifacts model.yaml declares
    (pipeline_runner.declared_outputs), which train writes, evaluate scores and register `dvc add`s.

    `dvc_remote` names a DVC remote configured in the repository (empty: register without pushing);
    `dvc_remotes` are the remotes of its committed .dvc/config ({name: url},
    reconciler.build.artifacts.committed_remotes): the register step installs dvc with the extras their
    URL schemes need (dvc[s3] for S3/MinIO...). A `dvc_remote` they do not declare, or a scheme dvc has no
    plugin for, is a DvcConfigError (with a fix) at render time, not a failed push on the cluster.
    `dvc_credentials_secret` / `git_credentials_secret`: the Secrets the register step reads (by name only).
    The workflow uses generateName: every submit is a new run.
    """
    from hera.workflows import DAG, Parameter, Task, Workflow

    source = common.Source(repo_url=repo_url, commit=commit)
    register_requirements = _register_requirements(dvc_remote, dvc_remotes)
    workflow_labels, annotations = common.metadata(
        pipeline="train", model=model, model_hash=model_hash, environment=environment, source=source,
        title=f"train {model} @ {commit[:12]}", run=run,
        description=f"Train, evaluate and DVC-register {model} from commit {commit[:12]} "
                    f"({' -> '.join(s.name for s in STEPS)})",
    )
    with Workflow(
        generate_name=common.dns_name("train", model, limit=56) + "-",
        namespace=namespace,
        labels=workflow_labels,
        annotations=annotations,
        entrypoint="main",
        **operations.workflow_fields(common.pod_labels(model, model_hash, environment, None)),
        arguments=[Parameter(name="dvc-remote", value=dvc_remote),
                   Parameter(name="propose", value="true" if dvc_remote else "false")],
    ) as workflow:
        templates = _templates(model, source, image, dvc_credentials_secret, git_credentials_secret,
                               register_requirements, lock_install(lock, lock_pins), tuple(outputs))
        with DAG(name="main"):
            tasks: dict[str, Task] = {}
            for step in STEPS:
                arguments = [tasks[producer].get_artifact(name) for producer, name in _WIRING[step.name]]
                task = Task(name=step.name, template=templates[step.name], arguments=arguments or None)
                for dep in step.depends:
                    tasks[dep] >> task
                tasks[step.name] = task
    return workflow
