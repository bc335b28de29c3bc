"""The compile-recipe registry: one entry per recipe in the repository's `pipelines/recipes/<name>.yaml`.

A recipe turns trained weights into an accelerator artifact (today: Inferentia, through torch-neuronx). A
platform team adds one by adding an entry file and its conversion module to `pipelines/recipes/` of the
repository, not by editing the reconciler. An entry declares:

    name: torch-neuronx-dense            # the file's stem
    target: inferentia                   # the accelerator kind it compiles for
    architectures: [sklearn-mlp, ...]    # the `architecture:` values of model.yaml it accepts (the recipe choice)
    module: pipelines.neuron             # `python -m <module> export|compile ...` (the workflow's two steps)
    code: [pipelines/neuron.py, ...]     # the files whose bytes are in the compile cache key
    artifact: pickle | torch             # what the weights must be (checked against them at plan time)
    planCheck: none | trace              # trace: the PR check traces the model on CPU with the declared shapes
    description: ...

The plan reads the entries as data (never imports their modules); the workflows run the modules. A repository
without `pipelines/recipes/` takes the platform's own entries (those of the installed `pipelines` package).
Pure but for reading the entry files.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from reconciler.catalog.fields import Strict
from reconciler.catalog.files import load
from reconciler.errors import ReconcilerError, SpecError, SpecProblem
from reconciler.source import guard

RECIPES_DIR = "pipelines/recipes"
ARTIFACT_KINDS = ("pickle", "torch")  # what reconciler.plan.weights can tell a weights file is
PLAN_CHECKS = ("none", "trace")


class RecipeEntry(Strict):
    """pipelines/recipes/<name>.yaml"""

    name: str
    target: str = Field(..., description="the accelerator kind it compiles for (inferentia)")
    architectures: list[str] = Field(..., min_length=1, description="model.yaml `architecture:` values it accepts")
    module: str = Field(..., pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$",
                        description="the conversion: `python -m <module> export|compile`")
    code: list[str] = Field(default_factory=list, description="files (repository paths) in the compile cache key")
    artifact: Literal["pickle", "torch"] = Field("pickle", description="what the trained weights are")
    plan_check: Literal["none", "trace"] = Field("none", alias="planCheck",
                                                 description="trace: the PR check traces the model on CPU")
    description: str = ""

    @field_validator("code")
    @classmethod
    def _inside(cls, value: list[str]) -> list[str]:
        for path in value:
            if path.startswith("/") or ".." in Path(path).parts:
                raise ValueError(f"{path!r} must be a path inside the repository (relative, no '..')")
        return value


@dataclass(frozen=True)
class CompileRecipe:
    """A conversion of trained weights into an accelerator artifact, and the architectures it accepts.

    `architectures` are the values a model declares in `model.yaml` (`architecture:`); `code` are the repository
    files holding the conversion, whose content is part of the compile cache key; `module` runs it.
    """

    name: str
    target: str  # the accelerator kind (reconciler.catalog.kinds)
    architectures: frozenset[str]
    code: tuple[str, ...]
    module: str = "pipelines.neuron"
    artifact: str = "pickle"
    plan_check: str = "none"
    description: str = ""
    file: str = ""  # the entry it was read from, repository-relative
    # what of it goes into the image it compiles for (target, module, artifact, each code file's sha256):
    # path -> id, read by reconciler.catalog.image_inputs into that kind's image tag
    inputs: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Registry:
    """The recipes of a repository, and the entries that could not be read (reported to the models needing one)."""

    recipes: tuple[CompileRecipe, ...]
    errors: tuple[SpecProblem, ...] = ()
    folder: str = RECIPES_DIR


def packaged_folder() -> Path:
    """The platform's own entries: `recipes/` of the installed `pipelines` package (found, not imported: the
    catalog reads the entries as data)."""
    spec = importlib.util.find_spec("pipelines")
    origin = spec.origin if spec is not None else None
    return Path(origin).resolve().parent / "recipes" if origin else Path(__file__).resolve().parents[2] / RECIPES_DIR


def recipes_folder(root: Path) -> Path:
    """The repository's `pipelines/recipes/`, else the platform's."""
    own = Path(root) / RECIPES_DIR
    return own if own.is_dir() else packaged_folder()


def load_registry(root: Path) -> Registry:
    """Every `*.yaml` entry of the repository's recipe folder, validated (file, line and fix on an error)."""
    folder = recipes_folder(root)
    inside = folder == Path(root) / RECIPES_DIR
    recipes: list[CompileRecipe] = []
    problems: list[SpecProblem] = []
    for path in sorted(folder.glob("*.yaml")):
        shown = f"{RECIPES_DIR}/{path.name}"
        try:
            entry: RecipeEntry = load(RecipeEntry, path, display=shown, root=Path(root) if inside else folder)
        except SpecError as exc:
            problems.extend(exc.problems)
            continue
        if entry.name != path.stem:
            problems.append(SpecProblem(shown, f"name {entry.name!r} does not match the file's name {path.stem!r}",
                                        field="name", fix=f"set name: {path.stem} (one entry per recipe, named after it)"))
            continue
        base = Path(root) if inside else folder.parent.parent  # code paths are repository paths
        recipes.append(CompileRecipe(entry.name, entry.target, frozenset(entry.architectures), tuple(entry.code),
                                     module=entry.module, artifact=entry.artifact, plan_check=entry.plan_check,
                                     description=entry.description, file=shown, inputs=_inputs(entry, base)))
    return Registry(tuple(recipes), tuple(problems))


def _inputs(entry: RecipeEntry, base: Path) -> tuple[tuple[str, str], ...]:
    """What of a recipe changes the artifact it compiles into an image: where it runs (module), what it takes
    (artifact), and its code files' bytes (sha256; 'missing' or 'unreadable' otherwise, which is input too). Its
    description, planCheck and accepted architectures change the plan, not the artifact."""
    found = {f"{RECIPES_DIR}/{entry.name}#build": "sha256:" + hashlib.sha256(json.dumps(
        {"target": entry.target, "module": entry.module, "artifact": entry.artifact}, sort_keys=True).encode()).hexdigest()}
    for path in entry.code:
        try:
            real = guard.inside(base, path)
            if real.exists() and not real.is_file():  # a folder, a device or a pipe: never opened
                found[path] = "unreadable"
                continue
            with real.open("rb") as fh:  # streamed: a large lock file is never held whole
                found[path] = "sha256:" + hashlib.file_digest(fh, "sha256").hexdigest()
        except FileNotFoundError:
            found[path] = "missing"
        except (OSError, ReconcilerError):  # unreadable, or a link leaving the repository: never read
            found[path] = "unreadable"
    return tuple(sorted(found.items()))


def recipe_named(registry: Registry, name: str) -> CompileRecipe | None:
    return next((r for r in registry.recipes if r.name == name), None)
