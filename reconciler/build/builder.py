"""`reconciler build`: build only what changed.

For every model (or the ones asked for), in this order:

1. hash: its content hash (reconciler.source.hashing) over the working tree;
2. image check: when a registry is configured, `HEAD` its manifest `<registry>/<model>:<tag>` (never
   pulled); an existing image means there is nothing to do. The tag (reconciler.catalog.images) digests the
   content hash with what the pool kind's build adds (reconciler.catalog.image_inputs: its overlay, its compile
   recipe's code), so an overlay-only or recipe-only change is a new tag and is built;
3. bento check: a Bento tagged `<model>:<tag>` in the Bento store means the Bento is not rebuilt;
4. fetch: `dvc pull` of the model's pointers (DVC's Python API);
5. build: `bentoml build` (Python API, in a child process) of a staged context, tagged with the tag;
6. image: with a working container engine, `bentoml containerize` + push, and the digest is read
   back from the registry; else with ARGO_SERVER set, the image-build Argo Workflow is submitted;
   else the build stops at the Bento and says what is missing.

One model failing never stops the others; each gets a typed result (created / unchanged / failed).
Known image digests live in git: the lock file `images.lock.json` at the repository top maps each
tagged image (`<registry>/<model>:<tag>[-suffix]`) to its digest, and to the git commit its bento
was built from (the `commit=` of the service's X-Model-Version, read back from the bento's
gitops-version.json, so the pods' gitops.ml/git-commit annotation says what the image says). `build` records them in
the working tree and the merge workflow commits it back (as Flux image automation does), and
`resolve_images` reads it from the tree of the commit being rendered, never from the machine: one
commit renders the same bytes on a builder, in a PR check, in `hydrate` and in the cluster
(docs/architecture.md, "Where image references live").
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable


from reconciler.errors import ArgoError, BuildError, ReconcilerError, RegistryError, SpecError
from reconciler.labels import GIT_COMMIT
from reconciler.source import guard
from reconciler.source.hashing import ModelHash, model_hashes
from reconciler.results import Action, Summary
from reconciler.catalog.images import image_repository, image_tag, pinned
from reconciler.catalog.kinds import AcceleratorKind
from reconciler.build.artifacts import fetch_model
from reconciler.build.bento import staged_files
from reconciler.catalog.image_inputs import KindDigests
from reconciler.catalog.image_lock import ImageStore, digests_of, images_file
from reconciler.build import bento
from reconciler.build.argo import ArgoConfig, submit
from reconciler.build.bento import bentoml_home, container_engine
from reconciler.build.pipeline_runner import render_workflow
from reconciler.catalog.accelerators import merge_bentofile, neuron_sdk
from reconciler.catalog.kinds import kind_overlay
from reconciler.catalog.load import load_catalog, unknown_model_fix
from reconciler.catalog.load import model_kinds
from reconciler.errors import ArtifactError
from reconciler.source.git import head_sha
from reconciler.source.hashing import weights_md5
from reconciler.build.registry import image_commit, registry_digest
from reconciler.catalog import environments

STEPS = ("hash", "fetch", "build", "image")
BENTO_URL_ENV = "RECONCILER_BENTO_URL"  # where the cluster downloads exported bentos: a template with {model} {tag}
BENTO_EXPORT_ENV = "RECONCILER_BENTO_EXPORT"  # where `bentoml export` writes them (path or fs URL), same template
# the CPU images' base (the bentofile's docker.base_image) on THIS build machine: for builders that cannot pull
# BentoML's default base (e.g. the e2e tier, tests/e2e/base-image.sh); production leaves it unset
BASE_IMAGE_ENV = "RECONCILER_BENTO_BASE_IMAGE"

NO_IMAGE_BACKEND = (
    "image not built: no container engine here (docker with a running daemon, podman, buildah, nerdctl or "
    "buildctl) and no Argo server configured. To get images, run `reconciler build --env ENV` on a runner "
    "with Docker, or set ARGO_SERVER (and RECONCILER_BENTO_URL) to build them with the image-build workflow")


# --------------------------------------------------------------------------- typed results


@dataclass
class ModelBuild:
    model: str
    action: Action
    hash: str | None = None  # full content hash
    bento: str | None = None  # <model>:<tag> (catalog/images.image_tag)
    image: str | None = None  # <registry>/<model>@sha256:... when the digest is known, else the tagged ref
    built: list[str] = field(default_factory=list)  # steps that did work: fetch, build, image
    message: str = ""
    error: ReconcilerError | None = None
    bentos: dict[str, str] = field(default_factory=dict)  # pool kind -> bento tag (one bento per kind served)
    images: dict[str, str] = field(default_factory=dict)  # pool kind -> image reference

    def as_dict(self) -> dict[str, object]:
        return {"model": self.model, "action": self.action.value, "hash": self.hash, "bento": self.bento,
                "image": self.image, "bentos": self.bentos, "images": self.images, "built": self.built,
                "message": self.message, **({"error": str(self.error)} if self.error else {})}


@dataclass
class BuildReport:
    results: dict[str, ModelBuild] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(r.action is not Action.failed for r in self.results.values())

    @property
    def summary(self) -> Summary:
        return Summary.of(self.results.values())

    def as_dict(self) -> dict[str, object]:
        return {"ok": self.ok, "summary": self.summary.as_dict(),
                "models": [self.results[m].as_dict() for m in sorted(self.results)]}


# --------------------------------------------------------------------------- known image digests


# --------------------------------------------------------------------------- orchestration


@dataclass
class BuildOptions:
    home: Path | None = None  # Bento store; default $BENTOML_HOME or ~/bentoml
    registry: str | None = None  # image registry prefix (from --env or --registry); None: no image step
    environment: str | None = None
    engine: str | None | bool = True  # True: detect; None/False: none; a name: use it
    argo: bool = True  # hand off to the image-build workflow when ARGO_SERVER is set
    base_image: str | None = None  # CPU bentos' docker.base_image; default $RECONCILER_BENTO_BASE_IMAGE, else the bentofile's


Progress = Callable[[str, str, str], None]  # (model, step, state: running|done|skipped|failed)


def build_models(root: Path, models: Iterable[str] | None = None, options: BuildOptions | None = None,
                 progress: Progress | None = None) -> BuildReport:
    """Build every (or the named) model of the repository at `root`'s working tree."""

    options = options or BuildOptions()
    if options.base_image is None and os.environ.get(BASE_IMAGE_ENV, "").strip():
        options = replace(options, base_image=os.environ[BASE_IMAGE_ENV].strip())
    root = Path(root).resolve()
    wanted = set(models) if models else None
    catalog = load_catalog(root, only=wanted)
    report = BuildReport()
    notify = progress or (lambda model, step, state: None)
    for name in sorted(wanted - set(catalog.models) - set(catalog.errors)) if wanted else []:
        report.results[name] = ModelBuild(name, Action.failed, message="no such model", error=SpecError.single(
            f"models/{name}", f"no model named {name!r}", fix=unknown_model_fix(root, name)))
    for name, err in sorted(catalog.errors.items()):
        report.results[name] = ModelBuild(name, Action.failed, message="invalid model spec", error=err)
        notify(name, "hash", "failed")
    entries = [catalog.models[n] for n in sorted(catalog.models)]
    if not entries:
        return report
    for e in entries:
        notify(e.name, "hash", "running")
    unsafe: dict[str, SpecError] = {}
    hashes = model_hashes(root, None, entries, errors=unsafe)  # SourceError: the repository itself is unusable
    for name, err in sorted(unsafe.items()):  # over a bound, or a pointer naming a path outside the model
        report.results[name] = ModelBuild(name, Action.failed, message="invalid model files", error=err)
        notify(name, "hash", "failed")
    entries = [e for e in entries if e.name not in unsafe]
    home = bentoml_home(options.home)
    store = ImageStore.read(images_file(root))  # recorded digests go to the working tree's lock
    if options.engine is True:
        engine = container_engine() if options.registry else None
    else:
        engine = options.engine or None
    clients: dict[str, object] = {}
    try:
        for entry in entries:
            notify(entry.name, "hash", "done")
            report.results[entry.name] = _build_one(root, catalog, entry, hashes[entry.name], home, store,
                                                    options, engine, clients, notify)
    finally:
        for client in clients.values():
            client.close()
    return report


