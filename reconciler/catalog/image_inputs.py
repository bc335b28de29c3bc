"""What goes into a model's image for one pool kind beyond the model's own sources: the kind's part of its tag.

A model's content hash (reconciler.source.hashing) covers its sources. The image built for a pool kind also holds:

- the kind's built-in bentofile overlay (reconciler.catalog.kinds.kind_overlay): the CUDA base of gpu, the Neuron
  packages, setup script and Python of inferentia, and the environment every kind's image carries
  (MODEL_ACCELERATOR_KIND, MODEL_DEVICE_GLOBS, ...), for the Neuron SDK release the model pins;
- for a kind whose models are compiled (KindProfile.compile_needed), the compile recipe the model's `architecture:`
  chooses (pipelines/recipes/): its module, artifact and the bytes of its code files (CompileRecipe.inputs); no
  recipe is an input too.

`kind_inputs` lists them (name -> id), `KindDigests.of` reduces them to one sha256 per (model, kind), and
reconciler.catalog.images.image_tag folds that into the kind's tag only: a CUDA change gives the models new
`-cuda` tags and leaves their cpu and Neuron tags alone; a change to the dense recipe's code gives new `-neuron`
tags to the models it compiles. Deterministic: canonical JSON of data (no path, clock or CPU of the machine),
the same on every machine. Left out: the build machine's CPU base image (RECONCILER_BENTO_BASE_IMAGE, see
reconciler.build.builder.bentofile_overlay), which a builder sets for itself.
"""

from __future__ import annotations

import hashlib
import json

from reconciler.catalog.accelerators import neuron_sdk, recipe_for
from reconciler.catalog.kinds import kind_overlay, profile
from reconciler.catalog.recipes import CompileRecipe

INPUTS_VERSION = "kind-image/v1"
OVERLAY = "overlay"  # the key of the kind's overlay among a kind's inputs
RECIPE = "recipe"  # the key naming the chosen compile recipe (or 'none')


def overlay_digest(kind: str, sdk: str | None = None) -> str:
    """sha256 of the kind's built-in bentofile overlay (files included) for a Neuron SDK release (None: the pin)."""
    overlay = kind_overlay(kind, sdk=neuron_sdk(sdk) if sdk else None)
    return "sha256:" + hashlib.sha256(json.dumps(overlay, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _sdk_of(spec: object, kind: str) -> str | None:
    own = getattr(spec, "images", {}).get(kind)
    return getattr(own, "neuron_sdk", None) if own is not None else None


def kind_inputs(spec: object, kind: str, recipes: tuple[CompileRecipe, ...], *,
                overlays: dict[tuple[str, str | None], str] | None = None) -> dict[str, str]:
    """What goes into the model's (`spec`: its ModelSpec) image for `kind` beyond its sources: name -> id. Pure.
    `overlays` memoizes overlay digests across models (one per kind and SDK release)."""
    sdk = _sdk_of(spec, kind)
    memo = overlays if overlays is not None else {}
    if (kind, sdk) not in memo:
        memo[(kind, sdk)] = overlay_digest(kind, sdk)
    return _with_recipe({OVERLAY: memo[(kind, sdk)]}, spec, kind, recipes)


def _with_recipe(found: dict[str, str], spec: object, kind: str, recipes: tuple[CompileRecipe, ...]) -> dict[str, str]:
    if not profile(kind).compile_needed:
        return found
    recipe = recipe_for(getattr(spec, "architecture", None), kind, recipes)
    found[RECIPE] = recipe.name if recipe is not None else "none"
    if recipe is not None:
        found.update(recipe.inputs)
    return found


def digest(inputs: dict[str, str]) -> str:
    """One sha256 of a kind's inputs (sorted, versioned)."""
    h = hashlib.sha256(INPUTS_VERSION.encode() + b"\n")
    for name in sorted(inputs):
        h.update(f"{name}\0{inputs[name]}\n".encode())
    return h.hexdigest()


def changed(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """The inputs that differ, for a plan: 'the gpu overlay', 'compile recipe torch-neuronx-dense -> ...', paths."""
    names = sorted(n for n in set(before) | set(after) if before.get(n) != after.get(n))
    out = []
    for name in names:
        if name == OVERLAY:
            out.append("the kind's built-in bentofile overlay (reconciler/catalog/accelerators.py)")
        elif name == RECIPE:
            out.append(f"the compile recipe ({before.get(name, 'none')} -> {after.get(name, 'none')})")
        elif before.get(RECIPE) == after.get(RECIPE):  # the same recipe's module or code changed
            out.append(name.replace("#build", ".yaml (module, artifact)"))
    return out


class KindDigests:
    """The kind digests of a catalog's models, memoized: what image tags are computed with (one per model and kind).

    `recipes` are the catalog's (Catalog.recipes.recipes); `of(spec, kind)` is digest(kind_inputs(...))."""

    def __init__(self, recipes: tuple[CompileRecipe, ...]) -> None:
        self.recipes = recipes
        self._overlays: dict[tuple[str, str | None], str] = {}
        self._digests: dict[tuple[str, str | None, str | None], str] = {}

    def inputs(self, spec: object, kind: str) -> dict[str, str]:
        return kind_inputs(spec, kind, self.recipes, overlays=self._overlays)

    def of(self, spec: object, kind: object) -> str:
        name = str(kind)
        key = (name, _sdk_of(spec, name), getattr(spec, "architecture", None))  # all a kind's inputs depend on
        found = self._digests.get(key)
        if found is None:
            found = self._digests[key] = digest(self.inputs(spec, name))
        return found
