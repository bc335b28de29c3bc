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
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from . import kustomize
from . import labels as L
from .catalog import ENVIRONMENTS_DIR, Catalog, placements
from .errors import ReconcilerError, RenderError, SpecError, ValidationError
from .manifests import image_for, model_objects
from .specs import EnvironmentSpec, effective_serving

KUBERNETES_SCHEMA_VERSION = "1.33"


@dataclass
class ModelRender:
    model: str
    environment: str
    objects: list[dict]

    def to_yaml(self) -> str:
        return dump_objects(self.objects)


@dataclass
class EnvironmentRender:
    environment: EnvironmentSpec
    models: dict[str, ModelRender] = field(default_factory=dict)
    errors: dict[str, ReconcilerError] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors

    def objects(self) -> list[dict]:
        return [obj for name in sorted(self.models) for obj in self.models[name].objects]

    def to_yaml(self) -> str:
        return dump_objects(self.objects())


def dump_objects(objects: list[dict]) -> str:
    return "".join("---\n" + yaml.safe_dump(obj, sort_keys=True, default_flow_style=False) for obj in objects)


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
    """Strict offline schema validation; raises one ValidationError listing every problem."""
    import kubernetes_validate

    errors = []
    for obj in objects:
        ref = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
        try:
            kubernetes_validate.validate(obj, KUBERNETES_SCHEMA_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            continue  # custom resources: the cluster's dry run validates them at sync
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path) or "(root)"
            errors.append(f"{ref} at {path}: {exc.message}")
        except kubernetes_validate.InvalidSchemaError as exc:  # pragma: no cover - packaging problem
            errors.append(f"{ref}: schema problem: {exc}")
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
        doc = kustomize.read_yaml(kfile, display=rel) or {}
        if doc.get("kind") != "Component":
            raise SpecError.single(rel, f"kind is {doc.get('kind')!r}; it is applied on top of the generated models",
                                   field="kind", fix="set apiVersion: kustomize.config.k8s.io/v1alpha1 and kind: Component")
        components.append(folder)
    return components


def _kustomize(workdir: Path, env: EnvironmentSpec, models: dict[str, list[dict]], components: list[Path]) -> list[dict]:
    for name, objects in models.items():
        folder = workdir / "models" / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "objects.yaml").write_text(dump_objects(objects), encoding="utf-8")
        kustomize.write_kustomization(folder, {"resources": ["objects.yaml"]})
    top = workdir / ("render-" + (next(iter(models)) if len(models) == 1 else "all"))
    kustomize.write_kustomization(top, {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": env.namespace,
        "resources": [f"../models/{name}" for name in sorted(models)],
        # kustomize refuses absolute roots; the folders were checked to stay inside the repository
        "components": [os.path.relpath(c, top) for c in components],
    })
    return kustomize.build(top)


def render_environment(catalog: Catalog, env_name: str, *, models: set[str] | None = None,
                       images: dict[str, str] | None = None, validate: bool = True) -> EnvironmentRender:
    """Render every (or the named) model for one environment.

    Raises for problems of the environment as a whole (its spec, its overlay); problems of one
    model are collected in the result's `errors` and never stop the others.
    """
    env = catalog.environment(env_name)
    result = EnvironmentRender(env)
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
            generated[name] = model_objects(entry, env, pools, effective_serving(entry.spec, env), pool_images)
        except ReconcilerError as exc:
            result.errors[name] = exc
    if not generated:
        return result

    with tempfile.TemporaryDirectory(prefix=f"render-{env.name}-") as tmp:
        workdir = Path(tmp)
        try:
            rendered = {name: [] for name in generated}
            for obj in _kustomize(workdir, env, generated, components):
                rendered[obj["metadata"]["labels"][L.MODEL]].append(obj)
        except RenderError:
            rendered = {}
            for name, objects in generated.items():
                try:
                    rendered[name] = _kustomize(workdir, env, {name: objects}, components)
                except RenderError as exc:
                    result.errors[name] = RenderError(f"model {name!r} in {env.name}: {exc.message}", fix=exc.fix)

    for name, objects in rendered.items():
        try:
            if validate:
                validate_objects(objects, name)
            result.models[name] = ModelRender(name, env.name, [with_content_hash(o) for o in objects])
        except ValidationError as exc:
            result.errors[name] = exc
    return result
