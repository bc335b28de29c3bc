"""What a plan checks of a changed model's weights: that the DVC remote holds them, and that its declared
`architecture:` is what they are.

The declared architecture picks the compile recipe of an Inferentia pool, so a stale one (copied from another
model, or left after train.py changed estimator) would pass the plan and fail only in the post-merge export
step. The plan reads the weights' pickle WITHOUT unpickling it (reconciler.catalog.pickled walks the opcodes)
from a copy that is already on this machine, inside the repository: the working tree file when its md5 is the
pointer's, else DVC's cache, else a local-directory DVC remote. Nothing is downloaded; weights found nowhere
locally are not checked (the merge build's export step still is).
"""

from __future__ import annotations

import configparser
import hashlib
import io
import re
import zipfile
from pathlib import Path

from reconciler.catalog.load import Catalog, ModelEntry
from reconciler.catalog.recipes import CompileRecipe
from reconciler.catalog.pickled import NotAPickle, architecture
from reconciler.errors import ReconcilerError, SpecError
from reconciler.plan.trace import trace_errors
from reconciler.source import guard
from reconciler.source.hashing import ModelHash, changed_models
from reconciler.source.artifacts import artifact_error, default_remote, missing_outputs, remote_objects, tracked_outputs


def _default_local_remote(root: Path) -> Path | None:
    """The committed default DVC remote's folder when it is a local directory inside the repository."""
    config = root / ".dvc" / "config"
    if not config.is_file():
        return None
    parser = configparser.ConfigParser(interpolation=None, strict=False, comment_prefixes=("#", ";"))
    try:
        parser.read_string(guard.read_text(root, ".dvc/config"), source=".dvc/config")
    except (configparser.Error, OSError, ReconcilerError):
        return None
    name = parser.get("core", "remote", fallback="").strip()
    for section in parser.sections():
        found = re.fullmatch(r"""'?\s*remote\s+"([^"]+)"\s*'?""", section.strip())
        if found and found.group(1) == name:
            url = parser.get(section, "url", fallback="").strip().strip("'\"")
            if not url or "://" in url:
                return None
            folder = (root / ".dvc" / url) if not Path(url).is_absolute() else Path(url)
            try:
                return guard.inside(root, folder.resolve())
            except ReconcilerError:
                return None  # outside the repository: not read
    return None


def _md5(path: Path) -> str:
    digest = hashlib.md5()  # DVC's object id, not a security hash
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def local_copy(root: Path, path: str, md5: str) -> Path | None:
    """A file on this machine, inside the repository, holding the DVC object `md5` of `path`, or None."""
    candidates = [root / path]
    object_path = Path("files") / "md5" / md5[:2] / md5[2:]
    candidates.append(root / ".dvc" / "cache" / object_path)
    remote = _default_local_remote(root)
    if remote is not None:
        candidates.append(remote / object_path)
    for candidate in candidates:
        try:
            safe = guard.inside(root, candidate)
        except ReconcilerError:
            continue
        if safe.is_file() and not safe.is_symlink() and (candidate != root / path or _md5(safe) == md5):
            return safe
    return None


def is_torch_archive(data: bytes) -> bool:
    """A `torch.save` file: a zip archive holding `<name>/data.pkl` (read as a zip listing, never unpickled)."""
    if not data.startswith(b"PK"):
        return False
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return any(name == "data.pkl" or name.endswith("/data.pkl") for name in archive.namelist())
    except (zipfile.BadZipFile, ValueError):
        return False


