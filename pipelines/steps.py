"""Every model's pipeline steps: train -> evaluate -> register.

The model-specific part is the model's own `models/<name>/train.py` (its `train()` and
`evaluate()`, see `load_recipe`): these steps wrap it with what every model needs (the pinned
training stack, one BLAS thread, metrics.json, the quality gate, DVC), so adding a model never
means editing this file.

One code path for a laptop and for the cluster: `reconciler pipeline run train` calls these
functions in-process (reconciler/build/pipeline_runner.py), and every script template of the Argo
Workflow in pipelines/train.py runs `python -m pipelines.steps <step> ...` against the same
repository checked out at the workflow's commit.

Steps are deterministic (fixed seeds, a fixed train/test split, one BLAS thread, and one numeric
profile per architecture: pipelines/numerics.py pins the BLAS kernel and numpy's SIMD loops before
they load), so training the same code with the same library versions on any x86-64 CPU with AVX2
gives byte-identical weights, hence the same DVC md5 and the same model hash. `python -m
pipelines.steps` re-executes itself under that profile; calling train() in a process that did not
start that way trains with whatever kernel the CPU picked.
The example models' datasets come with scikit-learn itself: nothing is downloaded.

Only the standard library is imported at module level (so `python -m pipelines.steps` pins the numerics
before any numeric library loads); the model's train.py brings its own stack, and register imports dvc
when it runs.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib
import importlib.util
import json
import logging
import sys
import traceback
from importlib import metadata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .errors import StepError
from .locks import lock_file, lock_relpath, parse_lock, provider

MODEL_FILE = "model.pkl"
METRICS_FILE = "metrics.json"
SEED = 0


# --------------------------------------------------------------------------- recipes

TRAIN_FILE = "train.py"


@dataclass(frozen=True)
class Recipe:
    """A model's own training code: `models/<name>/train.py`, loaded from the model folder.

    The contract (docs/model-spec.md, "train.py"): `train(out_dir, *, seed) -> Path` writes the
    weights (`out_dir/model.pkl`), `evaluate(out_dir, *, seed) -> dict` scores them on held-out data;
    optional `QUALITY_GATE = {"metric": minimum}` and `INPUT_SHAPE = (1, n)` (Neuron tracing).
    """

    model: str
    path: Path
    train: Callable[..., Any]
    evaluate: Callable[..., dict[str, Any]]
    quality_gate: dict[str, float]
    input_shape: tuple[int, ...] | None


def recipe_path(model: str, repo_root: Path = Path(".")) -> Path:
    return Path(repo_root) / "models" / model / TRAIN_FILE


def load_recipe(model: str, repo_root: Path = Path(".")) -> Recipe:
    """Import `models/<model>/train.py` (by path: model folders are not packages) and check its contract."""
    path = recipe_path(model, repo_root)
    shown = f"models/{model}/{TRAIN_FILE}"
    if not path.is_file():
        raise StepError(f"{shown} not found: the model has no training entry point",
                        fix=f"add {shown} with train(out_dir, *, seed) and evaluate(out_dir, *, seed) "
                            "(see docs/model-spec.md, \"train.py\"), or copy one: `reconciler model new NAME --from iris-classifier`")
    spec = importlib.util.spec_from_file_location(f"model_recipe_{model.replace('-', '_')}", path)
    if spec is None or spec.loader is None:
        raise StepError(f"{shown} cannot be loaded as a Python module", fix=f"check that {shown} is a .py file")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except ModuleNotFoundError as exc:
        raise missing_framework(exc, model, Path(repo_root)) from None
    except Exception as exc:  # a data scientist's module: any error is theirs to fix
        raise StepError(f"{shown} failed to import: {type(exc).__name__}: {exc}",
                        fix=f"run `python {shown}` to see the full error") from None
    missing = [name for name in ("train", "evaluate") if not callable(getattr(module, name, None))]
    if missing:
        raise StepError(f"{shown} defines no {' or '.join(f'{m}()' for m in missing)}",
                        fix="define train(out_dir, *, seed) -> Path and evaluate(out_dir, *, seed) -> dict "
                            "(see docs/model-spec.md, \"train.py\")")
    gate = getattr(module, "QUALITY_GATE", {}) or {}
    shape = getattr(module, "INPUT_SHAPE", None)
    if not isinstance(gate, dict) or not all(isinstance(v, (int, float)) for v in gate.values()):
        raise StepError(f"{shown}: QUALITY_GATE must map metric names to minimum numbers, e.g. {{\"accuracy\": 0.9}}",
                        fix=f"fix QUALITY_GATE in {shown}")
    return Recipe(model, path, module.train, module.evaluate, {str(k): float(v) for k, v in gate.items()},
                  tuple(int(d) for d in shape) if shape else None)


LOCK_FILE = Path(__file__).with_name("requirements.lock")  # the shared lock (pipelines.locks.SHARED_LOCK)


def locked_versions(lock: Path = LOCK_FILE) -> dict[str, str]:
    """The `name==version` pins of a lock (canonical names; comments and blank lines skipped)."""
    return parse_lock(lock.read_text(encoding="utf-8"), lock.name)  # a bad lock: LockError, a StepError


def model_lock(model: str, repo_root: Path = Path(".")) -> Path:
    """The lock `model` trains with: models/<model>/requirements.lock, else pipelines/requirements.lock."""
    return lock_file(repo_root, model)


def check_training_stack(lock: Path = LOCK_FILE, shown: str | None = None) -> None:
    """Refuse to train at library versions other than the lock's: the weights would not reproduce.

    A pickle embeds the versions that wrote it, so training at other versions changes the DVC md5 of
    every model and makes the committed pointers disagree with a retrain.
    """
    if not lock.is_file():  # installed without the template's lock: nothing to hold the versions to
        return
    shown = shown or f"pipelines/{lock.name}"
    wrong = []
    for name, pinned in locked_versions(lock).items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = "not installed"
        if installed != pinned:
            wrong.append(f"{name} {installed} (locked: {pinned})")
    if wrong:
        raise StepError(f"the training stack differs from {shown}: " + ", ".join(wrong),
                        fix=f"train through `reconciler pipeline run train` (it installs {shown} in an environment of "
                            f"its own), or `pip install -r {shown}`; to move to new versions, change the lock and retrain")


def missing_framework(exc: ModuleNotFoundError, model: str, repo_root: Path) -> StepError:
    """One line with the fix for a train.py whose import is not installed (not a traceback)."""
    lock = lock_relpath(repo_root, model)
    package = provider(exc.name or "?")
    own = f"models/{model}/requirements.lock"
    where = f"add {package}==<version> to {lock}" if lock == own else \
        f"create {own} (start from a copy of {lock}) with {package}==<version> in it"
    frames = traceback.extract_tb(exc.__traceback__) if exc.__traceback__ else []
    by = f" (imported by {frames[-1].filename})" if frames else ""
    return StepError(f"models/{model}/{TRAIN_FILE} needs the module {exc.name}{by}, which the model's training "
                     f"environment ({lock}) does not install", fix=f"{where}, then train again")


def md5_of(path: Path) -> str:
    digest = hashlib.md5()  # DVC's content address, not a security hash
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------- steps


def _load_native_libraries() -> None:
    """Load the training stack's BLAS / OpenMP libraries before limiting their threads.

    threadpoolctl limits only the libraries loaded when the limit is entered; numpy and scipy each
    bundle an OpenBLAS and scikit-learn an OpenMP runtime, and a train.py importing them lazily
    (inside train()) would load them after the limit, multi-threaded, and change the weights.
    """
    for name in ("numpy", "scipy.linalg", "sklearn.utils"):
        try:
            importlib.import_module(name)
        except ImportError:  # not part of this model's stack
            pass


def _thread_limit():
    """One BLAS / OpenMP thread for the libraries loaded so far (threadpoolctl, when the lock has it: the
    profile's *_NUM_THREADS variables already hold every library that reads them)."""
    try:
        from threadpoolctl import threadpool_limits  # noqa: PLC0415 - optional: only a model whose lock installs it
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1)


