"""Model content hashes: what a model's image is built from, reduced to one sha256.

A model's hash covers exactly the inputs of its build:

- every file in the model folder (git blob ids; in a working tree the files are hashed the way
  `git hash-object` does and `.gitignore` is honoured), except `model.yaml` and DVC pointers;
- from `model.yaml`, only the fields that change the build (`service`, `bentofile`, `artifacts`):
  scaling a model or moving it to another pool re-renders its manifests but never rebuilds it;
- the md5s recorded in its DVC pointers (`*.dvc`, `dvc.lock`), read as YAML (no DVC command runs);
- the bentofile (also when it lives outside the folder);
- the model's training lock: its own `requirements.lock` (a file of the folder), else the shared
  `pipelines/requirements.lock` it trains, is served and is registered with (pipelines/locks.py);
- the repository's own Python modules that the model's code imports, transitively
  (`from pipelines.steps import x`, `import common.features`): found with `ast`, resolved to files
  of the repository; third-party and standard-library imports resolve to nothing and are ignored.

Editing one model changes only its hash; editing files no model imports changes none. Each hash
keeps its inputs (path -> id) and their kinds, so a plan can say *what* changed: code (Python files
of the folder), other files, shared code, data, the bentofile or the build fields of the spec.

Only `model_hashes` touches git and the file system; everything after reading the tree is pure.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Protocol


from reconciler.errors import LimitError, SpecError, UnsafePathError
from reconciler.source import guard
from reconciler.source.facts import DVC_CACHE, IMPORT_CACHE, cached, dvc_outputs, is_pointer, python_imports, stage_wdirs
from reconciler.source.git import GitTree, Tree, open_tree


HASH_VERSION = "model-hash/v1"
SHORT = 12  # the hash prefix used as Bento version and image tag

MODEL_FILE = "model.yaml"
LOCK_FILE = "requirements.lock"  # pipelines.locks.LOCK_NAME: a model's own lock, in its folder
SHARED_LOCK = "pipelines/requirements.lock"  # pipelines.locks.SHARED_LOCK: the lock of a model without one
SPEC_KEY = "#build"  # input key suffix for the build fields of model.yaml


class _Entry(Protocol):  # reconciler.catalog.load.ModelEntry (a frozen dataclass: read-only members)
    @property
    def name(self) -> str: ...

    @property
    def path(self) -> Path: ...

    @property
    def spec(self) -> object: ...


# --------------------------------------------------------------------------- result types


@dataclass(frozen=True)
class ModelHash:
    model: str
    digest: str  # sha256 hex
    inputs: dict[str, str]  # repo-relative path -> id ("blob:<sha1>", "md5:<md5>", "sha256:<...>")
    kinds: dict[str, str] = field(default_factory=dict, compare=False)  # path -> code|file|shared-code|data|bentofile|spec

    @property
    def short(self) -> str:
        return self.digest[:SHORT]


@dataclass(frozen=True)
class InputChange:
    path: str
    kind: str
    before: str | None  # None: the input is new
    after: str | None  # None: the input is gone

    def __str__(self) -> str:
        verb = "added" if self.before is None else "removed" if self.after is None else "changed"
        return f"{self.kind} {verb}: {self.path}"


def weights_md5(model_hash: ModelHash, folder: str) -> dict[str, str]:
    """The DVC md5 of every weights file of a model, by path relative to its folder (`folder`: repo-relative).

    The same record the build writes into the bento's gitops-version.json and the service returns in
    X-Model-Version; render puts it on the pods (gitops.ml/weights-md5)."""
    prefix = folder.rstrip("/") + "/"
    return {path.removeprefix(prefix): ident.split(":", 1)[1] for path, ident in sorted(model_hash.inputs.items())
            if model_hash.kinds.get(path) == "data" and ident.startswith("md5:")}


def weights_md5_value(md5s: dict[str, str]) -> str:
    """One string for a weights record: the md5s joined by commas in path order (header, metric label, annotation)."""
    return ",".join(md5s[k] for k in sorted(md5s))


def changes(old: ModelHash | None, new: ModelHash | None) -> list[InputChange]:
    """The inputs that differ between two hashes of one model, sorted by path."""
    before = old.inputs if old else {}
    after = new.inputs if new else {}
    kinds = {**(old.kinds if old else {}), **(new.kinds if new else {})}
    return [InputChange(p, kinds.get(p, "file"), before.get(p), after.get(p))
            for p in sorted(set(before) | set(after)) if before.get(p) != after.get(p)]


def changed_models(old: dict[str, ModelHash], new: dict[str, ModelHash]) -> dict[str, list[InputChange]]:
    """Models whose hash differs (or that appear / disappear), with what changed."""
    return {name: changes(old.get(name), new.get(name))
            for name in sorted(set(old) | set(new))
            if (old.get(name) is None) != (new.get(name) is None)
            or (old[name].digest != new[name].digest)}


def describe(change_list: list[InputChange]) -> str:
    """One line for a plan: 'data: models/x/model.pkl; code: models/x/service.py'."""
    by_kind: dict[str, list[str]] = {}
    for c in change_list:
        by_kind.setdefault(c.kind, []).append(c.path)
    return "; ".join(f"{kind}: {', '.join(paths)}" for kind, paths in sorted(by_kind.items())) or "no input changed"




# --------------------------------------------------------------------------- import resolution


def _module_files(tree: Tree, base: str, dotted: str) -> list[str]:
    """Files a module import executes, searched under one directory ('' = repository root)."""
    if not dotted:
        return []
    parts = dotted.split(".")
    found = []
    for i in range(1, len(parts)):  # parent packages' __init__.py run first
        init = posixpath.join(base, *parts[:i], "__init__.py")
        if tree.exists(init):
            found.append(init)
    stem = posixpath.join(base, *parts)
    for candidate in (stem + ".py", posixpath.join(stem, "__init__.py")):
        if tree.exists(candidate):
            found.append(candidate)
            break
    return found


def _top_files(tree: Tree, dotted: str, memo: dict[str, list[str]] | None) -> list[str]:
    """`_module_files` under the repository root: the same for every model of a tree (`memo`: one hashing pass's)."""
    if memo is None:
        return _module_files(tree, "", dotted)
    found = memo.get(dotted)
    if found is None:
        found = memo[dotted] = _module_files(tree, "", dotted)
    return list(found)


def _resolve(tree: Tree, importer: str, record: tuple[int, str, tuple[str, ...]], roots: list[str],
             memo: dict[str, list[str]] | None = None) -> list[str]:
    level, module, names = record
    if level:
        base = posixpath.dirname(importer)
        for _ in range(level - 1):
            base = posixpath.dirname(base)
        bases, dotted = [base], module
    else:
        bases, dotted = roots, module
    for base in bases:
        files = _top_files(tree, dotted, memo) if base == "" else _module_files(tree, base, dotted)
        # `from pkg import sub` may import a submodule
        for name in names:
            sub = f"{dotted}.{name}" if dotted else name
            files += _top_files(tree, sub, memo) if base == "" else _module_files(tree, base, sub)
        if files:
            return files
    return []


def _imports_of(tree: Tree, path: str) -> tuple[tuple[int, str, tuple[str, ...]], ...]:
    return cached(IMPORT_CACHE, tree.blob_id(path), lambda: python_imports(tree.read(path)))


# --------------------------------------------------------------------------- hashing


def _folder_of(entry: _Entry, root: str) -> str:
    """The model folder relative to the repository root.

    Catalog entries know it (`rel`); their `path` may point into a temporary checkout of a revision.
    """
    rel = getattr(entry, "rel", None)
    if isinstance(rel, str):
        return rel
    path = os.fspath(entry.path)
    if not os.path.isabs(path):
        return Path(path).as_posix()
    rel = os.path.relpath(os.path.realpath(path), root)
    return f"models/{entry.name}" if rel.startswith("..") else Path(rel).as_posix()


def _digest(inputs: dict[str, str]) -> str:
    h = hashlib.sha256(HASH_VERSION.encode() + b"\n")
    for path in sorted(inputs):
        h.update(f"{path}\0{inputs[path]}\n".encode())
    return h.hexdigest()


def _images_of(spec: object) -> dict | None:
    images = getattr(spec, "images", None)
    if not isinstance(images, dict):
        return None
    # the dump the fixed cpu/gpu/inferentia model gave (keys sorted by the digest's json.dumps): hashes unchanged
    return {kind: image.model_dump(by_alias=True, exclude_none=True)
            for kind, image in images.items() if image is not None} or None


def hash_model(tree: Tree, folder: str, name: str, *, service: str, bentofile: str,
               artifacts: Iterable[str], images: dict | None = None,
               top_modules: dict[str, list[str]] | None = None) -> ModelHash:
    """The hash of one model whose folder is `folder` (repo-relative) in `tree`.

    `images`: the model.yaml per-kind image settings (they change what the images contain); hashed
    only when set, so models without them keep their hash. `top_modules`: a memo of imports resolved
    at the repository root, shared by the models hashed from one `tree` (every model imports bentoml...)."""
    artifacts = list(artifacts)
    inputs: dict[str, str] = {}
    kinds: dict[str, str] = {}
    bento_path = posixpath.normpath(posixpath.join(folder, bentofile))

    fields: dict = {"service": service, "bentofile": bentofile, "artifacts": artifacts}
    if images:
        fields["images"] = images
    spec_fields = json.dumps(fields, sort_keys=True)
    key = f"{folder}/{MODEL_FILE}{SPEC_KEY}"
    inputs[key] = "sha256:" + hashlib.sha256(spec_fields.encode()).hexdigest()
    kinds[key] = "spec"

    _check_tree_bounds(tree, folder, name)
    own = tree.ids_under(folder)
    pointers = {p for p in own if is_pointer(p)}
    pointers |= {posixpath.normpath(posixpath.join(folder, a)) for a in artifacts}
    for path, blob in own.items():
        if path in pointers or path == f"{folder}/{MODEL_FILE}":
            continue
        inputs[path] = f"blob:{blob}"
        kinds[path] = "bentofile" if path == bento_path else "code" if path.endswith(".py") else \
            "lock" if path == f"{folder}/{LOCK_FILE}" else "file"
    if f"{folder}/{LOCK_FILE}" not in own:  # the shared lock is what this model trains and is served with
        inputs[SHARED_LOCK] = f"blob:{tree.blob_id(SHARED_LOCK)}" if tree.exists(SHARED_LOCK) else "missing"
        kinds[SHARED_LOCK] = "lock"
    if bento_path not in own:
        inputs[bento_path] = f"blob:{tree.blob_id(bento_path)}" if tree.exists(bento_path) else "missing"
        kinds[bento_path] = "bentofile"

    for pointer in sorted(pointers):
        if not tree.exists(pointer):
            inputs[pointer] = "missing"
            kinds[pointer] = "data"
            continue
        # output paths are relative to the pointer's folder: the same pointer content in two models differs
        key = f"{tree.blob_id(pointer)}\0{posixpath.dirname(pointer)}"
        stages = posixpath.join(posixpath.dirname(pointer), "dvc.yaml")
        wdirs: dict[str, str] = {}
        if posixpath.basename(pointer) == "dvc.lock" and tree.exists(stages):  # a stage's wdir moves its outputs
            wdirs = stage_wdirs(tree.read(stages))
            key += f"\0{tree.blob_id(stages)}"
        outs = cached(DVC_CACHE, key, lambda p=pointer, w=wdirs: dvc_outputs(tree.read(p), p, w))
        if not outs:
            inputs[pointer] = f"invalid:blob:{tree.blob_id(pointer)}"
            kinds[pointer] = "data"
            continue
        for out, checksum in outs:
            if "\0" in out:  # no file system has such a name; DVC and os calls would fail on it later, unnamed
                raise UnsafePathError.single(pointer, f"names the output {out!r}, which holds a NUL byte",
                                             field="outs.path", fix="name the tracked file as it is on disk")
            if not out.startswith(folder + "/"):
                # DVC would fetch (and write) it wherever it points, and the Bento would ship without it
                raise UnsafePathError.single(
                    pointer, f"names the output {out!r}, outside the model folder {folder}/ "
                             "(an absolute path, '..' past the folder, or a `wdir:` that leaves it)", field="outs.path",
                    fix=f"track the file inside {folder}/ (`dvc add {folder}/<file>`) and commit that pointer")
            _check_output_links(tree, pointer, folder, out)
            inputs[out] = checksum
            kinds[out] = "data"

    # shared code: repository modules imported by the model's Python files, transitively
    queue = sorted(p for p in own if p.endswith(".py"))
    seen = set(queue)
    while queue:
        path = queue.pop()
        roots = [folder, ""] if path.startswith(folder + "/") else [""]
        for record in _imports_of(tree, path):
            for dep in _resolve(tree, path, record, roots, top_modules):
                if dep not in seen:
                    seen.add(dep)
                    queue.append(dep)
                    if dep not in inputs:
                        inputs[dep] = f"blob:{tree.blob_id(dep)}"
                        kinds[dep] = "shared-code"
    return ModelHash(name, _digest(inputs), inputs, kinds)


def _check_output_links(tree: Tree, pointer: str, folder: str, out: str) -> None:
    """No symlink on the way to a pointer's output leads out of the model folder (git commits symlinks: a
    `model.pkl` or `data/` linking to /etc or to another folder would make DVC write, and the build read,
    through it). A link that stays in the folder is followed; DVC's own cache links (`cache.type: symlink`,
    into the repository's `.dvc/cache/`, never committed) are the one link allowed to leave it."""
    current = folder
    for part in out[len(folder) + 1:].split("/"):
        current = posixpath.join(current, part)
        target = tree.link_target(current)
        if target is None:
            continue
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(current), target))
        if os.path.isabs(target):  # a working tree's link: repository-relative when it points into it
            root = getattr(tree, "_root", None)
            resolved = os.path.relpath(os.path.realpath(target), root) if root else target
        if resolved.startswith(".dvc/cache/") and current == out and not isinstance(tree, GitTree):
            return
        if not resolved.startswith(folder + "/"):
            raise UnsafePathError.single(
                pointer, f"names the output {out!r}, but {current} is a symlink to {target!r}, outside the model "
                         f"folder {folder}/ (DVC would write, and the build read, through it)", field="outs.path",
                fix=f"remove the symlink {current} from git (`git rm {current}`) and track the real file with DVC")
        current = resolved