def _build_one(root: Path, catalog, entry, model_hash: ModelHash, home: Path, store: ImageStore,
               options: BuildOptions, engine: str | None, clients: dict, notify: Progress) -> ModelBuild:
    """Build the model's bento and image for every pool kind it is served from (a kind's failure fails the model)."""
    name = entry.name
    kinds = model_kinds(catalog, entry, options.environment)
    digests: KindDigests = digests_of(catalog)
    result = ModelBuild(name, Action.unchanged, hash=model_hash.digest)
    notes: list[str] = []
    fetched = False
    for kind in kinds:
        version = image_tag(model_hash, kind, digests.of(entry.spec, kind))  # what the kind's image holds
        one = ModelBuild(name, Action.unchanged, hash=model_hash.digest, bento=f"{name}:{version}")
        fetched = _build_kind(root, entry, model_hash, kind, version, home, store, options, engine, clients, notify,
                              one, fetched)
        result.bentos[kind.value] = one.bento or ""
        if one.image:
            result.images[kind.value] = one.image
        result.built += [s for s in one.built if s not in result.built]
        prefix = f"{kind.value}: " if len(kinds) > 1 else ""
        if one.message:
            notes.append(prefix + one.message)
        if one.error is not None:
            result.action, result.error = Action.failed, one.error
            break
    first = kinds[0].value
    result.bento = result.bentos.get(first)
    result.image = result.images.get(first)
    if result.action is not Action.failed:
        result.action = Action.created if result.built else Action.unchanged
    result.message = "; ".join(notes)
    return result


