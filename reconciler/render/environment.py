"""Render: models x environment -> validated, labelled, hashed Kubernetes objects.

For one environment the renderer writes, with pyyaml, a kustomization per model (its generated
Deployment / Service / HPA) and one top-level kustomization that sets the namespace and applies
`environments/base` and `environments/<env>` as kustomize Components. Real kustomize renders it in
one run; if that run fails, each model is rendered alone so that the failure is pinned on the
model that caused it and the others still render. Every object is then validated offline against
the Kubernetes schemas (strict: unknown fields are errors) and annotated with the hash of its
content, which is what sync compares to skip unchanged objects.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path


from reconciler.render import emit, kustomize
from reconciler.render import schemas, selectors, server_rules
from reconciler import labels as L
from reconciler.catalog.load import ENVIRONMENTS_DIR, Catalog, placements
from reconciler.errors import ReconcilerError, RenderError, SpecError, SpecProblem, ValidationError
from reconciler.render.cache import RenderCache, folder_digest, render_key
from reconciler.render.chunks import render_chunk
from reconciler.render.manifests import (check_priority_classes, image_for, model_objects, priority_classes,
                                         resource_quota)
from reconciler.catalog.effective import effective_serving
from reconciler.catalog.files import read_yaml
from reconciler.catalog.specs import EnvironmentSpec
from reconciler.render.secrets import read_sealed
from reconciler.render.content_hash import content_hash, with_content_hash

@dataclass
class ModelRender:
    model: str
    environment: str
    objects: list[dict]
    secrets: list = field(default_factory=list)  # render.secrets.SealedSecret: encrypted, decrypted only at sync

    def to_yaml(self) -> str:
        return dump_objects(self.objects)


ENVIRONMENT_GROUP = "(environment)"  # the environment's own objects (its ResourceQuota), beside the models


@dataclass
class EnvironmentRender:
    environment: EnvironmentSpec
    models: dict[str, ModelRender] = field(default_factory=dict)
    errors: dict[str, ReconcilerError] = field(default_factory=dict)
    shared: list[dict] = field(default_factory=list)  # objects of the environment itself (ResourceQuota)
    streamed: list[str] = field(default_factory=list)  # models handed to a sink, not kept (render_environment)

    @property
    def ok(self) -> bool:
        return not self.errors

    def objects(self) -> list[dict]:
        return [*self.shared, *(obj for name in sorted(self.models) for obj in self.models[name].objects)]

    def groups(self) -> dict[str, list[dict]]:
        """Objects by model, with the environment's own objects under ENVIRONMENT_GROUP."""
        result = {name: m.objects for name, m in self.models.items()}
        if self.shared:
            result[ENVIRONMENT_GROUP] = self.shared
        return result

    def to_yaml(self) -> str:
        return dump_objects(self.objects())


def dump_objects(objects: list[dict]) -> str:
    """A YAML stream of rendered objects, keys sorted (render.emit: PyYAML's meaning, ~10x its speed)."""
    return emit.dump_all(objects)


_VALIDATED: dict[str, list[str]] = {}  # content hash -> schema problems: each distinct content is validated once
_VALIDATED_LIMIT = 200_000


def _problems(obj: dict, remember: bool = True) -> list[str]:
    key = (obj.get("metadata", {}).get("annotations") or {}).get(L.CONTENT_HASH) or content_hash(obj)
    found = _VALIDATED.get(key)
    if found is None:
        found = (schemas.problems(obj) or []) + server_rules.problems(obj)
        if remember:
            if len(_VALIDATED) > _VALIDATED_LIMIT:
                _VALIDATED.clear()
            _VALIDATED[key] = found
    return found


