"""Hydrate: write rendered manifests where Argo CD or Flux can sync them (the rendered-manifests pattern).

Two targets: a folder (`<out>/<env>/<model>.yaml` plus a kustomization.yaml listing them), or one
git branch per environment (`rendered/<env>`) holding the same files, committed only when the
content changed, with the source commit in the message. Neither needs a cluster.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import yaml

from reconciler.render.environment import EnvironmentRender
from reconciler.source.git import branch_worktree

README = ("Rendered by the model reconciler from {revision}. Do not edit: change models/ or environments/ "
          "on the main branch instead.\n")


@dataclass(frozen=True)
class HydrateResult:
    environment: str
    target: str  # folder path or branch name
    files: int
    committed: str | None = None  # new commit sha when a branch was written, None when unchanged


def write_environment(render: EnvironmentRender, folder: Path, revision: str) -> int:
    """Replace `folder` with the environment's rendered files; returns how many model files were written."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    names = sorted(render.models)
    resources = []
    for name in names:
        (folder / f"{name}.yaml").write_text(render.models[name].to_yaml(), encoding="utf-8")
        resources.append(f"{name}.yaml")
        # SOPS Secrets stay encrypted, byte for byte as committed (their MAC holds): Flux's kustomize-controller
        # (spec.decryption.provider: sops) or KSOPS decrypts them in the cluster; plaintext is never written
        for sealed in render.models[name].secrets:
            file = f"{name}.secret-{sealed.name}.yaml"
            (folder / file).write_text(sealed.text, encoding="utf-8")
            resources.append(file)
    (folder / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": resources}, sort_keys=False), encoding="utf-8")
    (folder / "README.md").write_text(README.format(revision=revision), encoding="utf-8")
    return len(names)


def hydrate_folder(renders: dict[str, EnvironmentRender], out: Path, revision: str) -> list[HydrateResult]:
    return [HydrateResult(env, str(out / env), write_environment(render, out / env, revision))
            for env, render in sorted(renders.items())]


def hydrate_branches(renders: dict[str, EnvironmentRender], repo_root: Path, revision: str,
                     prefix: str = "rendered/") -> list[HydrateResult]:
    """Commit each environment's manifests to branch `<prefix><env>` without touching the working tree."""
    results = []
    for env, render in sorted(renders.items()):
        branch = f"{prefix}{env}"
        with branch_worktree(repo_root, branch) as wt:
            count = write_environment(render, wt.path / env, revision)
            committed = wt.commit(f"Render {env} from {revision[:12]}\n\nSource-Commit: {revision}")
        results.append(HydrateResult(env, branch, count, committed))
    return results
