"""The render cache: a model's rendered objects, keyed by everything its render reads.

A model's render in an environment is a pure function of: the model's spec and content hash (as
its image references), the environment's spec (less the fields no model object reads), the
environment's overlay folders (`environments/base`, `environments/<env>`), the pools it is placed
on (less their prices), kubectl's kustomize, and the renderer's own code. `render_key` hashes those;
two renders with the same key are the same, so a plan renders only models whose key differs
between its two revisions and takes the rest from this cache, or skips them when the key is the
same on both sides.

Entries are JSON files under `RECONCILER_CACHE` (default `$XDG_CACHE_HOME/model-gitops-reconciler/render`),
written atomically; a corrupt or unreadable entry is a miss. A render that fails for a reason
that is a function of its key (kustomize refused it, schema validation, the PriorityClass check)
is cached too, as its error text (`<key>.error.json`): a model whose inputs did not change keeps
reporting its error without a render. A timeout is never cached.

Beside the renders, `outcomes/` records, per model folder (by its git tree id) and the rest of
the repository outside models/ (by its files' blob ids), which environments the model failed in
and with what error: what an incremental plan needs to report the pre-existing errors of models
the change does not touch, without reading them (see desired.outcomes and plan.outcomes).

The folder is pruned (`RenderCache.prune`, run by the commands that write it, at most every
PRUNE_EVERY seconds): entries not used
for `render_cache_max_age_days` go, then the least recently used until the folder is under
`render_cache_max_bytes` (both in `source.guard.Limits`, so `RECONCILER_RENDER_CACHE_MAX_BYTES`
and `RECONCILER_RENDER_CACHE_MAX_AGE_DAYS`). A hit refreshes its entry's modification time,
which is what "used" means (access times are not reliable: noatime, relatime).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from reconciler.catalog.pools import Pool
from reconciler.catalog.specs import EnvironmentSpec, ModelSpec
from reconciler.errors import RenderError
from reconciler.source import guard
from reconciler.render.kustomize import kubectl_binary
import reconciler

FORMAT = "render-cache/v1"
PRUNE_EVERY = 600.0  # seconds: the commands that write the cache prune it at most this often
# environment.yaml fields that no model object reads (they change the plan, not the render)
ENV_FIELDS_NOT_RENDERED = {"cluster", "budget", "promotes_from"}
POOL_FIELDS_NOT_RENDERED = {"hourly_price"}


@functools.lru_cache(maxsize=1)
def renderer_id() -> str:
    """The renderer's version: its own source (render/, catalog/, labels.py) and kubectl's binary."""

    top = Path(reconciler.__file__).parent
    h = hashlib.sha256(FORMAT.encode())
    for path in sorted([*(top / "render").glob("*.py"), *(top / "catalog").glob("*.py"), top / "labels.py"]):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    try:
        binary = Path(kubectl_binary())
        stat = binary.stat()
        h.update(f"{binary}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
    except Exception:  # no kubectl: render fails later with its own message
        h.update(b"no-kubectl")
    return h.hexdigest()


def folder_digest(folders: list[Path]) -> str:
    """sha256 over the relative paths and bytes of every file under the folders (symlinks as their target)."""
    h = hashlib.sha256()
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*")):
            rel = f"{folder.name}/{path.relative_to(folder).as_posix()}"
            if path.is_symlink():
                h.update(f"L{rel}\0{os.readlink(path)}\0".encode())
            elif path.is_file():
                h.update(f"F{rel}\0".encode() + hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def render_key(model: ModelSpec, env: EnvironmentSpec, pools: list[Pool], images: dict[str, str],
               overlays: str, validate: bool = True, version: dict[str, dict[str, str]] | None = None) -> str:
    """The cache key of one model's render in one environment (see the module docstring); `version` is the
    pods' version annotations by pool kind (model hash, build commit, weights md5). Pure."""
    payload = [
        renderer_id(), validate, overlays,
        env.model_dump(mode="json", exclude=ENV_FIELDS_NOT_RENDERED),
        [p.model_dump(mode="json", exclude=POOL_FIELDS_NOT_RENDERED) for p in pools],
        model.model_dump(mode="json"), images, version or {},
    ]
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def default_folder() -> Path | None:
    explicit = os.environ.get("RECONCILER_CACHE")
    if explicit is not None:
        return Path(explicit) if explicit not in ("", "off", "0") else None
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "model-gitops-reconciler" / "render"


