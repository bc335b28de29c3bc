"""Hydrate: write rendered manifests where Argo CD or Flux can sync them (the rendered-manifests pattern).

The default layout follows Argo CD's source hydrator: one folder per environment holding
`manifest.yaml` (every object, the environment's Namespace first), `hydrator.metadata` (JSON with
the dry commit SHA) and a README. There is no kustomization.yaml: Argo CD reads the folder as a
plain directory source and Flux's kustomize-controller as a plain folder, with no kustomize build
of a thousand resources on every sync. `layout="kustomize"` writes one file per model plus a
kustomization.yaml listing them, for tools that want a kustomize root.

Targets: a folder (`<out>/<env>/...`; default `hydrated/`, a name that cannot be confused with the
`rendered/` branch prefix), or one git branch per environment (`rendered/<env>`) holding the same
`<env>/` folder and a root hydrator.metadata, committed only when the content changed, with the
source commit in the message. Neither needs a cluster. docs/hydrated-output.md shows the Argo CD
Application and Flux Kustomization that consume a branch.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import yaml

from reconciler.render.cache import renderer_id
from reconciler.render.environment import EnvironmentRender, ModelRender, dump_objects
from reconciler.render.manifests import namespace
from reconciler.source import branches
from reconciler.source.git import show_file

SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
README = ("Rendered by the model reconciler from {revision}. Do not edit: change models/ or environments/ "
          "on the main branch instead.\n")
LAYOUTS = ("plain", "kustomize")
MANIFEST = "manifest.yaml"  # the environment's own objects: its Namespace, ResourceQuota, PriorityClasses
MODEL_SUFFIX = ".model.yaml"  # <model>.model.yaml: one model's objects
LAYOUT_VERSION = 2  # 2: a file per model (1: one manifest.yaml); an older branch is hydrated whole once
METADATA = "hydrator.metadata"
BRANCH_PREFIX = "rendered/"  # the branch of environment <env> is rendered/<env>


@dataclass(frozen=True)
class HydrateResult:
    environment: str
    target: str  # folder path or branch name
    files: int  # models written
    committed: str | None = None  # new commit sha when a branch was written, None when unchanged


def metadata(revision: str, environment: str | None = None, layout: str = "plain") -> str:
    """Argo CD's hydrator.metadata: JSON naming the dry (source) commit; deterministic (no clock).

    An environment's copy also names the renderer (`render.cache.renderer_id`): an environment is
    written only when every model of it validated, so "rendered clean from commit X by renderer R" is
    what a later plan reads from it (plan.outcomes.clean_environments)."""
    data: dict[str, object] = {"drySha": revision, "commands": ["reconciler hydrate"]}
    if environment is not None:
        data["environment"] = environment
        data["renderer"] = renderer_id()
        data["layout"] = layout
        data["layoutVersion"] = LAYOUT_VERSION
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def model_files(render: ModelRender) -> dict[str, bytes]:
    """One model's files in an environment's folder: `<model>.model.yaml` and its sealed Secrets. Model
    names are DNS labels (no dots), so every file of model m starts with `m.` and of no other model."""
    files = {f"{render.model}{MODEL_SUFFIX}": render.to_yaml().encode()}
    # SOPS Secrets stay encrypted, byte for byte as committed (their MAC holds): Flux's kustomize-controller
    # (spec.decryption.provider: sops) or KSOPS decrypts them in the cluster; plaintext is never written
    for sealed in render.secrets:
        files[f"{render.model}.secret-{sealed.name}.yaml"] = sealed.text.encode()
    return files


def environment_files(render: EnvironmentRender, revision: str, layout: str = "plain",
                      models: dict[str, bytes] | None = None) -> dict[str, bytes]:
    """Every file of an environment's folder, by name. `models` (every model's files, as `model_files`
    gives them) stands in for the render's own models: a branch keeps untouched models' files."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r} (one of {', '.join(LAYOUTS)})")
    if models is None:
        models = {name: body for m in render.models.values() for name, body in model_files(m).items()}
    files = {MANIFEST: dump_objects([namespace(render.environment), *render.shared]).encode(), **models}
    if layout == "kustomize":
        files["kustomization.yaml"] = yaml.safe_dump({
            "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
            "resources": sorted(files)}, sort_keys=False).encode()
    files[METADATA] = metadata(revision, render.environment.name, layout).encode()
    files["README.md"] = README.format(revision=revision).encode()
    return files