def train(model: str, model_dir: Path, *, seed: int = SEED, repo_root: Path = Path("."),
          outputs: tuple[str, ...] = (MODEL_FILE,)) -> Path:
    """Run `models/<model>/train.py` train() into `model_dir`, check that it wrote every declared output (the
    artifacts model.yaml declares, by their names in the model folder: files or folders) and return the
    first one's path."""
    check_training_stack(model_lock(model, repo_root), shown=lock_relpath(repo_root, model))
    found = load_recipe(model, repo_root)
    model_dir.mkdir(parents=True, exist_ok=True)
    _load_native_libraries()
    # one BLAS thread: floating-point sums in a fixed order, so the weights (and their DVC md5) do
    # not depend on the machine's core count; it is also faster for models this small
    try:
        with _thread_limit():
            written = found.train(model_dir, seed=seed)
    except ModuleNotFoundError as exc:
        raise missing_framework(exc, model, Path(repo_root)) from None
    paths = [model_dir / name for name in outputs]
    absent = [p.name for p in paths if not p.exists()]
    if absent:
        raise StepError(f"models/{model}/{TRAIN_FILE}: train() wrote no {', '.join(absent)} into the folder it is given "
                        f"(it returned {written!r}); model.yaml declares {', '.join(outputs)} as the model's artifacts",
                        fix=f"write {', '.join(outputs)} into out_dir, or change `artifacts:` in models/{model}/model.yaml "
                            "to what train() writes")
    return paths[0]