def _build_kind(root: Path, entry, model_hash: ModelHash, kind: AcceleratorKind, version: str, home: Path,
                store: ImageStore, options: BuildOptions, engine: str | None, clients: dict, notify: Progress,
                result: ModelBuild, fetched: bool) -> bool:
    """One kind's bento and image (tagged `version`, images.image_tag) into `result`; returns whether the DVC
    artifacts are fetched."""
    name = entry.name
    step = "image"
    notes: list[str] = []
    try:
        tagged = f"{image_repository(options.registry, name)}:{version}" if options.registry else None
        if tagged:
            digest = store.get(tagged)
            if digest is None:
                try:
                    digest = registry_digest(tagged, clients)
                except RegistryError as exc:
                    notes.append(f"registry check failed, so the image is treated as missing ({exc.message})")
            if digest:
                store.record(tagged, digest, store.commit(tagged) or image_commit(tagged, clients, notes)
                             or bento.built_commit(bento.find_bento(home, name, version)))
                result.image = pinned(tagged, digest)
                result.message = f"image {result.image} exists"
                for s in ("fetch", "build", "image"):
                    notify(name, s, "skipped")
                return fetched
            result.image = tagged

        existing = bento.find_bento(home, name, version)
        if existing is not None:
            notify(name, "fetch", "skipped")
            notify(name, "build", "skipped")
            notes.insert(0, f"bento {existing.tag} exists")
        else:
            if not fetched:
                step = "fetch"
                notify(name, "fetch", "running")
                fetch_model(root, entry.path, entry.spec.artifacts, model_hash.kinds, entry.name)
                notify(name, "fetch", "done")
                result.built.append("fetch")
                fetched = True
            step = "build"
            notify(name, "build", "running")
            built = _build_bento(root, entry, model_hash, home, kind, version, options.base_image)
            notify(name, "build", "done")
            result.built.append("build")
            result.bento = built.tag
            notes.insert(0, f"built bento {built.tag}")

        step = "image"
        if tagged is None:
            notify(name, "image", "skipped")
            notes.append("no registry configured: pass --env ENV (or --registry) to build images")
        elif engine:
            notify(name, "image", "running")
            commit = bento.built_commit(bento.find_bento(home, name, version))
            bento.containerize_and_push(result.bento, tagged, engine, home,
                                        labels={GIT_COMMIT: commit} if commit else None)
            digest = registry_digest(tagged, clients)
            if digest is None:
                raise RegistryError(f"pushed {tagged} but the registry does not list it",
                                    fix="check that the push went to the registry configured for the environment")
            store.record(tagged, digest, commit)
            result.image = pinned(tagged, digest)
            result.built.append("image")
            notes.append(f"pushed {result.image} ({engine})")
            notify(name, "image", "done")
        elif options.argo and os.environ.get("ARGO_SERVER"):
            notify(name, "image", "running")
            note, submitted = _argo_image(root, entry, model_hash, result.bento, home, options, kind, version)
            notes.append(note)
            if submitted:  # False: this hash's workflow was submitted before, nothing new happened
                result.built.append("image")
            notify(name, "image", "done")
        else:
            notify(name, "image", "skipped")
            notes.append(NO_IMAGE_BACKEND)
        result.message = "; ".join(notes)
        return fetched
    except Exception as exc:  # one broken model never stops the others
        if not isinstance(exc, ReconcilerError):
            exc = BuildError(f"{step} of {name} ({kind.value}) failed unexpectedly: {type(exc).__name__}: {exc}",
                             fix="this is a bug or an environment problem (disk full, permissions): "
                                 "rerun with `--model " + name + "` and report it with the message above")
        notify(name, step, "failed")
        result.action, result.error = Action.failed, exc
        result.message = f"{step} failed"
        return fetched


