"""A training environment per model: which lock a model trains, is evaluated, registered and served with.

A model folder may carry its own `requirements.lock` (`models/<name>/requirements.lock`); without one it
takes the shared `pipelines/requirements.lock`. Every path that installs a model's libraries installs
exactly that file: the local runner (a virtual environment per lock, cached by the lock's hash outside the
repository: reconciler/build/pipeline_runner.py), the Argo train / evaluate / register steps
(pipelines/train.py), the Neuron export step, and the model's Bento (its bentofile's `python.packages`
become the lock's pins). The lock is part of the model's content hash (reconciler/source/hashing.py).

A lock is a pip requirements file of exact pins only (`name==version`, comments and blank lines allowed),
so that two installs of it are the same libraries. A PyTorch build variant is a local version
(`torch==2.13.0+cpu`): PyTorch publishes those on its own index per variant (`PYTORCH_INDEXES`), which
`index_options` adds to an install when no local wheel directory already holds the file.

`missing_imports` is the plan-time check: the third-party modules a model's Python files import (by `ast`)
that its lock does not provide.

Only the standard library: this runs in step images and in fresh per-model environments.
"""

from __future__ import annotations

import ast
import hashlib
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .errors import StepError

LOCK_NAME = "requirements.lock"
SHARED_LOCK = f"pipelines/{LOCK_NAME}"

# an import name -> the distribution that provides it, where the two differ (the usual suspects); any other
# import is looked up by its own name (canonicalized: `lightgbm` -> lightgbm, `torch` -> torch)
IMPORT_PROVIDERS: dict[str, str] = {
    "sklearn": "scikit-learn", "skimage": "scikit-image", "PIL": "pillow", "yaml": "pyyaml", "cv2": "opencv-python",
    "bs4": "beautifulsoup4", "dateutil": "python-dateutil", "google.protobuf": "protobuf", "attr": "attrs",
    "jwt": "pyjwt", "Crypto": "pycryptodome", "sentencepiece": "sentencepiece", "onnxruntime": "onnxruntime",
}
# provided by the platform, not by a model's lock: BentoML is installed in every Bento by BentoML itself, and the
# Neuron SDK packages by the inferentia image overlay (reconciler/catalog/accelerators.py)
PLATFORM_PROVIDED = frozenset({"bentoml", "torch_neuronx", "neuronxcc", "torch_xla",
                               "pipelines"})  # the platform's own package: shared code staged into every Bento
# PyTorch's own package index per local version (its build variant): https://pytorch.org/get-started/locally/
PYTORCH_INDEXES = {"cpu": "https://download.pytorch.org/whl/cpu"}
PYTORCH_INDEXES.update({f"cu{v}": f"https://download.pytorch.org/whl/cu{v}" for v in ("118", "121", "124", "126", "128")})
PYTORCH_PACKAGES = frozenset({"torch", "torchvision", "torchaudio"})

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[A-Za-z0-9,._-]+\])?==([A-Za-z0-9.+!_-]+)$")


class LockError(StepError):
    """A lock that is not a list of exact pins; `fix` says what to change."""


def canonical(name: str) -> str:
    """PEP 503 normalized distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Lock:
    path: str  # repository-relative: models/<name>/requirements.lock or pipelines/requirements.lock
    pins: dict[str, str]  # canonical name -> version (with its local part: 2.13.0+cpu)
    own: bool  # the model's own lock (else the shared fallback)

    def requirements(self) -> list[str]:
        """`name==version` lines, sorted: what a bentofile's python.packages lists."""
        return [f"{name}=={version}" for name, version in sorted(self.pins.items())]


def lock_relpath(root: Path, model: str) -> str:
    """The lock of `model`: its own `models/<model>/requirements.lock`, else the shared one."""
    own = f"models/{model}/{LOCK_NAME}"
    return own if (Path(root) / own).is_file() else SHARED_LOCK


