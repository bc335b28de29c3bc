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
from reconciler.render.environment import EnvironmentRender, dump_objects
from reconciler.render.manifests import namespace
from reconciler.source.git import branch_worktree

README = ("Rendered by the model reconciler from {revision}. Do not edit: change models/ or environments/ "
          "on the main branch instead.\n")
LAYOUTS = ("plain", "kustomize")
MANIFEST = "manifest.yaml"
METADATA = "hydrator.metadata"
BRANCH_PREFIX = "rendered/"  # the branch of environment <env> is rendered/<env>


@dataclass(frozen=True)
class HydrateResult:
    environment: str
    target: str  # folder path or branch name
    files: int  # models written
    committed: str | None = None  # new commit sha when a branch was written, None when unchanged


def metadata(revision: str, environment: str | None = None) -> str:
    """Argo CD's hydrator.metadata: JSON naming the dry (source) commit; deterministic (no clock).

    An environment's copy also names the renderer (`render.cache.renderer_id`): an environment is
    written only when every model of it validated, so "rendered clean from commit X by renderer R" is
    what a later plan reads from it (plan.outcomes.clean_environments)."""
    data: dict[str, object] = {"drySha": revision, "commands": ["reconciler hydrate"]}
    if environment is not None:
        data["environment"] = environment
        data["renderer"] = renderer_id()
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def write_environment(render: EnvironmentRender, folder: Path, revision: str, layout: str = "plain") -> int:
    """Replace `folder` with the environment's rendered files; returns how many models were written."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r} (one of {', '.join(LAYOUTS)})")
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    names = sorted(render.models)
    ns = namespace(render.environment)
    files = []
    if layout == "plain":
        (folder / MANIFEST).write_text(dump_objects([ns, *render.objects()]), encoding="utf-8")
    else:
        files.append("namespace.yaml")
        (folder / "namespace.yaml").write_text(dump_objects([ns, *render.shared]), encoding="utf-8")
        for name in names:
            (folder / f"{name}.yaml").write_text(render.models[name].to_yaml(), encoding="utf-8")
            files.append(f"{name}.yaml")
    # SOPS Secrets stay encrypted, byte for byte as committed (their MAC holds): Flux's kustomize-controller
    # (spec.decryption.provider: sops) or KSOPS decrypts them in the cluster; plaintext is never written
    for name in names:
        for sealed in render.models[name].secrets:
            file = f"{name}.secret-{sealed.name}.yaml"
            (folder / file).write_text(sealed.text, encoding="utf-8")
            files.append(file)
    if layout == "kustomize":
        (folder / "kustomization.yaml").write_text(yaml.safe_dump({
            "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
            "resources": files}, sort_keys=False), encoding="utf-8")
    (folder / METADATA).write_text(metadata(revision, render.environment.name), encoding="utf-8")
    (folder / "README.md").write_text(README.format(revision=revision), encoding="utf-8")
    return len(names)


def hydrate_folder(renders: dict[str, EnvironmentRender], out: Path, revision: str,
                   layout: str = "plain") -> list[HydrateResult]:
    return [HydrateResult(env, str(out / env), write_environment(render, out / env, revision, layout))
            for env, render in sorted(renders.items())]


def hydrate_branches(renders: dict[str, EnvironmentRender], repo_root: Path, revision: str,
                     prefix: str = BRANCH_PREFIX, layout: str = "plain") -> list[HydrateResult]:
    """Commit each environment's manifests to branch `<prefix><env>` without touching the working tree."""
    results = []
    for env, render in sorted(renders.items()):
        branch = f"{prefix}{env}"
        # reports/: the canary reports the reconciler commits to the branch (reconciler.report.commit)
        with branch_worktree(repo_root, branch, keep=("reports",)) as wt:
            count = write_environment(render, wt.path / env, revision, layout)
            (wt.path / METADATA).write_text(metadata(revision), encoding="utf-8")
            committed = wt.commit(f"Render {env} from {revision[:12]}\n\nSource-Commit: {revision}")
        results.append(HydrateResult(env, branch, count, committed))
    return results