def validate_objects(objects: list[dict], model: str, *, remember: bool = True) -> None:
    """Strict offline schema validation; raises one ValidationError listing every problem.

    Each distinct object content (by content hash) is validated once per process: the two
    revisions of a plan share most objects. `remember=False` (a streamed render: nothing renders
    these objects again) reads that memo without adding to it, so it does not grow with the
    repository. Custom resources have no schema here: the cluster's server-side dry run validates
    them at sync.
    """
    errors = []
    shortest = None  # the longest model name every object name would fit (a name over its kind's limit)
    for obj in objects:
        name = str(obj.get("metadata", {}).get("name"))
        ref = f"{obj.get('kind')}/{name}"
        found = _problems(obj, remember)
        errors.extend(f"{ref} {problem}" for problem in found)
        limit = server_rules.NAME_RULES.get(str(obj.get("kind")), server_rules._SUBDOMAIN)[2]
        if model in name and len(name) > limit and any(p.startswith("at metadata.name:") for p in found):
            fits = len(model) - (len(name) - limit)
            shortest = fits if shortest is None else min(shortest, fits)
    if errors:
        fix = "fix the overlay patch or model spec field named in each error"
        if shortest is not None:
            fix = (f"use a model name of at most {max(shortest, 1)} characters (`name:` in models/{model}/model.yaml "
                   "and the folder's name): the API server would refuse the longer object names; " + fix)
        raise ValidationError(f"model {model!r}: rendered objects are not valid Kubernetes objects "
                              "(the API server would refuse them)", errors, fix=fix)


def _check_components(catalog: Catalog, env: EnvironmentSpec,
                      targets: list[kustomize.PatchTarget] | None = None) -> list[Path]:
    """The overlay folders (base, then the environment's), admitted by the kustomize allow-list and
    bounded; their patch target selectors are appended to `targets`."""
    components = []
    for folder in (catalog.root / ENVIRONMENTS_DIR / "base", catalog.root / ENVIRONMENTS_DIR / env.name):
        kfile = folder / "kustomization.yaml"
        if not os.path.lexists(kfile):
            continue
        rel = str(kfile.relative_to(catalog.root))
        inputs = kustomize.check_tree(catalog.root, folder)
        if targets is not None:
            targets.extend(inputs.patch_targets)
        doc = read_yaml(kfile, display=rel, root=catalog.root) or {}
        if doc.get("kind") != "Component":
            raise SpecError.single(rel, f"kind is {doc.get('kind')!r}; it is applied on top of the generated models",
                                   field="kind", fix="set apiVersion: kustomize.config.k8s.io/v1alpha1 and kind: Component")
        components.append(folder)
    return components


CHUNK = 50  # models per kustomize run: kustomize's time grows faster than linearly with resources


def stable_paths(exc: RenderError, folders: dict[str, str]) -> RenderError:
    """The same error with temporary folders (a render's work folder, a revision's checkout) named by
    placeholders, so that its text is the same on every run: plans compare it, the cache keeps it. Pure."""
    message = exc.message
    for folder, name in folders.items():
        message = message.replace(os.path.realpath(folder), name).replace(folder, name)
    return exc if message == exc.message else type(exc)(message, fix=exc.fix)


class TargetHits:
    """Patches must match: a target selector matching none of the environment's objects is an error of the
    environment (kustomize would drop the patch silently). The generated objects are seen model by model
    (`see`, in name order) and not kept; `check` then raises for the targets nothing matched. When only
    some models are rendered (`identity_only`), only group/version/kind are checked (a name may belong to
    a model not rendered here). Both answers are followed while seeing, so `check` can give either."""

    def __init__(self, targets: list[kustomize.PatchTarget], env: EnvironmentSpec) -> None:
        self.targets, self.env = targets, env
        self.unknown = [selectors.unknown_fields(t.selector) for t in targets]
        # per target and per identity_only (False, True): None while nothing matched, True, or its BadSelector
        self.state: list[list[bool | selectors.BadSelector | None]] = [[None, None] for _ in targets]
        self.kinds: set[str] = set()

    def see(self, objects: list[dict]) -> None:
        self.kinds.update(str(o.get("kind")) for o in objects)
        for target, extra, state in zip(self.targets, self.unknown, self.state):
            if extra:
                continue
            for mode, identity_only in enumerate((False, True)):
                if state[mode] is not None:
                    continue
                try:
                    if any(selectors.matches(target.selector, o, namespaces=(self.env.namespace,),
                                             identity_only=identity_only) for o in objects):
                        state[mode] = True
                except selectors.BadSelector as exc:
                    state[mode] = exc

    def check(self, *, identity_only: bool) -> None:
        problems = []
        for target, extra, state in zip(self.targets, self.unknown, self.state):
            if extra:
                problems.append(SpecProblem(target.file, f"unknown selector field(s) {', '.join(extra)}",
                                            field=target.field, fix="use " + ", ".join(selectors.SELECTOR_FIELDS)))
                continue
            found = state[int(identity_only)]
            if isinstance(found, selectors.BadSelector):
                problems.append(SpecProblem(target.file, found.message, field=f"{target.field}.{found.field}",
                                            fix="fix the selector"))
            elif found is None:
                shown = ", ".join(f"{k}: {v}" for k, v in target.selector.items())
                problems.append(SpecProblem(
                    target.file, f"the patch target {{{shown}}} matches no object of environment {self.env.name!r} "
                    f"(kinds rendered: {', '.join(sorted(self.kinds))}); kustomize would skip the patch silently",
                    field=target.field, fix="fix the selector (kinds and names are case-sensitive regular expressions), "
                                            "or remove the patch"))
        if problems:
            raise SpecError(problems)