def version_record(root: Path, entry, model_hash: ModelHash) -> dict:
    """What the service returns per request: content hash, the commit built from, the weights' DVC md5s."""

    try:
        commit = head_sha(root)
    except ReconcilerError:
        commit = "unknown"

    weights = weights_md5(model_hash, entry.path.relative_to(root).as_posix())
    return {"model": entry.name, "model_hash": model_hash.digest, "git_commit": commit, "weights_md5": weights}


def _build_bento(root: Path, entry, model_hash: ModelHash, home: Path, kind: AcceleratorKind, version: str,
                 base_image: str | None = None):
    folder = entry.path.relative_to(root).as_posix()
    files, shared = staged_files(root, folder, model_hash)
    for src in [*files.values(), entry.path / entry.spec.bentofile]:  # nothing outside the repository is staged
        guard.inside(root, src)
    absent = [rel for rel, src in files.items() if not (src.exists() or src.is_symlink())]
    if absent:
        raise ArtifactError(f"{absent[0]} of {entry.name} is not in the working tree after the DVC fetch",
                            fix="run `dvc pull` and check that the pointer's path matches the file")
    with tempfile.TemporaryDirectory(prefix=f"bento-{entry.name}-") as tmp:
        context = Path(tmp) / "context"
        staged = bento.stage_context(files, entry.path / entry.spec.bentofile, service=entry.spec.service,
                                     name=entry.name, model_hash=model_hash.digest, shared=shared, dest=context,
                                     overlay=bentofile_overlay(entry.spec, kind, base_image),
                                     version=version_record(root, entry, model_hash), lock=environments.lock_pins(root, entry.name))
        return bento.build(context, staged, name=entry.name, version=version, home=home)


def bentofile_overlay(spec, kind: AcceleratorKind, base_image: str | None = None) -> dict:
    """The kind's built-in bentofile overlay with the model's own `images.<kind>.bentofile` on top, and, for the
    cpu kind, the build machine's `base_image` (BuildOptions.base_image / $RECONCILER_BENTO_BASE_IMAGE) as
    `docker.base_image` over all of them. The base is not part of the content hash: a Bento store or registry
    that holds images built on another base keeps them under the same tag (use one store per base)."""

    own = spec.images.get(kind.value)
    sdk = neuron_sdk(own.neuron_sdk) if own is not None and own.neuron_sdk else None
    overlay = kind_overlay(kind, sdk=sdk)
    if own is not None and own.bentofile:
        overlay = {**merge_bentofile(overlay, own.bentofile), "files": overlay.get("files", {})}
    if base_image and kind == AcceleratorKind.cpu:
        overlay = {**merge_bentofile(overlay, {"docker": {"base_image": base_image}}), "files": overlay.get("files", {})}
    return overlay


def _argo_image(root: Path, entry, model_hash: ModelHash, tag: str, home: Path,
                options: BuildOptions, kind: AcceleratorKind, version: str) -> tuple[str, bool]:
    """Hand the image build to the image-build Argo Workflow (pipelines/build_image.py via reconciler.build.argo)."""

    url_template = os.environ.get(BENTO_URL_ENV)
    if not url_template:
        raise ArgoError(f"ARGO_SERVER is set but {BENTO_URL_ENV} is not: the workflow needs a URL to download the bento",
                        fix=f"export {BENTO_URL_ENV}='https://artifacts.example.com/bentos/{{model}}-{{tag}}.bento' "
                            f"and {BENTO_EXPORT_ENV} to where that URL is served from (e.g. s3://bucket/bentos/{{model}}-{{tag}}.bento)")
    fields = {"model": entry.name, "tag": version}
    destination = os.environ.get(BENTO_EXPORT_ENV, str(home / "exports" / "{model}-{tag}.bento")).format(**fields)
    local = "://" not in destination
    if local:
        Path(destination).parent.mkdir(parents=True, exist_ok=True)
    if not (local and Path(destination).is_file()):  # the export of a hash never changes
        bento.export(tag, destination, home)
    workflow = render_workflow(root, "build-image", entry.name, environment=options.environment or "dev",
                               model_hash=model_hash.digest, bento_url=url_template.format(**fields),
                               registry=options.registry, kind=kind.value)
    submitted = submit(workflow, ArgoConfig.from_env(), exists_ok=True)
    state = "submitted" if submitted.created else "already submitted"
    return (f"image build {state} to Argo: {submitted.namespace}/{submitted.name} {submitted.ui_url} "
            "(the digest is recorded by the next `reconciler build`, from the registry)"), submitted.created
