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


def _problems(obj: dict) -> list[str]:
    key = (obj.get("metadata", {}).get("annotations") or {}).get(L.CONTENT_HASH) or content_hash(obj)
    found = _VALIDATED.get(key)
    if found is None:
        if len(_VALIDATED) > _VALIDATED_LIMIT:
            _VALIDATED.clear()
        found = _VALIDATED[key] = (schemas.problems(obj) or []) + server_rules.problems(obj)
    return found


def validate_objects(objects: list[dict], model: str) -> None:
    """Strict offline schema validation; raises one ValidationError listing every problem.

    Each distinct object content (by content hash) is validated once per process: the two
    revisions of a plan share most objects. Custom resources have no schema here: the cluster's
    server-side dry run validates them at sync.
    """
    errors = []
    shortest = None  # the longest model name every object name would fit (a name over its kind's limit)
    for obj in objects:
        name = str(obj.get("metadata", {}).get("name"))
        ref = f"{obj.get('kind')}/{name}"
        found = _problems(obj)
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


def _check_patch_targets(targets: list[kustomize.PatchTarget], env: EnvironmentSpec,
                         generated: dict[str, list[dict]], *, identity_only: bool) -> None:
    """Patches must match: a target selector matching none of the environment's objects is an error of
    the environment (kustomize would drop the patch silently). When only some models are rendered, only
    group/version/kind are checked (a name may belong to a model not rendered here)."""
    objects = [o for name in sorted(generated) for o in generated[name]]
    problems = []
    for target in targets:
        extra = selectors.unknown_fields(target.selector)
        if extra:
            problems.append(SpecProblem(target.file, f"unknown selector field(s) {', '.join(extra)}",
                                        field=target.field, fix="use " + ", ".join(selectors.SELECTOR_FIELDS)))
            continue
        try:
            hit = any(selectors.matches(target.selector, o, namespaces=(env.namespace,), identity_only=identity_only)
                      for o in objects)
        except selectors.BadSelector as exc:
            problems.append(SpecProblem(target.file, exc.message, field=f"{target.field}.{exc.field}",
                                        fix="fix the selector"))
            continue
        if not hit:
            shown = ", ".join(f"{k}: {v}" for k, v in target.selector.items())
            kinds = sorted({str(o.get("kind")) for o in objects})
            problems.append(SpecProblem(
                target.file, f"the patch target {{{shown}}} matches no object of environment {env.name!r} "
                f"(kinds rendered: {', '.join(kinds)}); kustomize would skip the patch silently",
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
                       cache: RenderCache | None = None, versions: dict | None = None) -> EnvironmentRender:  # versions: see model_versions
    """Render every (or the named) model for one environment.

    Raises for problems of the environment as a whole (its spec, its overlay); problems of one
    model are collected in the result's `errors` and never stop the others. With a `cache`, a
    model whose render key is cached is not rendered again, and new renders are stored.
    Validation and hashing of each chunk run in its worker, overlapping the other chunks' kustomize.
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
    generated: dict[str, list[dict]] = {}
    names = sorted(catalog.models if models is None else models & set(catalog.models))
    for name in sorted(set(catalog.errors) if models is None else set(catalog.errors) & models):
        result.errors[name] = catalog.errors[name]
    keys = render_keys(catalog, env_name, images, models=set(names), validate=validate, versions=versions) \
        if cache is not None else {}
    for name in names:
        entry = catalog.models[name]
        cached = cache.get(keys[name]) if cache is not None and name in keys else None
        if cached is not None:  # sealed Secrets are files, not rendered: read them every time
            try:
                result.models[name] = ModelRender(name, env.name, cached, read_sealed(catalog.root, env.name, name))
            except SpecError as exc:
                result.errors[name] = exc
            continue
        failed = cache.error(keys[name]) if cache is not None and name in keys else None
        if failed is not None:  # its render failed with these very inputs: the same error, no render
            result.errors[name] = failed
            continue
        try:
            pools, pool_images = _placed(catalog, env, name, images)
            generated[name] = model_objects(entry, env, pools, effective_serving(entry.spec, env), pool_images,
                                            catalog.pools, (versions or {}).get(name))
        except ReconcilerError as exc:
            result.errors[name] = exc
    if not generated:
        return result
    # rendered in part (a subset, errors, cache hits): only kinds can be checked, names may be elsewhere
    _check_patch_targets(targets, env, generated,
                         identity_only=models is not None or bool(result.errors) or bool(result.models))

    names = sorted(generated)
    chunks = [{n: generated[n] for n in names[i:i + CHUNK]} for i in range(0, len(names), CHUNK)]

    def work(i: int, tmp: str) -> dict[str, ModelRender | None]:
        done: dict[str, ModelRender | None] = {}
        for name, objects in render_chunk(Path(tmp) / f"chunk-{i}", env, chunks[i], components,
                                           result.errors).items():
            hashed = [with_content_hash(o) for o in objects]
            try:
                check_priority_classes(objects, env, name)
                if validate:
                    validate_objects(hashed, name)
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

    unsealed: set[str] = set()  # rendered, but its sealed Secrets failed to read
    with tempfile.TemporaryDirectory(prefix=f"render-{env.name}-") as tmp, \
            ThreadPoolExecutor(max_workers=min(len(chunks), os.cpu_count() or 1)) as pool:
        for part in pool.map(lambda i: work(i, tmp), range(len(chunks))):
            unsealed.update(n for n, m in part.items() if m is None)
            result.models.update({n: m for n, m in part.items() if m is not None})
    for name in names:  # kustomize names absolute paths: the temporary folders differ on every run
        failure = result.errors.get(name)
        if isinstance(failure, RenderError):
            result.errors[name] = stable_paths(failure, {tmp: "<render>", str(catalog.root): "<repo>"})
    if cache is not None:
        for name in names:
            if name not in keys or name in unsealed:
                continue
            if name in result.models:
                cache.put(keys[name], result.models[name].objects)
            elif name in result.errors and not isinstance(result.errors[name], kustomize.KustomizeTimeout):
                cache.put_error(keys[name], str(result.errors[name]))  # a function of the key: kept
    result.models = dict(sorted(result.models.items()))
    return result