def _placed(catalog: Catalog, env: EnvironmentSpec, name: str, images: dict[str, str]) -> tuple[list, dict[str, str]]:
    """The pools a model is placed on in an environment and its image per pool; raises when one is missing."""
    pools = placements(catalog.models[name], env, catalog.pools)
    pool_images = {pool.name: image_for(images, name, pool) for pool in pools}
    if None in pool_images.values():
        raise RenderError(f"model {name!r}: no image resolved for environment {env.name!r}",
                          fix="run `reconciler build` first, or pass images explicitly")
    return pools, pool_images  # type: ignore[return-value]


def render_keys(catalog: Catalog, env_name: str, images: dict[str, str], *, models: set[str] | None = None,
                validate: bool = True, versions: dict[str, dict[str, dict[str, str]]] | None = None) -> dict[str, str]:
    """The render-cache key of every (or the named) renderable model of an environment (see render.cache).

    Two revisions whose key for a model is the same render it identically; models that cannot be
    placed or have no image have no key (rendering them reports why).
    """
    env = catalog.environment(env_name)
    overlays = folder_digest(_component_folders(catalog, env))
    all_pools = [catalog.pools[n] for n in sorted(catalog.pools)]
    keys = {}
    for name in sorted(catalog.models if models is None else models & set(catalog.models)):
        try:
            _, pool_images = _placed(catalog, env, name, images)
        except ReconcilerError:
            continue
        keys[name] = render_key(catalog.models[name].spec, env, all_pools, pool_images, overlays, validate, (versions or {}).get(name))
    return keys


def _component_folders(catalog: Catalog, env: EnvironmentSpec) -> list[Path]:
    return [catalog.root / ENVIRONMENTS_DIR / "base", catalog.root / ENVIRONMENTS_DIR / env.name]


