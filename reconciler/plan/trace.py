"""The plan's trace check: a model that a compile recipe with `planCheck: trace` compiles (a PyTorch model for
inf2: pipelines/recipes/torch-neuronx-trace.yaml) is traced on CPU with the input shapes and dtypes its model.yaml
declares, before the merge. A model that cannot be traced with static shapes (data-dependent control flow, a
dynamic shape) would otherwise pass the PR check and fail, or compile wrongly, on an inf2 node after the merge.

The trace runs the model's own framework in the model's own environment (reconciler.catalog.environments: a venv
of its lock, cached by the lock's hash), in a subprocess: `python -m <recipe module> check ...`, which prints one
JSON document of problems. The reconciler never imports torch. The trained weights are read from a copy already
on this machine (the working tree, DVC's cache or a local-directory remote: weights.local_copy); a model whose
weights are nowhere local is not traced (the merge's export step runs the same check).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Callable, Iterable

from reconciler.catalog.accelerators import NEEDS_COMPILE, recipe_for
from reconciler.catalog.environments import platform_path, training_python
from reconciler.catalog.load import Catalog, ModelEntry, placements
from reconciler.catalog.recipes import CompileRecipe
from reconciler.errors import ReconcilerError, SpecError, SpecProblem

TRACE_TIMEOUT = 600.0


def traced_recipe(catalog: Catalog, entry: ModelEntry) -> CompileRecipe | None:
    """The recipe that traces `entry` at plan time: the one its architecture chooses for a compiling pool it is
    placed on in some environment, when that recipe declares `planCheck: trace`. Pure."""
    for env in catalog.environments.values():
        try:
            pools = placements(entry, env, catalog.pools)
        except SpecError:
            continue
        for pool in pools:
            if pool.kind in NEEDS_COMPILE:
                recipe = recipe_for(entry.spec.architecture, pool.kind, catalog.recipes.recipes)
                if recipe is not None and recipe.plan_check == "trace":
                    return recipe
    return None


def check_command(python: Path, recipe: CompileRecipe, entry: ModelEntry, artifact: Path) -> list[str]:
    """The subprocess that traces `entry` with its declared inputs (run from the repository root)."""
    image = entry.spec.images.get("inferentia")
    shapes = (image.input_shapes if image is not None else None) or []
    dtypes = (image.input_dtypes if image is not None else None) or ["float32"] * len(shapes)
    command = [str(python), "-m", recipe.module, "check", "--model-dir", entry.rel, "--artifact", str(artifact)]
    for shape, dtype in zip(shapes, dtypes):
        command += ["--input-shape", ",".join(str(d) for d in shape), "--input-dtype", dtype]
    return command


def problems_of(entry: ModelEntry, recipe: CompileRecipe, stdout: str) -> SpecError | None:
    """The model error of a check's JSON output (None: traceable)."""
    try:
        result = json.loads(stdout.strip().splitlines()[-1])
        found = [p for p in result["problems"] if isinstance(p, dict)]
    except (ValueError, IndexError, KeyError, TypeError):
        return None
    if not found:
        return None
    problems = []
    for p in found:
        where = f"{entry.rel}/{p['file']}" if p.get("file") else f"{entry.rel}/model.yaml"
        problems.append(SpecProblem(where, f"{entry.name} cannot be compiled for inferentia by the {recipe.name} "
                                           f"recipe: {p.get('message', '')}",
                                    line=p.get("line") or None, field=None if p.get("file") else "architecture",
                                    fix=str(p.get("fix") or "")))
    return SpecError(problems)


def trace_errors(root: Path, catalog: Catalog, outputs: dict[str, list],
                 locate: Callable[[Path, str, str], Path | None]) -> dict[str, ReconcilerError]:
    """{model: error} for the changed models (`outputs`: their tracked weights) whose recipe traces them at plan
    time and whose trace fails. A model without `images.inferentia.inputShapes` is told to declare them."""
    errors: dict[str, ReconcilerError] = {}
    for name, found in sorted(outputs.items()):
        entry = catalog.models.get(name)
        recipe = traced_recipe(catalog, entry) if entry is not None else None
        if entry is None or recipe is None:
            continue
        image = entry.spec.images.get("inferentia")
        if image is None or not image.input_shapes:
            errors[name] = SpecError.single(
                f"{entry.rel}/model.yaml", f"{name} is compiled for inferentia by the {recipe.name} recipe, which "
                "traces it with static input shapes, but model.yaml declares none", field="images.inferentia.inputShapes",
                fix="declare them, batch first, with their dtypes: images: {inferentia: {inputShapes: [[1, 13]], "
                    "inputDtypes: [float32]}}")
            continue
        weights = next((path for o in found if o.checksum.startswith("md5:")
                        and (path := locate(root, o.path, o.checksum[4:])) is not None), None)
        if weights is None:
            continue  # nowhere on this machine: the merge's export step traces it
        try:
            python = training_python(root, name)
        except ReconcilerError as exc:
            errors[name] = exc
            continue
        env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
        env["PYTHONPATH"] = str(platform_path())
        try:
            done = subprocess.run(check_command(python, recipe, entry, weights), cwd=root, env=env,
                                  capture_output=True, text=True, timeout=TRACE_TIMEOUT, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            errors[name] = ReconcilerError(f"{name}: tracing it on CPU took longer than {TRACE_TIMEOUT:.0f} s",
                                           fix=f"make load() in {entry.rel}/train.py and forward() fast on CPU")
            continue
        problem = problems_of(entry, recipe, done.stdout)
        if problem is not None:
            errors[name] = problem
        elif done.returncode != 0:
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-4:])
            errors[name] = ReconcilerError(f"{name}: the {recipe.name} trace check failed: {tail}",
                                           fix=f"run `python -m {recipe.module} check --model-dir {entry.rel} ...` in "
                                               "the model's environment to see the full error")
    return errors


def untraced(catalog: Catalog, changed: Iterable[str], why: str = "--no-trace") -> list[str]:
    """What a plan that runs no model code (`reconciler plan --no-trace`) says of each changed model its recipe
    would trace: "not traced", never passed, like a Secret the plan cannot decrypt ("not verified"). Pure."""
    found = []
    for name in sorted(changed):
        entry = catalog.models.get(name)
        recipe = traced_recipe(catalog, entry) if entry is not None else None
        if entry is not None and recipe is not None:
            found.append(f"{name}: not traced: the plan ran no model code ({why}), so the {recipe.name} "
                         f"recipe's trace check of {entry.rel} did not run; its result is the separate trace check's")
    return found
