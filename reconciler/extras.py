"""Optional dependencies: which extra brings which import, and the error that names the extra.

Core (`pip install model-gitops-reconciler`) is what the in-cluster reconciler and a PR plan need.
The heavy libraries are extras (pyproject.toml, requirements/*.txt). Code that needs one either
calls :func:`require` before starting (a command), or lets the import fail and the command layer
turns the ModuleNotFoundError into :class:`MissingExtraError` with :func:`missing_extra`.
"""

from __future__ import annotations

import importlib.util

from reconciler.errors import ReconcilerError

DISTRIBUTION = "model-gitops-reconciler"

# extra -> the top-level modules it provides (the ones this code imports)
EXTRAS: dict[str, tuple[str, ...]] = {
    "build": ("bentoml", "dvc"),
    "pipelines": ("hera",),
    "canary": ("scipy",),
    "report": ("matplotlib",),
    "examples": ("sklearn",),
}
_EXTRA_OF = {module: extra for extra, modules in EXTRAS.items() for module in modules}

# the heavy libraries: imported only inside the function that needs them, never at module level (ruff TID253
# with pyproject.toml's banned-module-level-imports, which must name the same: tests/test_layout.py). The optional
# ones, and the schema validators that only a render that validates needs (about a sixth of a plan's start-up)
HEAVY = ("bentoml", "dvc", "hera", "kubernetes", "matplotlib", "scipy", "torch", "jsonschema", "jsonschema_rs",
         "referencing")


class MissingExtraError(ReconcilerError):
    """A command needs a library that only an extra installs."""

    def __init__(self, module: str, extra: str) -> None:
        self.module, self.extra = module, extra
        super().__init__(f"{module} is not installed: it comes with the [{extra}] extra",
                         fix=f"pip install '{DISTRIBUTION}[{extra}]' (in a checkout: pip install -e '.[{extra}]')")


def missing_extra(exc: ImportError) -> MissingExtraError | None:
    """The extra that provides the module an ImportError is about, if it is one of ours."""
    module = (getattr(exc, "name", None) or "").split(".")[0]
    extra = _EXTRA_OF.get(module)
    return MissingExtraError(module, extra) if extra else None


def require(*extras: str) -> None:
    """Raise MissingExtraError for the first module of these extras that is not installed."""
    for extra in extras:
        for module in EXTRAS[extra]:
            if importlib.util.find_spec(module) is None:
                raise MissingExtraError(module, extra)