def artifact_md5(path: Path) -> str:
    """md5 of a file, or of a folder's files (relative path and md5 of each, sorted): one value per artifact."""
    if path.is_file():
        return md5_of(path)
    digest = hashlib.md5()  # a content fingerprint, as DVC's
    for item in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f"{item.relative_to(path).as_posix()}\0{md5_of(item)}\n".encode())
    return digest.hexdigest()


def evaluate(model: str, model_dir: Path, *, seed: int = SEED, enforce_gate: bool = True,
             repo_root: Path = Path("."), outputs: tuple[str, ...] = (MODEL_FILE,)) -> dict[str, Any]:
    """Score the declared artifacts with the model's evaluate(), write `<model_dir>/metrics.json`, return the metrics.

    metrics.json is committed next to model.yaml, so `reconciler plan` (and `dvc metrics diff`)
    can show how a change moves accuracy. Raises StepError when a metric is below its QUALITY_GATE.
    """
    absent = [name for name in outputs if not (model_dir / name).exists()]
    if absent:
        raise StepError(f"{model_dir / absent[0]}: no trained model to evaluate", fix="run the train step first")
    found = load_recipe(model, repo_root)
    try:
        metrics = found.evaluate(model_dir, seed=seed)
    except ModuleNotFoundError as exc:
        raise missing_framework(exc, model, Path(repo_root)) from None
    if not isinstance(metrics, dict):
        raise StepError(f"models/{model}/{TRAIN_FILE}: evaluate() returned {type(metrics).__name__}, not a dict",
                        fix="return a dict of metric name -> value, e.g. {\"accuracy\": 0.97}")
    md5s = [artifact_md5(model_dir / name) for name in outputs]
    metrics = {**metrics, "seed": seed, "model_md5": ",".join(md5s)}
    (model_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    if enforce_gate:
        for name, minimum in sorted(found.quality_gate.items()):
            value = metrics.get(name)
            if not isinstance(value, (int, float)) or value < minimum:
                raise StepError(f"{model}: {name} {value} is below the quality gate {minimum}",
                                fix=f"improve the model or lower QUALITY_GATE[{name!r}] in models/{model}/{TRAIN_FILE}")
    return metrics


def register(model_dir: Path, repo_root: Path, *, push: bool = False, remote: str | None = None,
             outputs: tuple[str, ...] = (MODEL_FILE,)) -> Path:
    """Track the declared outputs (default `model.pkl`) with DVC (`dvc add`), optionally `dvc push` them, and
    return the first pointer's path.

    `push` sends the weights to `remote` (a remote name from .dvc/config; None: the default remote).

    Writes `<model_dir>/<output>.dvc` (commit it) and adds `/<output>` to `<model_dir>/.gitignore`.
    DVC failures are raised as StepError; reconciler.build.pipeline_runner turns them into ArtifactError.
    """
    targets = [model_dir / name for name in outputs]
    for weights in targets:
        if not weights.exists():
            raise StepError(f"{weights}: nothing to register", fix="run the train step first")
    weights = targets[0]
    try:
        from dvc.exceptions import DvcException
        from dvc.repo import Repo
    except ImportError as exc:  # pragma: no cover - dvc is a project dependency
        raise StepError(f"dvc is not importable: {exc}", fix="pip install dvc==3.67.1") from None
    dvc_logger = logging.getLogger("dvc")
    level = dvc_logger.level
    dvc_logger.setLevel(logging.WARNING)  # not dvc's "To track the changes with git, run: ..." hint
    try:
        with Repo(str(repo_root)) as repo:
            repo.add([str(t.resolve()) for t in targets])
            if push:
                repo.push(targets=[str(t.resolve()) for t in targets], remote=remote)
    except (DvcException, OSError, ValueError, RuntimeError) as exc:  # scmrepo/dvc-data raise plain errors too
        raise StepError(f"dvc could not track {weights}: {type(exc).__name__}: {exc}",
                        fix=f"run `dvc add {weights}` in {repo_root} to see the full error; "
                            "the repository needs `dvc init` state (.dvc/config)") from None
    finally:
        dvc_logger.setLevel(level)
    pointer = model_dir / (outputs[0] + ".dvc")
    if not pointer.is_file():  # pragma: no cover - dvc writes it
        raise StepError(f"dvc add did not write {pointer}")
    return pointer


@dataclass(frozen=True)
class StepDef:
    """One node of the train DAG. The Argo DAG and the local runner are both built from STEPS."""

    name: str
    depends: tuple[str, ...]
    description: str


STEPS: tuple[StepDef, ...] = (
    StepDef("train", (), "fit the estimator on the training split and write model.pkl"),
    StepDef("evaluate", ("train",), "score the held-out split, write metrics.json, enforce the quality gate"),
    StepDef("register", ("evaluate",), "dvc add model.pkl (and dvc push when a remote is given)"),
)


def dag_order(steps: tuple[StepDef, ...] = STEPS) -> list[StepDef]:
    """Steps in an order where every step comes after the steps it depends on (stable, Kahn)."""
    by_name = {s.name: s for s in steps}
    for step in steps:
        for dep in step.depends:
            if dep not in by_name:
                raise StepError(f"step {step.name!r} depends on unknown step {dep!r}")
    done: list[StepDef] = []
    seen: set[str] = set()
    pending = list(steps)
    while pending:
        ready = [s for s in pending if set(s.depends) <= seen]
        if not ready:
            raise StepError("the step graph has a cycle: " + ", ".join(s.name for s in pending))
        for step in ready:
            done.append(step)
            seen.add(step.name)
            pending.remove(step)
    return done


# --------------------------------------------------------------------------- entry point for script templates


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.steps", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="step", required=True)
    for name in ("train", "evaluate"):
        p = sub.add_parser(name)
        p.add_argument("--model", required=True)
        p.add_argument("--model-dir", required=True, type=Path)
        p.add_argument("--seed", type=int, default=SEED)
        p.add_argument("--repo-root", type=Path, default=Path("."), help="where models/<model>/train.py is")
        p.add_argument("--output", action="append", dest="outputs",
                       help=f"an artifact train() writes, as model.yaml declares it (repeatable; default {MODEL_FILE})")
    p = sub.add_parser("register")
    p.add_argument("--output", action="append", dest="outputs", help=f"an artifact to dvc add (default {MODEL_FILE})")
    p.add_argument("--model-dir", required=True, type=Path)
    p.add_argument("--repo-root", required=True, type=Path)
    p.add_argument("--push", action="store_true", help="dvc push to the default remote")
    p.add_argument("--push-remote", default="", help="dvc push to this remote (empty: do not push unless --push)")
    args = parser.parse_args(argv)
    try:
        outputs = tuple(args.outputs or (MODEL_FILE,))
        if args.step == "train":
            print(train(args.model, args.model_dir, seed=args.seed, repo_root=args.repo_root, outputs=outputs))
        elif args.step == "evaluate":
            print(json.dumps(evaluate(args.model, args.model_dir, seed=args.seed, repo_root=args.repo_root,
                                      outputs=outputs), sort_keys=True))
        else:
            print(register(args.model_dir, args.repo_root, push=args.push or bool(args.push_remote),
                           remote=args.push_remote or None, outputs=outputs))
    except StepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    from pipelines.numerics import ensure_pinned

    ensure_pinned()  # before numpy loads: the BLAS kernel is chosen then (pipelines/numerics.py)
    sys.exit(main())