def write_environment(render: EnvironmentRender, folder: Path, revision: str, layout: str = "plain") -> int:
    """Replace `folder` with the environment's rendered files; returns how many models were written."""
    files = environment_files(render, revision, layout)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for name, body in files.items():
        (folder / name).write_bytes(body)
    return len(render.models)


def hydrate_folder(renders: dict[str, EnvironmentRender], out: Path, revision: str,
                   layout: str = "plain") -> list[HydrateResult]:
    return [HydrateResult(env, str(out / env), write_environment(render, out / env, revision, layout))
            for env, render in sorted(renders.items())]


def read_documents(folder: Path) -> list[dict]:
    """Every object of a hydrated environment folder, in the order a consumer sees them: manifest.yaml (the
    Namespace first), then each model's file, sorted; sealed Secrets (encrypted) are left out."""
    files = [folder / MANIFEST, *sorted(folder.glob(f"*{MODEL_SUFFIX}"))]
    return [d for f in files for d in yaml.load_all(f.read_text(encoding="utf-8"), Loader=SAFE_LOADER) if d]


def model_of(file: str) -> str | None:
    """The model a file of an environment's folder belongs to (None: the environment's own files)."""
    name, dot, _ = file.partition(".")
    return name if dot and (file.endswith(MODEL_SUFFIX) or ".secret-" in file) else None


def previous_hydrate(root: Path, env: str, prefix: str = BRANCH_PREFIX) -> tuple[str, dict] | None:
    """(tip, metadata) of the environment's branch (local, else origin's) when this renderer wrote it in
    this layout generation; None otherwise (no branch, another renderer, an older layout: hydrate all)."""
    for ref in (f"refs/heads/{prefix}{env}", f"refs/remotes/origin/{prefix}{env}"):
        tip = branches.branch_tip(root, ref)
        if tip is None:
            continue
        try:
            data = json.loads(show_file(root, tip, f"{env}/{METADATA}") or "")
        except ValueError:
            return None
        if isinstance(data, dict) and data.get("renderer") == renderer_id() and data.get("layoutVersion") == LAYOUT_VERSION \
                and data.get("environment") == env and isinstance(data.get("drySha"), str):
            return tip, data
        return None
    return None


def hydrate_branch(root: Path, render: EnvironmentRender, revision: str, *, prefix: str = BRANCH_PREFIX,
                   layout: str = "plain", partial: bool = False, removed: frozenset[str] | set[str] = frozenset()) -> HydrateResult:
    """Commit one environment to branch `<prefix><env>` through git's plumbing (reconciler.source.branches).

    partial=False: `render` holds every model; the folder is replaced. partial=True: `render` holds only the
    models that changed since the branch's source commit; every other model's files keep their blob ids, and
    the files of `removed` models go. Either way the resulting tree is the one a full hydrate writes
    (tests/test_hydrate_incremental.py proves it on random changes), and the working tree is not touched.
    """
    env = render.environment.name
    branch = f"{prefix}{env}"
    ref = f"refs/heads/{branch}"
    parent = branches.branch_tip(root, ref)
    existing = branches.entries_under(root, parent, f"{env}/", METADATA) if parent else {}
    start = len(env) + 1
    if partial:
        touched = set(render.models) | set(removed)
        models = {path[start:]: entry for path, entry in existing.items()
                  if path.startswith(f"{env}/") and model_of(path[start:]) not in (None, *touched)}
        files = environment_files(render, revision, layout, models={})
        fresh = {name: body for m in render.models.values() for name, body in model_files(m).items()}
        if layout == "kustomize":  # the listing names every model's files, kept and new
            listing = sorted({*files, *models, *fresh} - {METADATA, "README.md", "kustomization.yaml"})
            files["kustomization.yaml"] = yaml.safe_dump({
                "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
                "resources": listing}, sort_keys=False).encode()
        files.update(fresh)
        drop = [path for path in existing
                if path.startswith(f"{env}/") and model_of(path[start:]) in touched and path[start:] not in files]
    else:
        files = environment_files(render, revision, layout)
        drop = [path for path in existing if path.startswith(f"{env}/") and path[start:] not in files]
    put = {f"{env}/{name}": body for name, body in files.items()}
    put[METADATA] = metadata(revision).encode()
    committed = branches.commit_changes(root, branch, parent=parent, put=put, drop=drop, existing=existing,
                                        message=f"Render {env} from {revision[:12]}\n\nSource-Commit: {revision}")
    return HydrateResult(env, branch, len(render.models), committed)