def architecture_problem(root: Path, entry: ModelEntry, outputs: list,
                         recipes: tuple[CompileRecipe, ...] = ()) -> SpecError | None:
    """A model error when the declared architecture differs from what its weights are: a pickle's estimator
    steps (read from its opcodes), or a torch.save archive, which only a recipe of `artifact: torch` accepts."""
    declared = entry.spec.architecture
    if not declared:
        return None
    torch_labels = sorted(a for r in recipes if r.artifact == "torch" for a in r.architectures)
    for output in outputs:
        if not output.path.endswith((".pkl", ".pickle", ".pt", ".pth")) or not output.checksum.startswith("md5:"):
            continue
        found_at = local_copy(root, output.path, output.checksum[4:])
        if found_at is None:
            continue
        try:
            data = guard.read_bytes(root, found_at, display=output.path, max_bytes=guard.limits().max_tree_bytes)
        except (ReconcilerError, OSError):
            continue
        if is_torch_archive(data):
            if torch_labels and declared not in torch_labels:
                return SpecError.single(
                    f"{entry.rel}/model.yaml",
                    f"architecture {declared!r} does not match the trained weights {output.path}, which are a "
                    f"torch.save archive (a PyTorch model)", field="architecture",
                    fix=f"set `architecture: {torch_labels[0]}` in {entry.rel}/model.yaml (the architectures of "
                        f"the torch recipes: {', '.join(torch_labels)}), or retrain the model the declared one names")
            continue
        if declared in torch_labels:
            return SpecError.single(
                f"{entry.rel}/model.yaml",
                f"architecture {declared!r} (a PyTorch model) does not match the trained weights {output.path}, "
                "which are not a torch.save archive", field="architecture",
                fix=f"declare what the weights are in {entry.rel}/model.yaml, or save the PyTorch model with torch.save")
        try:
            found = architecture(data)
        except NotAPickle:
            continue  # not a pickle this check reads: the export step judges it
        if found is not None and found != declared:
            return SpecError.single(
                f"{entry.rel}/model.yaml",
                f"architecture {declared!r} does not match the trained weights {output.path}, which are a {found}",
                field="architecture",
                fix=f"set `architecture: {found}` in {entry.rel}/model.yaml (the plan then checks which pools can "
                    "compile it), or retrain with the estimator the declared architecture names")
    return None


def architecture_errors(root: Path, models: dict[str, ModelEntry], outputs: dict[str, list],
                        recipes: tuple[CompileRecipe, ...] = ()) -> dict[str, ReconcilerError]:
    """{model: error} for the models (with their tracked outputs) whose declared architecture is not their weights'."""
    return {name: problem for name, found in sorted(outputs.items())
            if name in models and (problem := architecture_problem(root, models[name], found, recipes)) is not None}


def artifact_errors(root: Path, before: dict[str, ModelHash], after: dict[str, ModelHash],
                    models: dict[str, ModelEntry], catalog: Catalog | None = None,
                    trace: bool = True) -> dict[str, ReconcilerError]:
    """Models of the plan whose DVC-tracked artifacts the default remote lacks, or whose `architecture:`
    is not what their weights are, as model errors.

    Only models whose content hash changed (new ones included) are checked: an unchanged model's
    weights were checked when they changed. Existence checks only; nothing is downloaded. With the `catalog`,
    a model whose compile recipe asks for it is traced on CPU with its declared shapes (plan/trace.py).
    """

    outputs = {}
    for name in changed_models(before, after):
        entry, digest = models.get(name), after.get(name)
        if entry is not None and digest is not None:
            found = tracked_outputs(name, digest.inputs, digest.kinds, entry.spec.artifacts, entry.rel)
            if found:
                outputs[name] = found
    if not outputs:
        return {}
    recipes = catalog.recipes.recipes if catalog is not None else ()
    mismatched = architecture_errors(root, models, outputs, recipes)  # weights read, never unpickled
    if catalog is not None and trace:
        mismatched.update({name: problem for name, problem in trace_errors(root, catalog, outputs, local_copy).items()
                           if name not in mismatched})
    try:
        present = remote_objects(root, [o.checksum for found in outputs.values() for o in found])
    except ReconcilerError as exc:  # no remote, unreachable: every checked model says so
        return {name: mismatched.get(name, exc) for name in outputs}
    remote = default_remote(root)
    return {**{name: artifact_error(missing, remote) for name, found in sorted(outputs.items())
               if (missing := missing_outputs(found, present))}, **mismatched}
