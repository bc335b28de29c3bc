"""The render cache: a model's rendered objects, keyed by everything its render reads.

A model's render in an environment is a pure function of: the model's spec and content hash (as
its image references), the environment's spec (less the fields no model object reads), the
environment's overlay folders (`environments/base`, `environments/<env>`), the pools it is placed
on (less their prices), kubectl's kustomize, and the renderer's own code. `render_key` hashes those;
two renders with the same key are the same, so a plan renders only models whose key differs
between its two revisions and takes the rest from this cache, or skips them when the key is the
same on both sides.

Entries are JSON files under `RECONCILER_CACHE` (default `$XDG_CACHE_HOME/model-gitops-reconciler/render`),
written atomically; a corrupt or unreadable entry is a miss. Only successful renders are cached.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from reconciler.catalog.pools import Pool
from reconciler.catalog.specs import EnvironmentSpec, ModelSpec

FORMAT = "render-cache/v1"
# environment.yaml fields that no model object reads (they change the plan, not the render)
ENV_FIELDS_NOT_RENDERED = {"cluster", "budget", "promotes_from"}
POOL_FIELDS_NOT_RENDERED = {"hourly_price"}


@functools.lru_cache(maxsize=1)
def renderer_id() -> str:
    """The renderer's version: its own source (render/, catalog/, labels.py) and kubectl's binary."""
    import reconciler
    from reconciler.render.kustomize import kubectl_binary

    top = Path(reconciler.__file__).parent
    h = hashlib.sha256(FORMAT.encode())
    for path in sorted([*(top / "render").glob("*.py"), *(top / "catalog").glob("*.py"), top / "labels.py"]):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    try:
        binary = Path(kubectl_binary())
        stat = binary.stat()
        h.update(f"{binary}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
    except Exception:  # noqa: BLE001 - no kubectl: render fails later with its own message
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


class RenderCache:
    """Rendered objects by render key, on disk; `folder=None` is a cache that keeps nothing."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self.hits = 0
        self.misses = 0

    def _path(self, key: str) -> Path:
        assert self.folder is not None
        return self.folder / key[:2] / f"{key}.json"

    def get(self, key: str) -> list[dict[str, Any]] | None:
        if self.folder is None:
            return None
        try:
            data = json.loads(self._path(key).read_bytes())
            objects = data["objects"] if data.get("format") == FORMAT else None
        except (OSError, ValueError, KeyError, TypeError):
            objects = None
        if isinstance(objects, list):
            self.hits += 1
            return objects
        self.misses += 1
        return None

    def put(self, key: str, objects: list[dict[str, Any]]) -> None:
        if self.folder is None:
            return
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"format": FORMAT, "objects": objects}, f, separators=(",", ":"))
            os.replace(tmp, path)
        except (OSError, TypeError, ValueError):
            pass  # a cache that cannot be written (or an object JSON cannot hold) is only slower


NO_CACHE = RenderCache(None)