def _check_tree_bounds(tree: Tree, folder: str, name: str) -> None:
    """The files of one model folder (as git sees them) stay within max_tree_files and max_tree_bytes."""
    bound = guard.limits()
    prefix = folder.rstrip("/") + "/"
    files = total = 0
    for path in tree.ids_under(prefix):
        files += 1
        total += tree.size(path)
        if files > bound.max_tree_files:
            raise LimitError.single(folder, f"model {name!r} has more than {bound.max_tree_files} files (max_tree_files)",
                                    fix="track data with DVC, or raise $RECONCILER_MAX_TREE_FILES where the reconciler runs")
        if total > bound.max_tree_bytes:
            raise LimitError.single(folder, f"model {name!r} holds more than {bound.max_tree_bytes} bytes "
                                    f"(max_tree_bytes; {path} crossed it)",
                                    fix="track large files with DVC (`dvc add`), or raise $RECONCILER_MAX_TREE_BYTES "
                                        "where the reconciler runs")


def model_hashes(repo_root: Path, rev: str | None, models: Iterable[_Entry],
                 errors: dict[str, SpecError] | None = None) -> dict[str, ModelHash]:
    """Content hashes of models at a git revision, or of the working tree when rev is None.

    Raises SourceError when repo_root is not in a git repository or the revision does not exist.
    A model over a bound (LimitError) or whose pointer names a path outside its folder (UnsafePathError) is
    left out and recorded in `errors` when given (else raised): one such model never stops the others.
    """
    repo_root = Path(repo_root)
    root = os.path.realpath(repo_root)
    models = list(models)
    folders = {e.name: _folder_of(e, root) for e in models}
    tree = open_tree(repo_root, rev, folders.values())
    if tree.batched:  # a commit: read the blobs the caches lack in one `git cat-file --batch`
        wanted = []
        for folder in folders.values():
            for path, sha in tree.ids_under(folder).items():
                if (path.endswith(".py") and sha not in IMPORT_CACHE) or (
                        is_pointer(path) and f"{sha}\0{posixpath.dirname(path)}" not in DVC_CACHE):
                    wanted.append(path)
        tree.prefetch(wanted)
    result = {}
    top_modules: dict[str, list[str]] = {}
    for entry in models:
        spec = entry.spec
        try:
            result[entry.name] = hash_model(tree, folders[entry.name], entry.name, service=spec.service,
                                            bentofile=spec.bentofile, artifacts=spec.artifacts,
                                            images=_images_of(spec), top_modules=top_modules)
        except SpecError as exc:  # LimitError, UnsafePathError: this model's error
            if errors is None:
                raise
            errors[entry.name] = exc
    return result
