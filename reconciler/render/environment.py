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

import hashlib
import os
import json
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from reconciler.render import kustomize
from reconciler.render import schemas
from reconciler import labels as L
from reconciler.catalog.load import ENVIRONMENTS_DIR, Catalog, placements
from reconciler.errors import ReconcilerError, RenderError, SpecError, ValidationError
from reconciler.render.manifests import image_for, model_objects, resource_quota
from reconciler.catalog.effective import effective_serving
from reconciler.catalog.files import read_yaml
from reconciler.catalog.specs import EnvironmentSpec
from reconciler.render.secrets import read_sealed

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


SAFE_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # libyaml when available: ~10x faster


def dump_objects(objects: list[dict]) -> str:
    return "".join("---\n" + yaml.dump(obj, Dumper=SAFE_DUMPER, sort_keys=True, default_flow_style=False)
                   for obj in objects)


def without_content_hash(obj: dict) -> dict:
    """A shallow copy of the object without the content-hash annotation (and no empty annotations)."""
    meta = dict(obj.get("metadata", {}))
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k != L.CONTENT_HASH}
    if annotations:
        meta["annotations"] = annotations
    else:
        meta.pop("annotations", None)
    return {**obj, "metadata": meta}


def content_hash(obj: dict) -> str:
    """sha256 of the object's canonical JSON, leaving out the content-hash annotation itself."""
    canonical = json.dumps(without_content_hash(obj), sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def with_content_hash(obj: dict) -> dict:
    meta = obj.setdefault("metadata", {})
    meta.setdefault("annotations", {})[L.CONTENT_HASH] = content_hash(obj)
    return obj


def validate_objects(objects: list[dict], model: str) -> None:
    """Strict offline schema validation; raises one ValidationError listing every problem.

    Custom resources have no schema here: the cluster's server-side dry run validates them at sync.
    """
    errors = []
    for obj in objects:
        ref = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
        errors.extend(f"{ref} {problem}" for problem in schemas.problems(obj) or [])
    if errors:
        raise ValidationError(f"model {model!r}: rendered objects are not valid Kubernetes objects", errors,
                              fix="fix the overlay patch or model spec field named in each error")


def _check_components(catalog: Catalog, env: EnvironmentSpec) -> list[Path]:
    components = []
    for folder in (catalog.root / ENVIRONMENTS_DIR / "base", catalog.root / ENVIRONMENTS_DIR / env.name):
        kfile = folder / "kustomization.yaml"
        if not kfile.is_file():
            continue
        rel = str(kfile.relative_to(catalog.root))
        kustomize.check_tree(catalog.root, folder)
        doc = read_yaml(kfile, display=rel) or {}
        if doc.get("kind") != "Component":
            raise SpecError.single(rel, f"kind is {doc.get('kind')!r}; it is applied on top of the generated models",
                                   field="kind", fix="set apiVersion: kustomize.config.k8s.io/v1alpha1 and kind: Component")
        components.append(folder)
    return components


def _kustomize(workdir: Path, env: EnvironmentSpec, models: dict[str, list[dict]], components: list[Path]) -> list[dict]:
    """One kustomize run over the generated objects of the given models (one resources file: a
    kustomization root per model costs kustomize ~30 ms each)."""
    top = workdir / ("render-" + (next(iter(models)) if len(models) == 1 else "all"))
    top.mkdir(parents=True, exist_ok=True)
    # JSON documents are YAML, and much cheaper to write than YAML for kustomize to read back
    (top / "objects.yaml").write_text("".join("---\n" + json.dumps(o) + "\n" for name in sorted(models)
                                              for o in models[name]), encoding="utf-8")
    kustomize.write_kustomization(top, {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": env.namespace,
        "resources": ["objects.yaml"],
        # kustomize refuses absolute roots; the folders were checked to stay inside the repository
        "components": [os.path.relpath(c, top) for c in components],
    })
    return kustomize.build(top)


CHUNK = 50  # models per kustomize run: kustomize's time grows faster than linearly with resources


def _render_chunk(workdir: Path, env: EnvironmentSpec, generated: dict[str, list[dict]], components: list[Path],
                  errors: dict[str, ReconcilerError]) -> dict[str, list[dict]]:
    """Render some models in one kustomize run; if it fails, each model alone, to pin the failure on its model."""
    try:
        return _split_by_model(_kustomize(workdir, env, generated, components), env, generated)
    except RenderError:
        if len(generated) == 1:
            raise
    rendered = {}
    for name, objects in generated.items():
        try:
            rendered.update(_render_chunk(workdir / name, env, {name: objects}, components, errors))
        except RenderError as exc:
            errors[name] = RenderError(f"model {name!r} in {env.name}: {exc.message}", fix=exc.fix)
    return rendered


def _split_by_model(objects: list[dict], env: EnvironmentSpec, models: dict[str, list[dict]]) -> dict[str, list[dict]]:
    rendered: dict[str, list[dict]] = {name: [] for name in models}
    for obj in objects:
        owner = (obj.get("metadata", {}).get("labels") or {}).get(L.MODEL)
        if owner not in rendered:
            meta = obj.get("metadata", {})
            raise SpecError.single(
                f"{ENVIRONMENTS_DIR}/{env.name}/kustomization.yaml",
                f"the overlay produced {obj.get('kind')}/{meta.get('name')}, which belongs to no model "
                f"(no {L.MODEL} label); overlays may only patch the models' objects",
                fix="remove the generator or resource from the overlay; shared objects belong in their own "
                    "folder, synced by Argo CD or Flux beside the models")
        rendered[owner].append(obj)
    return rendered


def render_environment(catalog: Catalog, env_name: str, *, models: set[str] | None = None,
                       images: dict[str, str] | None = None, validate: bool = True) -> EnvironmentRender:
    """Render every (or the named) model for one environment.

    Raises for problems of the environment as a whole (its spec, its overlay); problems of one
    model are collected in the result's `errors` and never stop the others.
    """
    env = catalog.environment(env_name)
    result = EnvironmentRender(env)
    quota = resource_quota(env)
    if quota is not None:
        result.shared.append(with_content_hash(quota))
    components = _check_components(catalog, env)
    images = images or {}
    generated: dict[str, list[dict]] = {}
    names = sorted(catalog.models if models is None else models & set(catalog.models))
    for name in sorted(set(catalog.errors) if models is None else set(catalog.errors) & models):
        result.errors[name] = catalog.errors[name]
    for name in names:
        entry = catalog.models[name]
        try:
            pools = placements(entry, env, catalog.pools)
            pool_images = {pool.name: image_for(images, name, pool) for pool in pools}
            if None in pool_images.values():
                raise RenderError(f"model {name!r}: no image resolved for environment {env.name!r}",
                                  fix="run `reconciler build` first, or pass images explicitly")
            generated[name] = model_objects(entry, env, pools, effective_serving(entry.spec, env), pool_images,
                                            catalog.pools)
        except ReconcilerError as exc:
            result.errors[name] = exc
    if not generated:
        return result

    names = sorted(generated)
    chunks = [{n: generated[n] for n in names[i:i + CHUNK]} for i in range(0, len(names), CHUNK)]
    with tempfile.TemporaryDirectory(prefix=f"render-{env.name}-") as tmp, \
            ThreadPoolExecutor(max_workers=min(len(chunks), os.cpu_count() or 1)) as pool:
        parts = pool.map(lambda i: _render_chunk(Path(tmp) / f"chunk-{i}", env, chunks[i], components, result.errors),
                         range(len(chunks)))
        rendered = {name: objects for part in parts for name, objects in part.items()}

    for name, objects in rendered.items():
        try:
            if validate:
                validate_objects(objects, name)
            sealed = read_sealed(catalog.root, env.name, name)
            result.models[name] = ModelRender(name, env.name, [with_content_hash(o) for o in objects], sealed)
        except (ValidationError, SpecError) as exc:
            result.errors[name] = exc
    return result