class CachedRenderError(RenderError):
    """A model's render error, read back from the cache: it prints exactly as it did when it happened."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return self.text


def outcome_set_key(model_trees: dict[str, str], shared: str) -> str:
    """The key of the outcomes of every model of a revision at once: each model folder's name and tree id,
    the digest of the rest (`shared`) and the renderer, so it holds exactly the `outcome_key` entries of
    those models. Pure."""
    payload = [renderer_id(), sorted(model_trees.items()), shared]
    return hashlib.sha256(json.dumps(payload, separators=(",", ":")).encode()).hexdigest()


def outcome_key(model_tree: str, shared: str) -> str:
    """The key of one model's recorded outcome: its folder's git tree id, the digest of the repository
    outside models/ (`shared`) and the renderer. Pure."""
    payload = [renderer_id(), model_tree, shared]
    return hashlib.sha256(json.dumps(payload, separators=(",", ":")).encode()).hexdigest()


class RenderCache:
    """Rendered objects by render key, on disk; `folder=None` is a cache that keeps nothing."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self.hits = 0
        self.misses = 0
        self.writes = 0

    def _path(self, key: str, suffix: str = ".json", area: str = "") -> Path:
        assert self.folder is not None
        return self.folder / area / key[:2] / f"{key}{suffix}"

    def _read(self, path: Path) -> dict | None:
        try:
            data = json.loads(path.read_bytes())
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            return None
        try:
            os.utime(path)  # used now: what pruning keeps longest
        except OSError:
            pass
        return data

    def _write(self, path: Path, data: dict) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"format": FORMAT, **data}, f, separators=(",", ":"))
            os.replace(tmp, path)
            self.writes += 1
        except (OSError, TypeError, ValueError):
            pass  # a cache that cannot be written (or an object JSON cannot hold) is only slower

    def get(self, key: str) -> list[dict[str, Any]] | None:
        if self.folder is None:
            return None
        data = self._read(self._path(key))
        objects = data.get("objects") if data is not None else None
        if isinstance(objects, list):
            self.hits += 1
            return objects
        self.misses += 1
        return None

    def has(self, key: str) -> bool:
        """Whether a successful render of the key is cached (no read: a corrupt entry is found at `get`)."""
        return self.folder is not None and self._path(key).is_file()

    def error(self, key: str) -> CachedRenderError | None:
        """The recorded render error of a key, if its render failed."""
        if self.folder is None:
            return None
        data = self._read(self._path(key, ".error.json"))
        if data is None or not isinstance(data.get("error"), str):
            return None
        self.hits += 1
        return CachedRenderError(data["error"])

    def put(self, key: str, objects: list[dict[str, Any]]) -> None:
        if self.folder is not None:
            self._write(self._path(key), {"objects": objects})

    def put_error(self, key: str, text: str) -> None:
        if self.folder is not None:
            self._write(self._path(key, ".error.json"), {"error": text})

    def outcome(self, key: str) -> dict[str, str | None]:
        """A model's recorded outcome (see `outcome_key`): environment -> its error text, or None when it
        rendered; environments it was not recorded in are missing."""
        if self.folder is None:
            return {}
        data = self._read(self._path(key, area="outcomes"))
        errors = data.get("errors") if data is not None else None
        if not isinstance(errors, dict):
            return {}
        return {str(e): t for e, t in errors.items() if t is None or isinstance(t, str)}

    def put_outcome(self, key: str, errors: dict[str, str | None]) -> None:
        if self.folder is not None:
            self._write(self._path(key, area="outcomes"), {"errors": errors})

    def outcome_set(self, key: str) -> dict[str, dict[str, str | None]] | None:
        """Every model's recorded outcome at one revision (see `outcome_set_key`), or None when not recorded:
        one file read instead of one per model (10,000 at 10,000 models)."""
        if self.folder is None:
            return None
        data = self._read(self._path(key, area="outcome-sets"))
        groups = data.get("groups") if data is not None else None
        if not isinstance(groups, list):
            return None
        found: dict[str, dict[str, str | None]] = {}
        for group in groups:  # [outcome, [model, ...]]: models that share one outcome share one object
            if not (isinstance(group, list) and len(group) == 2 and isinstance(group[0], dict)
                    and isinstance(group[1], list)):
                return None
            outcome = {str(e): t for e, t in group[0].items() if t is None or isinstance(t, str)}
            found.update(dict.fromkeys(map(str, group[1]), outcome))
        return found

    def put_outcome_set(self, key: str, models: dict[str, dict[str, str | None]]) -> None:
        """Written grouped by outcome: nearly every model of a set has the same one (rendered everywhere, no
        error), so 10,000 models are one list of names, not 10,000 objects to parse on every plan."""
        if self.folder is not None:
            groups: dict[str, tuple[dict[str, str | None], list[str]]] = {}
            for name, outcome in sorted(models.items()):
                groups.setdefault(json.dumps(outcome, sort_keys=True), (outcome, []))[1].append(name)
            self._write(self._path(key, area="outcome-sets"), {"groups": [[o, n] for o, n in groups.values()]})

    def prune(self, *, max_bytes: int | None = None, max_age_days: float | None = None,
              now: float | None = None) -> tuple[int, int]:
        """Drop entries unused for `max_age_days`, then the least recently used until the folder holds at
        most `max_bytes` (defaults: the limits in force). Returns (entries removed, bytes left)."""
        if self.folder is None or not self.folder.is_dir():
            return 0, 0
        limits = guard.limits()
        max_bytes = limits.render_cache_max_bytes if max_bytes is None else max_bytes
        max_age = (limits.render_cache_max_age_days if max_age_days is None else max_age_days) * 86400
        now = time.time() if now is None else now
        entries = []
        for dirpath, _, files in os.walk(self.folder):
            for name in files:
                if name == ".pruned":
                    continue
                path = os.path.join(dirpath, name)
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                stale_tmp = name.startswith(".tmp-") and now - st.st_mtime > 3600  # a writer that died
                entries.append((st.st_mtime, st.st_size, path, stale_tmp))
        entries.sort()  # oldest use first
        total = sum(size for _, size, _, _ in entries)
        removed = 0
        for mtime, size, path, stale_tmp in entries:
            if not stale_tmp and now - mtime <= max_age and total <= max_bytes:
                break
            if name_is_tmp(path) and not stale_tmp:
                continue  # being written right now
            try:
                os.unlink(path)
            except OSError:
                continue
            total -= size
            removed += 1
        return removed, total


    def prune_if_due(self, every: float = PRUNE_EVERY) -> None:
        """`prune`, at most once per `every` seconds per cache folder (a marker file's time says when)."""
        if self.folder is None:
            return
        marker = self.folder / ".pruned"
        try:
            if time.time() - marker.stat().st_mtime < every:
                return
        except OSError:
            pass
        self.prune()
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            marker.touch()
        except OSError:
            pass


def name_is_tmp(path: str) -> bool:
    return os.path.basename(path).startswith(".tmp-")


NO_CACHE = RenderCache(None)
