"""Kustomize runs over chunks of models: one run per chunk; a failed chunk is bisected so that the
failure is pinned on the models that cause it and the others still render (see docs/limits.md)."""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from reconciler import labels as L
from reconciler.catalog.load import ENVIRONMENTS_DIR
from reconciler.catalog.specs import EnvironmentSpec
from reconciler.errors import ReconcilerError, RenderError, SpecError
from reconciler.render import kustomize
from reconciler.source import guard


def _kustomize(workdir: Path, env: EnvironmentSpec, models: dict[str, list[dict]], components: list[Path],
               timeout: float | None = None) -> list[dict]:
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
    return kustomize.build(top, timeout=timeout)


MIN_BISECT_TIMEOUT = 30.0  # seconds: the least time a bisected half gets (or kustomize_timeout, if smaller)


def model_error(name: str, env: EnvironmentSpec, exc: RenderError) -> RenderError:
    return type(exc)(f"model {name!r} in {env.name}: {exc.message}", fix=exc.fix)


def render_chunk(workdir: Path, env: EnvironmentSpec, generated: dict[str, list[dict]], components: list[Path],
                  errors: dict[str, ReconcilerError], timeout: float | None = None) -> dict[str, list[dict]]:
    """Render some models in one kustomize run; if it fails, bisect the chunk to pin the failure on
    the models that cause it (the others still render)."""
    timeout = timeout if timeout is not None else guard.limits().kustomize_timeout
    try:
        return _split_by_model(_kustomize(workdir, env, generated, components, timeout), env, generated)
    except RenderError as exc:
        if len(generated) == 1:
            name = next(iter(generated))
            errors[name] = model_error(name, env, exc)
            return {}
        return _bisect(workdir, env, generated, components, errors, timeout, exc)


def _bisect(workdir: Path, env: EnvironmentSpec, generated: dict[str, list[dict]], components: list[Path],
            errors: dict[str, ReconcilerError], timeout: float, failure: RenderError) -> dict[str, list[dict]]:
    """Both halves of a failed chunk, in parallel; recurse into a half that fails.

    After a timeout, halves get half the time, down to MIN_BISECT_TIMEOUT (kustomize is superlinear in
    its input, so a half that is fine finishes well within it): with the default 120 s, one hanging
    model among 50 costs 120 + 60 + 5 x 30 s, not 51 x 120 s as retrying each model alone did. When both halves of a timed-out chunk time out too, the hang
    is common to all its models (the overlay): each gets the timeout error and bisection stops.
    """
    names = sorted(generated)
    halves = [{n: generated[n] for n in names[:len(names) // 2]}, {n: generated[n] for n in names[len(names) // 2:]}]
    timed_out = isinstance(failure, kustomize.KustomizeTimeout)
    if timed_out:
        timeout = max(timeout / 2, min(guard.limits().kustomize_timeout, MIN_BISECT_TIMEOUT))

    def attempt(i: int) -> tuple[dict[str, list[dict]] | None, RenderError | None]:
        try:
            return _split_by_model(_kustomize(workdir / f"half-{i}", env, halves[i], components, timeout),
                                   env, halves[i]), None
        except RenderError as exc:
            return None, exc

    with ThreadPoolExecutor(max_workers=2) as pool:
        outcomes = list(pool.map(attempt, (0, 1)))
    if timed_out and all(isinstance(exc, kustomize.KustomizeTimeout) for _, exc in outcomes):
        for name in names:
            errors[name] = model_error(name, env, failure)
        return {}
    rendered: dict[str, list[dict]] = {}
    for i, (ok, exc) in enumerate(outcomes):
        if ok is not None:
            rendered.update(ok)
        elif len(halves[i]) == 1:
            assert exc is not None
            name = next(iter(halves[i]))
            errors[name] = model_error(name, env, exc)
        else:
            assert exc is not None
            rendered.update(_bisect(workdir / f"half-{i}", env, halves[i], components, errors, timeout, exc))
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