def render_environment(catalog: Catalog, env_name: str, *, models: set[str] | None = None,
                       images: dict[str, str] | None = None, validate: bool = True,
                       cache: RenderCache | None = None, versions: dict | None = None,  # versions: see model_versions
                       sink: Callable[[ModelRender], None] | None = None) -> EnvironmentRender:
    """Render every (or the named) model for one environment.

    Raises for problems of the environment as a whole (its spec, its overlay); problems of one
    model are collected in the result's `errors` and never stop the others. With a `cache`, a
    model whose render key is cached is not rendered again, and new renders are stored.
    Validation and hashing of each chunk run in its worker, overlapping the other chunks' kustomize.

    With a `sink`, each model's render is handed to it (in this thread) as soon as its chunk is done
    and is not kept: `result.models` stays empty and `result.streamed` names the models sent. A chunk's
    generated objects are made in its worker, after the patch targets were checked on a first pass
    that keeps none of them, and validation does not add to its per-process memo, so memory holds a
    few chunks' objects, not the environment's (render.hydrate streams a cold hydrate of 10,000 models
    this way).
    """
    env = catalog.environment(env_name)
    result = EnvironmentRender(env)
    quota = resource_quota(env)
    if quota is not None:
        result.shared.append(with_content_hash(quota))
    result.shared.extend(with_content_hash(pc) for pc in priority_classes(env))
    targets: list[kustomize.PatchTarget] = []
    components = _check_components(catalog, env, targets)
    images = images or {}
    names = sorted(catalog.models if models is None else models & set(catalog.models))
    for name in sorted(set(catalog.errors) if models is None else set(catalog.errors) & models):
        result.errors[name] = catalog.errors[name]
    keys = render_keys(catalog, env_name, images, models=set(names), validate=validate, versions=versions) \
        if cache is not None else {}

    def keep(render: ModelRender) -> None:
        if sink is None:
            result.models[render.model] = render
        else:
            sink(render)
            result.streamed.append(render.model)

    def generate(name: str) -> list[dict]:
        pools, pool_images = _placed(catalog, env, name, images)
        entry = catalog.models[name]
        return model_objects(entry, env, pools, effective_serving(entry.spec, env), pool_images, catalog.pools,
                             (versions or {}).get(name))

    generated: dict[str, list[dict] | None] = {}  # None: made again in its chunk's worker (with a sink)
    hits = TargetHits(targets, env)
    for name in names:
        cached = cache.get(keys[name]) if cache is not None and name in keys else None
        if cached is not None:  # sealed Secrets are files, not rendered: read them every time
            try:
                keep(ModelRender(name, env.name, cached, read_sealed(catalog.root, env.name, name)))
            except SpecError as exc:
                result.errors[name] = exc
            continue
        failed = cache.error(keys[name]) if cache is not None and name in keys else None
        if failed is not None:  # its render failed with these very inputs: the same error, no render
            result.errors[name] = failed
            continue
        try:
            objects = generate(name)
        except ReconcilerError as exc:
            result.errors[name] = exc
            continue
        hits.see(objects)
        generated[name] = None if sink is not None else objects
    if not generated:
        return result
    # rendered in part (a subset, errors, cache hits): only kinds can be checked, names may be elsewhere
    hits.check(identity_only=models is not None or bool(result.errors) or bool(result.models) or bool(result.streamed))

    names = sorted(generated)
    chunks = [names[i:i + CHUNK] for i in range(0, len(names), CHUNK)]

    def work(i: int, tmp: str) -> dict[str, ModelRender | None]:
        done: dict[str, ModelRender | None] = {}
        chunk: dict[str, list[dict]] = {}
        for n in chunks[i]:
            made = generated[n]
            chunk[n] = generate(n) if made is None else made
        for name, objects in render_chunk(Path(tmp) / f"chunk-{i}", env, chunk, components,
                                          result.errors).items():
            hashed = [with_content_hash(o) for o in objects]
            try:
                check_priority_classes(objects, env, name)
                if validate:
                    validate_objects(hashed, name, remember=sink is None)
            except (ValidationError, SpecError) as exc:
                result.errors[name] = exc
                continue
            try:
                sealed = read_sealed(catalog.root, env.name, name)
            except SpecError as exc:  # not a render error: sealed files are read every time, never cached
                result.errors[name] = exc
                done[name] = None
                continue
            done[name] = ModelRender(name, env.name, hashed, sealed)
        return done

    with tempfile.TemporaryDirectory(prefix=f"render-{env.name}-") as tmp, \
            ThreadPoolExecutor(max_workers=min(len(chunks), os.cpu_count() or 1)) as pool:
        for i, part in enumerate(pool.map(lambda i: work(i, tmp), range(len(chunks)))):
            for name in chunks[i]:  # this chunk's worker is done: its models' outcomes are final
                failure = result.errors.get(name)
                if isinstance(failure, RenderError):  # kustomize names absolute paths: temporary folders differ
                    result.errors[name] = stable_paths(failure, {tmp: "<render>", str(catalog.root): "<repo>"})
                render = part.get(name)
                if cache is not None and name in keys:
                    if render is not None:
                        cache.put(keys[name], render.objects)
                    elif name not in part and name in result.errors \
                            and not isinstance(result.errors[name], kustomize.KustomizeTimeout):
                        cache.put_error(keys[name], str(result.errors[name]))  # a function of the key: kept
                if render is not None:
                    keep(render)
            generated.update(dict.fromkeys(chunks[i]))  # with no sink, the chunk's objects go too
    result.models = dict(sorted(result.models.items()))
    return result
