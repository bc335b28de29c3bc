"""Run the pipelines on a laptop (no cluster), and render them as Argo Workflows.

`reconciler pipeline run train [--model M]` walks `pipelines.steps.STEPS` in DAG order: train ->
evaluate -> register (`dvc add` of the artifacts model.yaml declares). Train and evaluate run as the very
command the Argo Workflow's tasks run (`python -m pipelines.steps ...`), in a process of their own under the
pinned numeric profile (pipelines/numerics.py), with the Python of the model's own training environment: a
virtual environment holding exactly the model's lock (pipelines/locks.py), created once per lock content
with `uv venv` + `uv pip install --no-deps -r LOCK` and cached outside the repository (`training_python`);
never the reconciler's own environment. Register runs here. `reconciler pipeline render NAME --model M`
prints the Workflow YAML for `train` or `build-image`, with defaults taken from the repository
(HEAD commit, origin URL, the model's content hash, the environment's registry and pool).

Step failures become ReconcilerError (ArtifactError for DVC), so the CLI prints a fix, not a trace.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence


from reconciler.catalog.environments import platform_path, training_python  # re-exported
from reconciler.catalog.accelerators import recipe_for
from reconciler.catalog.image_inputs import KindDigests
from reconciler.catalog.kinds import AcceleratorKind
from reconciler.errors import ArtifactError, ReconcilerError, SourceError
from pipelines import steps
from pipelines.build_image import build_image_workflow
from pipelines.common import DvcConfigError
from pipelines.common import Operations, RunContext
from pipelines.locks import LockError, read_lock
from pipelines.locks import lock_relpath
from pipelines.neuron_compile import neuron_compile_workflow, neuron_options_for
from pipelines.numerics import pinned_environ
from pipelines.steps import StepError
from pipelines.steps import load_recipe
from pipelines.steps import TRAIN_FILE
from pipelines.train import train_workflow
from reconciler.build.artifacts import committed_remotes
from reconciler.source.artifacts import default_remote
from reconciler.catalog.load import load_catalog, model_kinds, placements, unknown_model_fix
from reconciler.source.git import head_sha, remote_url
from reconciler.source.hashing import model_hashes
import yaml

PIPELINES = ("train", "build-image", "neuron-compile")


@dataclass(frozen=True)
class StepRun:
    model: str
    step: str
    seconds: float
    detail: str


@dataclass
class ModelRun:
    model: str
    model_dir: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    pointer: Path | None = None
    steps: list[StepRun] = field(default_factory=list)
    outputs: tuple[str, ...] = ("model.pkl",)  # the artifacts model.yaml declares, by name in the model folder
    python: str = sys.executable  # the model's training environment


def declared_outputs(root: Path, model: str) -> tuple[str, ...]:
    """What training writes, as model.yaml declares it: each artifact pointer's output (`model.pt.dvc` ->
    `model.pt`, `weights.dvc` -> the `weights` folder), in declaration order; model.pkl when none is declared."""

    shown = f"models/{model}/model.yaml"
    try:
        spec = yaml.safe_load((Path(root) / shown).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ReconcilerError(f"{shown} cannot be read: {exc}", fix=f"fix {shown} (`reconciler plan` shows where)") from None
    artifacts = spec.get("artifacts") if isinstance(spec, dict) else None
    names = tuple(a.removesuffix(".dvc") for a in artifacts or () if isinstance(a, str) and a.endswith(".dvc"))
    return names or ("model.pkl",)


def trainable_models(root: Path) -> list[str]:
    """Model folders (models/<name>/model.yaml) that have their own training entry point (train.py)."""

    folder = root / "models"
    return sorted(p.name for p in folder.iterdir() if (p / "model.yaml").is_file() and (p / TRAIN_FILE).is_file()) \
        if folder.is_dir() else []


def run_train(root: Path, models: Sequence[str] | None = None, *, register: bool = True, push: bool = False,
              seed: int | None = None, on_step: Callable[[StepRun], None] | None = None) -> list[ModelRun]:
    """Train, evaluate and (unless register=False) DVC-register each model under `root`/models.

    Writes models/<m>/model.pkl, metrics.json and (register) model.pkl.dvc + .gitignore. Raises
    ReconcilerError for an unknown model or a failed step, ArtifactError when DVC fails.
    """

    root = Path(root).resolve()
    names = list(models) if models else trainable_models(root)
    if not names:
        raise ReconcilerError(f"no trainable models under {root / 'models'}",
                              fix="run from the repository root, or pass --repo")
    for name in names:
        if not (root / "models" / name / "model.yaml").is_file():

            raise ReconcilerError(f"models/{name}/model.yaml not found under {root}", fix=unknown_model_fix(root, name))
        try:
            steps.load_recipe(name, root)
        except steps.StepError as exc:
            raise ReconcilerError(exc.message, fix=exc.fix) from None
    seed = steps.SEED if seed is None else seed
    order = [s for s in steps.dag_order() if register or s.name != "register"]
    runs = []
    for name in names:
        run = ModelRun(name, root / "models" / name, outputs=declared_outputs(root, name))
        started = time.perf_counter()
        run.python = str(training_python(root, name))
        if on_step is not None:
            on_step(StepRun(name, "environment", time.perf_counter() - started,
                            f"{Path(run.python).parents[1]} ({lock_relpath(root, name)})"))
        actions: dict[str, Callable[[], str]] = {
            "train": lambda: _train(run, root, seed),  # noqa: B023 - called inside this iteration
            "evaluate": lambda: _evaluate(run, root, seed),  # noqa: B023 - called inside this iteration
            "register": lambda: _register(run, root, steps, push),  # noqa: B023 - called inside this iteration
        }
        for step in order:
            started = time.perf_counter()
            try:
                detail = actions[step.name]()
            except steps.StepError as exc:
                cls = ArtifactError if step.name == "register" else ReconcilerError
                raise cls(f"{name}: step {step.name} failed: {exc.message}", fix=exc.fix) from None
            record = StepRun(name, step.name, time.perf_counter() - started, detail)
            run.steps.append(record)
            if on_step is not None:
                on_step(record)
        runs.append(run)
    return runs


def step_process(step: str, model: str, model_dir: Path, root: Path, seed: int, *, python: str | None = None,
                 outputs: tuple[str, ...] = ()) -> str:
    """Run one numeric step as `python -m pipelines.steps STEP ...`, the command the Argo task runs, with
    `python` (the model's training environment, `training_python`), and return its standard output.

    A process of its own, because the numeric profile (pipelines/numerics.py: the BLAS kernel, numpy's
    SIMD loops, one thread) must be set before numpy loads, and this process loaded it long ago: training
    in-process would give other weights on another CPU. Raises StepError with the step's own message.
    """

    command = [python or sys.executable, "-m", "pipelines.steps", step, "--model", model, "--model-dir",
               str(model_dir), "--seed", str(seed), "--repo-root", str(root)]
    for name in outputs:
        command += ["--output", name]
    env = {k: v for k, v in pinned_environ().items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    if python is not None:
        env["PYTHONPATH"] = str(platform_path())
    done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, check=False)
    if done.returncode == 0:
        return done.stdout.strip()
    raise _step_failure(done.stderr, model, step)


def _step_failure(stderr: str, model: str, step: str) -> Exception:
    """The StepError a failed step process printed (`error: ...` / `  fix: ...`), else its last line."""

    lines = [line for line in stderr.splitlines() if line.strip()]
    for at, line in enumerate(lines):
        if line.startswith("error: "):
            rest = lines[at + 1:]
            fix = next((r.strip()[len("fix: "):] for r in rest if r.strip().startswith("fix: ")), None)
            message = "\n".join([line[len("error: "):], *(r for r in rest if not r.strip().startswith("fix: "))])
            return StepError(message, fix=fix)
    last = lines[-1] if lines else "(no output)"
    return StepError(f"the {step} step stopped: {last}",
                     fix=f"run `python -m pipelines.steps {step} --model {model} --model-dir /tmp/{model}` "
                         "from the repository root to see the whole output")


def _train(run: ModelRun, root: Path, seed: int) -> str:
    step_process("train", run.model, run.model_dir, root, seed, python=run.python, outputs=run.outputs)
    return ", ".join(str((run.model_dir / name).relative_to(root)) for name in run.outputs)


def _evaluate(run: ModelRun, root: Path, seed: int) -> str:
    run.metrics = json.loads(step_process("evaluate", run.model, run.model_dir, root, seed, python=run.python,
                                          outputs=run.outputs).splitlines()[-1])
    return ", ".join(f"{k}={run.metrics[k]}" for k in ("accuracy", "f1_macro") if k in run.metrics)


def _register(run: ModelRun, root: Path, steps: Any, push: bool) -> str:
    run.pointer = steps.register(run.model_dir, root, push=push, outputs=run.outputs)
    return str(run.pointer.relative_to(root)) + (" (pushed)" if push else "")


# --------------------------------------------------------------------------- rendering


def serving_kinds(root: Path, model: str, environment: str) -> list[str]:
    """The pool kinds `model` is served from in `environment`: one image (one build-image workflow) each."""

    catalog = load_catalog(Path(root).resolve(), only={model})
    if model in catalog.errors:
        raise catalog.errors[model]
    if model not in catalog.models:
        raise ReconcilerError(f"no model named {model!r}", fix=unknown_model_fix(catalog.root, model))
    catalog.environment(environment)
    return [k.value for k in model_kinds(catalog, catalog.models[model], environment)]


def origin_url(root: Path) -> str:
    """The repository's origin URL (SourceError without one)."""
    return _git_defaults(root, "0" * 40, None)[1]


def _git_defaults(root: Path, commit: str | None, repo_url: str | None) -> tuple[str, str]:
    commit = commit or head_sha(root)
    if repo_url is None:
        repo_url = remote_url(root, "origin")
        if repo_url is None:
            raise SourceError(f"{root} has no 'origin' remote to take the repository URL from",
                              fix="pass --repo-url https://github.com/<org>/<repo>.git, or `git remote add origin ...`")
    return commit, repo_url


def render_workflow(root: Path, pipeline: str, model: str, *, environment: str = "dev", commit: str | None = None,
                    repo_url: str | None = None, model_hash: str | None = None, registry: str | None = None,
                    bento_url: str | None = None, pool: str | None = None, namespace: str | None = None,
                    kind: str | None = None):
    """The hera Workflow of `pipeline` ('train', 'build-image' or 'neuron-compile') for `model`, defaults from
    the repository and the environment (`pipelines:` in environment.yaml: service account, deadline, TTLs,
    DVC remote and its credentials Secret, the git credentials Secret); PR number and branch labels from GitHub Actions' variables.
    build-image builds the image of one pool kind (`kind`, or the pool's, default the first pool's):
    `serving_kinds` lists the kinds a model needs one image each for."""

    if pipeline not in PIPELINES:
        raise ReconcilerError(f"no pipeline named {pipeline!r}", fix=f"use one of: {', '.join(PIPELINES)}")
    root = Path(root).resolve()
    catalog = load_catalog(root, only={model})
    if model in catalog.errors:
        raise catalog.errors[model]
    if model not in catalog.models:
        raise ReconcilerError(f"no model named {model!r} in {root / 'models'}", fix=unknown_model_fix(root, model))
    entry = catalog.models[model]
    if pipeline == "train":

        try:
            load_recipe(model, root)  # fail early: the workflow would run models/<model>/train.py
        except StepError as exc:
            raise ReconcilerError(exc.message, fix=exc.fix) from None
    env = catalog.environment(environment)
    commit, repo_url = _git_defaults(root, commit, repo_url)
    if model_hash is None:

        model_hash = model_hashes(root, None, [entry])[model].digest

    operations, run = Operations.from_environment(env), RunContext.from_env()
    namespace = namespace or env.pipelines.namespace
    try:
        if pipeline == "train":

            try:
                lock = read_lock(root, model)
            except LockError as exc:
                raise ReconcilerError(exc.message, fix=exc.fix) from None

            try:
                return train_workflow(model=model, model_hash=model_hash, commit=commit, repo_url=repo_url,
                                      environment=environment, namespace=namespace,
                                      dvc_remote=env.pipelines.dvc_remote or "", dvc_remotes=committed_remotes(root),
                                      dvc_credentials_secret=env.pipelines.dvc_credentials_secret,
                                      git_credentials_secret=env.pipelines.git_credentials_secret,
                                      operations=operations, run=run, lock=lock.path, lock_pins=lock.pins,
                                      outputs=declared_outputs(root, model))
            except DvcConfigError as exc:
                raise ReconcilerError(exc.message, fix=exc.fix) from None

        chosen = placements(entry, env, catalog.pools)
        if pool is not None:
            if pool not in {p.name for p in chosen}:
                raise ReconcilerError(f"{model} does not serve from pool {pool!r} in {environment} "
                                      f"(it serves from: {', '.join(p.name for p in chosen)})",
                                      fix="pick one of those pools, or change accelerator: in its model.yaml")
            target = next(p for p in chosen if p.name == pool)
        elif pipeline == "neuron-compile" and kind is None:
            kind = "inferentia"
        if pool is not None:
            pass
        elif kind is not None:  # the image of one pool kind: built on (and for) the first pool of that kind
            of_kind = [p for p in chosen if p.kind.value == kind]
            if not of_kind:
                raise ReconcilerError(f"{model} serves from no {kind} pool in {environment}",
                                      fix="pick a kind it serves from, or change accelerator: in its model.yaml")
            target = of_kind[0]
        else:
            target = chosen[0]
        try:
            shape = load_recipe(model, root).input_shape
        except StepError:  # a model trained elsewhere: the Neuron options' default shape
            shape = None
        chosen_recipe = recipe_for(entry.spec.architecture, AcceleratorKind.inferentia.value, catalog.recipes.recipes)
        try:
            model_lock = read_lock(root, model)
        except LockError as exc:
            raise ReconcilerError(exc.message, fix=exc.fix) from None
        neuron = neuron_options_for(entry.spec, shape, chosen_recipe, model_lock)
        if bento_url is None:
            raise ReconcilerError("build-image needs the URL of the exported bento",
                                  fix="pass --bento-url https://.../<model>-<hash>.bento (from `bentoml export`)")
        if pipeline == "neuron-compile":
            return neuron_compile_workflow(model=model, model_hash=model_hash, commit=commit, repo_url=repo_url,
                                           bento_url=bento_url, environment=environment, pool=target,
                                           namespace=namespace, options=neuron, operations=operations, run=run)
        kind_digest = KindDigests(catalog.recipes.recipes).of(entry.spec, target.kind)
        return build_image_workflow(model=model, model_hash=model_hash, kind_digest=kind_digest, commit=commit,
                                    repo_url=repo_url,
                                    registry=registry or env.registry, bento_url=bento_url,
                                    environment=environment, pool=target, namespace=namespace,
                                    neuron=neuron, operations=operations, run=run)
    except ValueError as exc:  # bad commit / hash strings from the command line
        raise ReconcilerError(str(exc)) from None


def push_note(root: Path, pushed: bool, models: Sequence[str]) -> str:
    """One plain sentence: were the weights pushed to the DVC remote, and what follows if not."""

    remote = default_remote(root)
    where = f"DVC remote {remote[0]!r} ({remote[1]})" if remote else "the DVC remote (none is configured)"
    if pushed:
        return f"pushed: the weights are in {where}"
    flags = " ".join(f"--model {m}" for m in models)
    return (f"NOT pushed: the weights are only in this machine's DVC cache, not in {where}; "
            f"`reconciler plan` reports them as missing and `reconciler build` elsewhere cannot fetch them. "
            f"Push with `reconciler pipeline run train {flags} --push` or `dvc push`")
