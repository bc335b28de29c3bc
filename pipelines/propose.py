"""Close the training loop: propose a retrained model's `.dvc` pointer and metrics.json back to git.

After `register` (`dvc add`, and `dvc push` to the environment's DVC remote), the new pointer and
metrics are committed on a branch of their own, `train/<model>-<md5 prefix>`, and pushed to the
repository's remote; with a GitHub token (GITHUB_TOKEN) and a github.com origin a pull request is
opened too. The change then reaches review and `reconciler plan` like any other commit: the plan of
that branch shows the metric change with its values.

The same function runs on a laptop (`reconciler pipeline run train --propose`, against the local
remotes) and in the Argo register step (`python -m pipelines.propose ...`). The push authenticates with
the git credentials folder (pipelines.gitauth: the environment's `pipelines.gitCredentialsSecret`, mounted
read-only in the register pod; `--git-credentials DIR` locally). Only the standard library and the `git`
command are used.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from . import gitauth
from .steps import StepError

POINTER = "model.pkl.dvc"
METRICS = "metrics.json"


class ProposeError(StepError):
    """The change could not be proposed (nothing to propose, git refused, the PR could not be opened)."""


@dataclass(frozen=True)
class Proposal:
    branch: str
    commit: str
    pushed_to: str | None
    pull_request: str | None  # the PR's URL when one was opened


def _git(root: Path, *args: str, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env} if env else None)
    if proc.returncode != 0:
        raise ProposeError(f"git {' '.join(args)} failed: {proc.stderr.strip() or proc.stdout.strip()}",
                           fix="check the repository's remote and credentials (a token or deploy key that may push: "
                               f"--git-credentials DIR or ${gitauth.CREDENTIALS_ENV}, in a cluster the environment's "
                               "pipelines.gitCredentialsSecret)")
    return proc.stdout.strip()


def _pointer_md5(pointer: Path) -> str:
    match = re.search(r"md5:\s*([0-9a-f]{32})", pointer.read_text(encoding="utf-8"))
    if not match:
        raise ProposeError(f"{pointer} has no md5", fix="run the register step (dvc add) first")
    return match.group(1)


def propose(repo_root: Path, model: str, *, remote: str = "origin", base: str | None = None,
            push: bool = True, token: str | None = None, credentials: str | os.PathLike | None = None) -> Proposal:
    """Commit models/<model>/{<artifact>.dvc..., metrics.json, .gitignore} on `train/<model>-<md5>` and push it
    (every DVC pointer of the folder: the artifacts model.yaml declares, model.pkl.dvc by default).

    The branch starts at `base` (default: HEAD); the working tree's branch is left as it was.
    `credentials`: the git credentials folder (default $GITOPS_GIT_CREDENTIALS; none: git's own setup).
    """
    root = Path(repo_root).resolve()
    folder = root / "models" / model
    pointers = sorted(p.name for p in folder.glob("*.dvc") if p.is_file())
    if not pointers or not (folder / METRICS).is_file():
        raise ProposeError(f"models/{model}: no {POINTER} and {METRICS} to propose (nor another declared artifact's "
                           "DVC pointer)", fix="run the train, evaluate and register steps first")
    pointer = folder / (POINTER if POINTER in pointers else pointers[0])
    branch = f"train/{model}-{_pointer_md5(pointer)[:12]}"
    paths = [f"models/{model}/{name}" for name in (*pointers, METRICS, ".gitignore") if (folder / name).is_file()]
    start = base or _git(root, "rev-parse", "HEAD")
    # commit through a temporary index: the working tree and the current branch are not touched
    index = root / ".git" / f"propose-{os.getpid()}.index"
    env = {**os.environ, "GIT_INDEX_FILE": str(index)}
    try:
        subprocess.run(["git", "read-tree", start], cwd=root, env=env, check=True, capture_output=True)
        subprocess.run(["git", "add", "-f", "--", *paths], cwd=root, env=env, check=True, capture_output=True)
        tree = subprocess.run(["git", "write-tree"], cwd=root, env=env, check=True, capture_output=True,
                              text=True).stdout.strip()
    except subprocess.CalledProcessError as exc:
        raise ProposeError(f"staging {', '.join(paths)} failed: {exc.stderr}") from None
    finally:
        index.unlink(missing_ok=True)
    metrics = json.loads((folder / METRICS).read_text(encoding="utf-8"))
    summary = ", ".join(f"{k} {metrics[k]}" for k in ("accuracy", "f1_macro") if k in metrics)
    message = f"Retrain {model}: {summary}\n\nNew weights {_pointer_md5(pointer)} (DVC), proposed by the register step."
    commit = _git(root, "commit-tree", tree, "-p", start, "-m", message)
    _git(root, "update-ref", f"refs/heads/{branch}", commit)
    pushed = None
    if push:
        try:
            with gitauth.git_environment(_git(root, "remote", "get-url", remote), credentials) as env:
                _git(root, "push", remote, f"{commit}:refs/heads/{branch}", env=env)
        except gitauth.CredentialsError as exc:
            raise ProposeError(exc.message, fix=exc.fix) from None
        pushed = remote
    if pushed and token is None:
        token = os.environ.get("GITHUB_TOKEN") or gitauth.token(credentials)
    url = _open_pull_request(root, remote, branch, model, message, token) if pushed else None
    return Proposal(branch, commit, pushed, url)


def _open_pull_request(root: Path, remote: str, branch: str, model: str, message: str,
                       token: str | None) -> str | None:
    origin = _git(root, "remote", "get-url", remote)
    match = re.match(r"^(?:https://github\.com/|git@github\.com:)([^/]+)/([^/]+?)(?:\.git)?/?$", origin)
    if not token or not match:
        return None  # a branch without a PR: no token, or not a GitHub origin
    owner, repo = match.groups()
    base = os.environ.get("PROPOSE_BASE_BRANCH", "main")
    title, _, body = message.partition("\n\n")
    request = urllib.request.Request(
        f"https://api.github.com/repos/{owner}/{repo}/pulls", method="POST",
        data=json.dumps({"title": title, "head": branch, "base": base, "body": body}).encode(),
        headers={"Authorization": f"Bearer {token}", "Accept": "application/vnd.github+json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # a fixed https URL
            return json.loads(response.read()).get("html_url")
    except OSError as exc:
        raise ProposeError(f"opening the pull request for {branch} failed: {exc}",
                           fix="check that GITHUB_TOKEN may create pull requests (pull-requests: write)") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.propose", description=__doc__.split("\n")[0])
    parser.add_argument("--repo-root", required=True, type=Path)
    parser.add_argument("--model", required=True)
    parser.add_argument("--remote", default="origin")
    parser.add_argument("--no-push", action="store_true")
    parser.add_argument("--git-credentials", type=Path, default=None,
                        help=f"the git credentials folder (default ${gitauth.CREDENTIALS_ENV}); see pipelines/gitauth.py")
    args = parser.parse_args(argv)
    try:
        result = propose(args.repo_root, args.model, remote=args.remote, push=not args.no_push,
                         credentials=args.git_credentials)
    except ProposeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"branch": result.branch, "commit": result.commit, "pull_request": result.pull_request}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
