"""Hydrate: write rendered manifests where Argo CD or Flux can sync them (the rendered-manifests pattern).

Two targets: a folder (`<out>/<env>/<model>.yaml` plus a kustomization.yaml listing them), or one
git branch per environment (`rendered/<env>`) holding the same files, committed only when the
content changed, with the source commit in the message. Neither needs a cluster.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import git
import yaml

from reconciler.errors import SourceError
from reconciler.render.environment import EnvironmentRender

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


def _identity(repo: git.Repo) -> dict[str, str]:
    """A committer identity for machines (CI runners) where git has none configured."""
    reader = repo.config_reader()
    if reader.has_option("user", "name") and reader.has_option("user", "email"):
        return {}
    name, email = "model-gitops-reconciler", "reconciler@localhost"
    return {"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email, "GIT_COMMITTER_NAME": name, "GIT_COMMITTER_EMAIL": email}


def hydrate_branches(renders: dict[str, EnvironmentRender], repo_root: Path, revision: str,
                     prefix: str = "rendered/") -> list[HydrateResult]:
    """Commit each environment's manifests to branch `<prefix><env>` without touching the working tree."""
    repo = git.Repo(repo_root, search_parent_directories=True)
    results = []
    for env, render in sorted(renders.items()):
        branch = f"{prefix}{env}"
        with tempfile.TemporaryDirectory(prefix=f"hydrate-{env}-") as tmp:
            worktree = Path(tmp) / "wt"
            try:
                exists = branch in repo.heads
                if exists:
                    repo.git.worktree("add", str(worktree), branch)
                else:
                    repo.git.worktree("add", "--detach", str(worktree))
                    wt = git.Repo(worktree)
                    wt.git.checkout("--orphan", branch)
                    wt.git.rm("-rf", "--quiet", "--ignore-unmatch", ".")
                wt = git.Repo(worktree)
                for child in worktree.iterdir():
                    if child.name != ".git":
                        shutil.rmtree(child) if child.is_dir() else child.unlink()
                count = write_environment(render, worktree / env, revision)
                wt.git.add("-A")
                committed = None
                if wt.is_dirty(index=True, untracked_files=True) or not exists:
                    with wt.git.custom_environment(**_identity(repo)):
                        wt.git.commit("-m", f"Render {env} from {revision[:12]}\n\nSource-Commit: {revision}",
                                      "--allow-empty")
                    committed = wt.head.commit.hexsha
                results.append(HydrateResult(env, branch, count, committed))
            except git.GitCommandError as exc:
                raise SourceError(f"could not write branch {branch}: {exc.stderr.strip()}",
                                  fix="check that the repository is writable and the branch is not checked out elsewhere") from None
            finally:
                if worktree.exists():
                    repo.git.worktree("remove", "--force", str(worktree))
                repo.git.worktree("prune")
    return results
