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
from collections.abc import Iterable
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


def environment_extras(render: EnvironmentRender, revision: str, layout: str, model_names: Iterable[str]) -> dict[str, bytes]:
    """An environment folder's files besides the models': manifest.yaml, (kustomize layout) a kustomization.yaml
    listing it and `model_names`, hydrator.metadata and the README."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r} (one of {', '.join(LAYOUTS)})")
    files = {MANIFEST: dump_objects([namespace(render.environment), *render.shared]).encode()}
    if layout == "kustomize":
        files["kustomization.yaml"] = yaml.safe_dump({
            "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
            "resources": sorted({MANIFEST, *model_names})}, sort_keys=False).encode()
    files[METADATA] = metadata(revision, render.environment.name, layout).encode()
    files["README.md"] = README.format(revision=revision).encode()
    return files


def environment_files(render: EnvironmentRender, revision: str, layout: str = "plain",
                      models: dict[str, bytes] | None = None) -> dict[str, bytes]:
    """Every file of an environment's folder, by name. `models` (every model's files, as `model_files`
    gives them) stands in for the render's own models."""
    if models is None:
        models = {name: body for m in render.models.values() for name, body in model_files(m).items()}
    extras = environment_extras(render, revision, layout, models)
    return {MANIFEST: extras.pop(MANIFEST), **models, **extras}


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


class EnvironmentBranch:
    """One environment's branch `<prefix><env>`, written as its models render: called with each model's
    render (a render_environment `sink`), it sends the model's files to git as blobs and keeps their ids
    only (source.branches.BranchWriter); `commit` then writes the folder. Memory holds ids, not documents:
    a cold hydrate does not grow with the repository's rendered bytes.

    partial=False at `commit`: the models sent are every model; the folder is replaced. partial=True: they
    are the models that changed since the branch's source commit; every other model's files keep their
    blob ids, and the files of `removed` models go. Either way the tree is the one a full hydrate writes
    (tests/test_hydrate_incremental.py proves it on random changes), and the working tree is not touched.
    Nothing is committed when `commit` is not called (a model failed): leave the `with` block or `abort`.
    """

    def __init__(self, root: Path, env: str, *, prefix: str = BRANCH_PREFIX) -> None:
        self.root, self.env, self.branch = root, env, f"{prefix}{env}"
        self.parent = branches.branch_tip(root, f"refs/heads/{self.branch}")
        self.existing = branches.entries_under(root, self.parent, f"{env}/", METADATA) if self.parent else {}
        self.writer = branches.BranchWriter(root, self.branch, parent=self.parent, existing=self.existing)
        self.files: dict[str, str] = {}  # file name in the folder -> blob id, of the models sent
        self.models: set[str] = set()

    def __call__(self, render: ModelRender) -> None:
        for name, body in model_files(render).items():
            self.files[name] = self.writer.blob(body)
        self.models.add(render.model)

    def __enter__(self) -> EnvironmentBranch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()

    def abort(self) -> None:
        self.writer.abort()

    def commit(self, render: EnvironmentRender, revision: str, *, layout: str = "plain", partial: bool = False,
               removed: frozenset[str] | set[str] = frozenset()) -> HydrateResult:
        """Commit the folder: the models sent, the environment's own files from `render` (its shared objects)."""
        env, existing, start = self.env, self.existing, len(self.env) + 1
        ours = [path for path in existing if path.startswith(f"{env}/")]
        if partial:
            touched = self.models | set(removed)
            kept = [path[start:] for path in ours if model_of(path[start:]) not in (None, *touched)]
            files = environment_extras(render, revision, layout, [*kept, *self.files])
            files_ids = {name: self.writer.blob(body) for name, body in files.items()} | self.files
            drop = [path for path in ours if model_of(path[start:]) in touched and path[start:] not in files_ids]
        else:
            files = environment_extras(render, revision, layout, self.files)
            files_ids = {name: self.writer.blob(body) for name, body in files.items()} | self.files
            drop = [path for path in ours if path[start:] not in files_ids]
        put = {f"{env}/{name}": sha for name, sha in files_ids.items()}
        put[METADATA] = self.writer.blob(metadata(revision).encode())
        committed = self.writer.commit(put, drop=drop,
                                       message=f"Render {env} from {revision[:12]}\n\nSource-Commit: {revision}")
        return HydrateResult(env, self.branch, len(self.models), committed)


def hydrate_branch(root: Path, render: EnvironmentRender, revision: str, *, prefix: str = BRANCH_PREFIX,
                   layout: str = "plain", partial: bool = False, removed: frozenset[str] | set[str] = frozenset()) -> HydrateResult:
    """Commit one environment, rendered in `render` (its models kept, not streamed), to branch `<prefix><env>`
    through git's plumbing: EnvironmentBranch fed with the render's models."""
    with EnvironmentBranch(root, render.environment.name, prefix=prefix) as branch:
        for model in render.models.values():
            branch(model)
        return branch.commit(render, revision, layout=layout, partial=partial, removed=removed)