def parse_lock(text: str, shown: str) -> dict[str, str]:
    """The pins of a lock's text (canonical name -> version). LockError for anything but exact pins."""
    pins: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        found = _PIN.match(line.replace(" ", ""))
        if not found:
            raise LockError(f"{shown}:{number}: {line!r} is not an exact pin (name==version)",
                            fix=f"pin one exact version per line in {shown}, e.g. numpy==2.4.6; a package index is "
                                "not written in the lock (PyTorch's variant indexes come from its +cpu / +cuXXX version)")
        name = canonical(found.group(1))
        if name in pins:
            raise LockError(f"{shown}:{number}: {found.group(1)} is pinned twice", fix=f"keep one pin of it in {shown}")
        pins[name] = found.group(3)
    return pins


def lock_file(root: Path, model: str) -> Path:
    """The file of `model`'s lock; a repository without its own pipelines/ takes the platform's shared lock."""
    path = Path(root) / lock_relpath(root, model)
    return path if path.is_file() else Path(__file__).with_name(LOCK_NAME)


def read_lock(root: Path, model: str) -> Lock:
    rel = lock_relpath(root, model)
    path = lock_file(root, model)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise LockError(f"{rel} cannot be read: {exc}", fix=f"restore {rel}") from None
    return Lock(rel, parse_lock(text, rel), rel != SHARED_LOCK)


def lock_digest(data: bytes) -> str:
    """The cache key of a lock's environment: sha256 of its bytes and of the Python it runs on."""
    h = hashlib.sha256(f"py{sys.version_info.major}.{sys.version_info.minor}\0".encode())
    h.update(data)
    return h.hexdigest()


def index_options(pins: dict[str, str], find_links: list[str] | None = None) -> list[str]:
    """The extra package indexes an install of `pins` needs: PyTorch's variant index for a `+cpu` / `+cuXXX`
    pin of torch (torchvision, torchaudio), unless a local wheel directory in `find_links` already holds it."""
    extra: list[str] = []
    for name, version in sorted(pins.items()):
        local = version.partition("+")[2]
        if name not in PYTORCH_PACKAGES or local not in PYTORCH_INDEXES:
            continue
        wheel = f"{name.replace('-', '_')}-{version}-"
        if any(entry.name.startswith(wheel) for folder in (find_links or []) if os.path.isdir(folder)
               for entry in os.scandir(folder)):
            continue
        if PYTORCH_INDEXES[local] not in extra:
            extra.append(PYTORCH_INDEXES[local])
    return [arg for url in extra for arg in ("--extra-index-url", url)]


# --------------------------------------------------------------------------- plan-time import check


def imported_modules(source: bytes) -> list[tuple[int, str]]:
    """(line, dotted module) of every absolute import of a module (relative imports are the model's own)."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def provider(module: str) -> str:
    """The distribution (canonical) that provides the dotted `module`."""
    for name in (module, module.split(".")[0]):
        if name in IMPORT_PROVIDERS:
            return canonical(IMPORT_PROVIDERS[name])
    return canonical(module.split(".")[0])


@dataclass(frozen=True)
class MissingImport:
    file: str  # repository-relative
    line: int
    module: str
    package: str  # the distribution to add to the lock


def missing_imports(files: dict[str, bytes], pins: dict[str, str], local: set[str],
                    imports: Callable[[bytes], list[tuple[int, str]]] = imported_modules) -> list[MissingImport]:
    """Third-party imports of `files` (repository path -> source) that the lock's `pins` do not provide.

    `local` are the top-level names that resolve inside the repository or the model folder (its own modules,
    `pipelines`): they are shared code, not packages. The standard library and PLATFORM_PROVIDED are skipped.
    `imports`: `imported_modules`, or a caller's equal that remembers its parses (reconciler/source/facts.py)."""
    missing = []
    for path, source in sorted(files.items()):
        for line, module in imports(source):
            top = module.split(".")[0]
            if top in sys.stdlib_module_names or top in local or top in PLATFORM_PROVIDED or top == "__future__":
                continue
            package = provider(module)
            if package not in pins:
                missing.append(MissingImport(path, line, module, package))
    return missing
