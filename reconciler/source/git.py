"""The git adapter: revisions, their trees, and what changed between two of them.

Built on GitPython. `None` as a revision means the working tree, so a data scientist can see
what an uncommitted change would do with the same code path a pull request uses.
"""

from __future__ import annotations

import contextlib
import io
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import git

from reconciler.errors import SourceError

WORKTREE = None


def open_repo(root: Path) -> git.Repo:
    try:
        return git.Repo(root, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        raise SourceError(f"{root} is not inside a git repository",
                          fix="run the reconciler from a clone of the model repository (or `git init` it)") from None


def resolve(repo: git.Repo, rev: str) -> str:
    """A revision (branch, tag, HEAD~1, sha) -> full commit sha."""
    try:
        return repo.commit(rev).hexsha
    except (git.BadName, ValueError, git.GitCommandError):
        raise SourceError(f"unknown git revision {rev!r} in {repo.working_dir}",
                          fix="fetch it first (`git fetch origin`), or name a branch, tag or commit that exists") from None


@contextlib.contextmanager
def checkout(root: Path, rev: str | None) -> Iterator[Path]:
    """The repository's tree at `rev` in a temporary folder (symlinks kept as symlinks), or the working tree."""
    repo = open_repo(root)
    top = Path(repo.working_dir)
    if rev is WORKTREE:
        yield top
        return
    sha = resolve(repo, rev)
    buffer = io.BytesIO()
    try:
        repo.archive(buffer, treeish=sha, format="tar")
    except git.GitCommandError as exc:
        raise SourceError(f"cannot read revision {rev!r}: {exc.stderr.strip()}") from None
    buffer.seek(0)
    with tempfile.TemporaryDirectory(prefix=f"rev-{sha[:8]}-") as tmp:
        with tarfile.open(fileobj=buffer) as tar:
            # 'tar' filter: refuses members outside the folder; symlinks are kept, and render refuses
            # those that point out of the repository with a message naming them
            tar.extractall(tmp, filter="tar")
        yield Path(tmp)


def changed_paths(root: Path, base: str, head: str | None) -> set[str]:
    """Paths (relative to the repository top) that differ between `base` and `head` (None: working tree)."""
    repo = open_repo(root)
    base_commit = repo.commit(resolve(repo, base))
    try:
        if head is WORKTREE:
            diffs = base_commit.diff(None)
            untracked = set(repo.untracked_files)
        else:
            diffs = base_commit.diff(repo.commit(resolve(repo, head)))
            untracked = set()
    except git.GitCommandError as exc:
        raise SourceError(f"git diff {base}..{head or 'worktree'} failed: {exc.stderr.strip()}") from None
    paths = set(untracked)
    for d in diffs:
        paths.update(p for p in (d.a_path, d.b_path) if p)
    return paths


def head_sha(root: Path) -> str:
    repo = open_repo(root)
    try:
        return repo.head.commit.hexsha
    except ValueError:
        raise SourceError(f"{repo.working_dir} has no commits yet", fix="commit the repository first") from None
