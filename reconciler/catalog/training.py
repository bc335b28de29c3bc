"""Plan-time checks of a model's training environment: its lock is a list of exact pins, and every package its
Python files import is in it (pipelines/locks.py).

A model importing a framework its lock does not pin would pass the PR check and then fail in the Argo train
step (`ModuleNotFoundError`) or in its Bento: here it is a model error naming the file, the line, the package
and the lock to add it to. The standard library, BentoML (every Bento has it) and the repository's own
modules (`pipelines`, a model's helper module) are not packages of the lock.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from pipelines.locks import SHARED_LOCK, LockError, lock_relpath, missing_imports, parse_lock
from reconciler.catalog.kinds import profile
from reconciler.errors import SpecProblem
from reconciler.source import guard
from reconciler.source.facts import absolute_imports


def _importable(base: Path) -> frozenset[str]:
    names: set[str] = set()
    try:
        entries = list(base.iterdir())
    except OSError:
        return frozenset()
    for entry in entries:
        if entry.suffix == ".py":
            names.add(entry.stem)
        elif entry.is_dir() and not entry.name.startswith("."):
            names.add(entry.name)  # a package (or a namespace package)
    return frozenset(names)


@functools.lru_cache(maxsize=16)
def _importable_at(base: str, changed: int) -> frozenset[str]:
    """The root's names, read once per catalog rather than once per model (`changed`: the folder's mtime,
    which an added or removed entry changes)."""
    return _importable(Path(base))


def local_modules(root: Path, folder: Path) -> set[str]:
    """Top-level names importable from the repository root or the model folder: modules, not packages."""
    try:
        top = _importable_at(str(root), os.stat(root).st_mtime_ns)
    except OSError:
        top = frozenset()
    return set(top) | _importable(folder)


@functools.lru_cache(maxsize=64)
def _pins(text: str, rel: str) -> dict[str, str]:
    """A lock's pins, parsed once per text (the shared lock is every model's without its own). Read only."""
    return parse_lock(text, rel)


@functools.cache
def _platform_lock() -> Path:
    """The platform's shared lock (this installation's pipelines/), for a repository without its own."""
    return Path(__file__).resolve().parents[2] / SHARED_LOCK


def _read_lock(root: Path, path: Path, rel: str) -> str:
    return guard.read_text(root, path, display=rel) if path.is_relative_to(root) else path.read_text(encoding="utf-8")


def lock_problems(root: Path, folder: Path, kinds: set[str] | frozenset[str] = frozenset(),
                  service: str = "service.py", *, texts: dict[str, str | OSError] | None = None) -> list[SpecProblem]:
    """The model folder's lock problems: an unreadable or unpinned lock, and imports it does not provide.

    `kinds`: the pool kinds the model may be served from (their images add packages for `service`).
    `texts`: the lock texts (or read errors) already read in this catalog load, by path: the shared lock
    is every model's without its own, read once per load (a later load reads it again)."""
    model = folder.name
    rel = lock_relpath(root, model)
    path = root / rel
    if not path.is_file():  # a repository without its own shared lock trains with the platform's
        path = _platform_lock()
    try:
        if texts is None or rel != SHARED_LOCK:  # (a model's own lock is read by that model only)
            text = _read_lock(root, path, rel)
        else:
            key = f"{path}\0{rel}"
            if key not in texts:
                try:
                    texts[key] = _read_lock(root, path, rel)
                except OSError as exc:  # (a guard refusal is a SpecError: raised, not kept, as before)
                    texts[key] = exc
            found = texts[key]
            if isinstance(found, OSError):
                raise found
            text = found
        pins = _pins(text, rel)
    except (LockError, OSError) as exc:
        message = exc.message if isinstance(exc, LockError) else f"{rel} cannot be read: {exc}"
        return [SpecProblem(rel, message, fix=getattr(exc, "fix", None) or f"restore {rel}")]
    sources = {}
    try:  # os.scandir: pathlib's glob was among the largest per-model costs of a catalog load under the profiler
        names = sorted(e.name for e in os.scandir(folder) if e.name.endswith(".py"))
    except OSError:
        names = []
    for file in (folder / name for name in names):
        shown = f"models/{model}/{file.name}"
        sources[shown] = guard.read_bytes(root, file, display=shown)
    own = f"models/{model}/requirements.lock"
    problems = []
    extra = {name for kind in kinds for name in profile(kind).service_provides}  # what the kind's image adds
    for miss in missing_imports(sources, pins, local_modules(root, folder), absolute_imports):
        if miss.file == f"models/{model}/{service}" and miss.module.split(".")[0] in extra:
            continue
        fix = (f"add {miss.package}==<version> to {own}" if rel == own else
               f"create {own} (start from a copy of {rel}) and add {miss.package}==<version> to it: "
               f"the model then trains, is registered and is served with its own lock")
        problems.append(SpecProblem(miss.file, f"imports {miss.module}, but the model's lock {rel} does not pin "
                                               f"{miss.package}: its Argo train step and its Bento would not have it",
                                    line=miss.line, fix=fix))
    return problems
