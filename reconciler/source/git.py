"""The git adapter: every read and write of git goes through here, with one error translation
(:func:`git_errors`: GitPython's exceptions, and git_cli's, become SourceError with git's own message and a fix).

The reads a plan makes (revisions, checkouts, diffs, trees, files at a ref) run the git command line through
reconciler.source.git_cli, without GitPython: a plan command does not import it (tests/test_cli_imports.py).
GitPython is imported by the first function that needs it (:func:`open_repo`: commits to branches, the watched
branch's clone, configuration).

- revisions and checkouts (:func:`open_repo`, :func:`resolve`, :func:`checkout`, :func:`head_sha`);
- diffs (:func:`changed_paths`);
- trees and blobs for content hashing (:func:`open_tree`: a commit through ``git ls-tree`` and
  ``git cat-file --batch``, or the working tree honouring ``.gitignore``);
- fetch of a watched branch (:class:`GitMirror`, for ``reconciler run``);
- commits to other branches without touching the working tree (:func:`branch_worktree`, for hydrate).

`None` as a revision means the working tree, so a data scientist can see what an uncommitted change
would do with the same code path a pull request uses.

Over 400 lines: it is the one git adapter by design (one error translation, one place that runs
git), and checkouts written from git objects (:func:`write_tree`) share `cat_file_batch` with trees.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import os
import posixpath
import shutil
import subprocess
import tempfile
import sys
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import TYPE_CHECKING

from reconciler.errors import SourceError
from reconciler.source import guard
from reconciler.source.git_cli import FULL_ID, GitFailed, Located, locate, read_object, rev_parse, run

if TYPE_CHECKING:
    import git

WORKTREE = None


def gitpython() -> ModuleType:
    """GitPython, imported by the first function that needs it (module docstring)."""
    import git  # noqa: PLC0415 - a plan reads git through git_cli and never pays this import

    return git


def _gitpython_errors() -> tuple[tuple[type[Exception], ...], tuple[type[Exception], ...]]:
    """GitPython's (command errors, other errors), when it is imported (else none of them can be raised)."""
    loaded = sys.modules.get("git")
    if loaded is None:
        return (), ()
    return (loaded.GitCommandError,), (loaded.InvalidGitRepositoryError, loaded.NoSuchPathError, loaded.BadName)


@contextlib.contextmanager
def git_errors(what: str, *, fix: str | None = None) -> Iterator[None]:
    """The one translation of git's errors (GitPython's, and git_cli's GitFailed and ValueError):
    SourceError('<what>: <git's message>', fix)."""
    try:
        yield
    except Exception as exc:
        commands, others = _gitpython_errors()
        if isinstance(exc, (GitFailed, *commands)):
            detail = (getattr(exc, "stderr", "") or "").strip().removeprefix("stderr:").strip(" '\n") or str(exc)
            raise SourceError(f"{what}: {detail}", fix=fix) from None
        if isinstance(exc, (ValueError, *others)):
            raise SourceError(f"{what}: {exc}" if str(exc) else what, fix=fix) from None
        raise


# Repositories opened by this thread, by the folder asked for. GitPython starts two long-lived `git cat-file`
# processes per Repo object on its first object read; a plan opened ~15 Repos of one repository (each its own
# pair: ~0.3 s of CPU in process start-ups). A Repo is not thread-safe (its cat-file pipes), hence per thread.
_OPENED = threading.local()
_OPENED_LIMIT = 8


def open_repo(root: Path) -> git.Repo:
    gp = gitpython()
    opened: dict[str, git.Repo] = _OPENED.__dict__.setdefault("repos", {})
    key = os.path.abspath(root)
    repo = opened.get(key)
    if repo is not None and os.path.isdir(repo.git_dir):
        return repo
    try:
        repo = gp.Repo(root, search_parent_directories=True)
    except (gp.InvalidGitRepositoryError, gp.NoSuchPathError):
        raise SourceError(f"{root} is not inside a git repository",
                          fix="run the reconciler from a clone of the model repository (or `git init` it)") from None
    if len(opened) >= _OPENED_LIMIT:
        opened.pop(next(iter(opened))).close()
    opened[key] = repo
    return repo


def located(root: Path) -> Located | git.Repo:
    """The repository holding `root` for the reads of a plan: found without GitPython where git_cli.locate can
    (a plain checkout or linked worktree), else opened with GitPython, which decides as it always did."""
    found = locate(root)
    return found if found is not None else open_repo(root)


# `git ls-tree` listings of commits and trees named by their full id: a listing of an object never changes, and
# one plan asked for the same listing of the same commit up to three times (its stages each open the revision:
# ~5 ms of CPU per git process). Shared by threads (a dict under a lock); bounded by the bytes it holds.
_LISTINGS: OrderedDict[tuple[str, tuple[str, ...]], str] = OrderedDict()
_LISTINGS_LOCK = threading.Lock()
_LISTINGS_MAX_BYTES = 64 << 20
_listings_bytes = 0


def ls_tree(repo: Located | git.Repo, *args: str) -> str:
    """`git ls-tree ARGS` in the working tree (raises git_cli.GitFailed, as GitPython's `repo.git.ls_tree`
    raises GitCommandError). Run once per process and repository when ARGS name the commit or tree by its full
    id (immutable); listings of a branch or other name are not kept."""
    global _listings_bytes
    if not any(FULL_ID.fullmatch(a) for a in args):
        return run(repo.working_dir, "ls-tree", *args)
    key = (os.path.abspath(repo.git_dir), args)
    with _LISTINGS_LOCK:
        listing = _LISTINGS.get(key)
        if listing is not None:
            _LISTINGS.move_to_end(key)
            return listing
    listing = run(repo.working_dir, "ls-tree", *args)
    if len(listing) <= _LISTINGS_MAX_BYTES // 4:
        with _LISTINGS_LOCK:
            if key not in _LISTINGS:
                _LISTINGS[key] = listing
                _listings_bytes += len(listing)
                while _listings_bytes > _LISTINGS_MAX_BYTES:
                    _listings_bytes -= len(_LISTINGS.popitem(last=False)[1])
    return listing


def toplevel(root: Path) -> Path:
    """The root directory of the repository that holds ``root`` (callers get a path, never a Repo)."""
    return Path(located(root).working_dir)


def resolve_sha(root: Path, rev: str) -> str:
    """A revision of the repository at ``root`` (branch, tag, HEAD~1, sha) -> full commit sha."""
    return resolve(located(root), rev)


def resolve(repo: Located | git.Repo, rev: str) -> str:
    """A revision (branch, tag, HEAD~1, sha) -> full commit sha (`git rev-parse --verify REV^0`, as GitPython's
    `repo.commit(rev)`; a full id is resolved once per process)."""
    sha = rev_parse(repo, rev) if isinstance(rev, str) else None
    if sha is None:  # git's message adds nothing here
        raise SourceError(f"unknown git revision {rev!r} in {repo.working_dir}",
                          fix="fetch it first (`git fetch origin`), or name a branch, tag or commit that exists")
    return sha


def cat_file_batch(git_dir: str | os.PathLike[str], shas: Iterable[str]) -> dict[str, bytes]:
    """Object contents by sha, read with one `git cat-file --batch` (missing objects are left out)."""
    wanted = sorted(set(shas))
    if not wanted:
        return {}
    proc = subprocess.run(["git", "cat-file", "--batch"], input="\n".join(wanted).encode() + b"\n",
                          cwd=git_dir, capture_output=True, check=False)
    if proc.returncode != 0:
        raise SourceError(f"git cat-file failed in {git_dir}: {proc.stderr.decode(errors='replace').strip()}")
    found: dict[str, bytes] = {}
    out, pos = proc.stdout, 0
    while pos < len(out):
        eol = out.index(b"\n", pos)
        header = out[pos:eol].split()
        pos = eol + 1
        if len(header) != 3:  # "<sha> missing"
            continue
        size = int(header[2])
        found[header[0].decode()] = out[pos:pos + size]
        pos += size + 1
    return found


def write_tree(repo: Located | git.Repo, sha: str, dest: Path, paths: Iterable[str] | None = None) -> int:
    """Write the files of commit `sha` (only those under `paths`, if given) into `dest`, straight from
    git's object database: one `ls-tree` and one `cat-file --batch`, no archive. Symlinks stay
    symlinks (render refuses those that leave the repository); submodules are skipped."""
    args = ["-r", "-z", "--full-tree", sha]
    if paths is not None:
        paths = sorted(set(paths))
        if not paths:
            return 0
        args += ["--", *paths]
    failures: tuple[type[Exception], ...] = (GitFailed, *_gitpython_errors()[0])
    try:
        listing = ls_tree(repo, *args)
    except failures as exc:
        raise SourceError(f"cannot read revision {sha[:12]}: {getattr(exc, 'stderr', '').strip()}") from None
    entries = []
    for record in listing.split("\0"):
        if not record:
            continue
        meta, path = record.split("\t", 1)
        mode, kind, obj = meta.split()
        if kind != "blob":
            continue
        parts = PurePosixPath(path).parts
        if PurePosixPath(path).is_absolute() or ".." in parts:  # git never stores these; refuse them anyway
            raise SourceError(f"revision {sha[:12]} holds an unsafe path {path!r}")
        entries.append((mode, obj, path))
    blobs = cat_file_batch(repo.git_dir, (obj for _, obj, _ in entries))
    for mode, obj, path in entries:
        target = dest / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if mode == "120000":
            os.symlink(blobs[obj].decode("utf-8", "surrogateescape"), target)
        else:
            target.write_bytes(blobs[obj])
            if mode == "100755":
                target.chmod(0o755)
    return len(entries)


@contextlib.contextmanager
def checkout(root: Path, rev: str | None, paths: Iterable[str] | None = None) -> Iterator[Path]:
    """The repository's tree at `rev` in a temporary folder, or the working tree (rev None).

    `paths` (repository-relative files or folders) limits what is written: a plan of one model
    needs environments/ and that model's folder, not the other 999.
    """
    repo = located(root)
    top = Path(repo.working_dir)
    if rev is WORKTREE:
        yield top
        return
    sha = resolve(repo, rev)
    with tempfile.TemporaryDirectory(prefix=f"rev-{sha[:8]}-") as tmp:
        write_tree(repo, sha, Path(tmp), paths)
        yield Path(tmp)


# the options GitPython's `Commit.diff` passes (a raw listing of whole ids, renames found), after the revisions
_DIFF_OPTIONS = ("--abbrev=40", "--full-index", "-M", "--raw", "-z", "--no-color")


def changed_paths(root: Path, base: str, head: str | None) -> set[str]:
    """Paths (relative to the repository top) that differ between `base` and `head` (None: working tree,
    untracked files included): both paths of a rename."""
    repo = located(root)
    base_sha = resolve(repo, base)
    with git_errors(f"git diff {base}..{head or 'worktree'} failed"):
        if head is WORKTREE:
            listing = run(repo.working_dir, "diff", base_sha, *_DIFF_OPTIONS)
            status = run(repo.working_dir, "status", "--porcelain", "-z", "--untracked-files")
            paths = {entry[3:] for entry in status.split("\0") if entry.startswith("?? ")}
        else:
            listing = run(repo.working_dir, "diff-tree", base_sha, resolve(repo, head), "-r", *_DIFF_OPTIONS)
            paths = set()
    fields = listing.split("\0")
    i = 0
    while i < len(fields):
        meta = fields[i]
        if not meta.startswith(":"):
            i += 1
            continue
        count = 2 if meta.split()[-1][:1] in ("R", "C") else 1  # a rename or copy names both paths
        paths.update(p for p in fields[i + 1:i + 1 + count] if p)
        i += 1 + count
    return paths


def head_sha(root: Path) -> str:
    repo = open_repo(root)
    try:
        return repo.head.commit.hexsha
    except ValueError:
        raise SourceError(f"{repo.working_dir} has no commits yet", fix="commit the repository first") from None


def _identity(repo: git.Repo) -> dict[str, str]:
    """A committer identity for machines (CI runners) where git has none configured."""
    reader = repo.config_reader()
    if reader.has_option("user", "name") and reader.has_option("user", "email"):
        return {}
    name, email = "model-gitops-reconciler", "reconciler@localhost"
    return {"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email, "GIT_COMMITTER_NAME": name, "GIT_COMMITTER_EMAIL": email}


@dataclass
class BranchWorktree:
    """A temporary, emptied checkout of one branch: write files under ``path``, then :meth:`commit`."""

    path: Path
    branch: str
    existed: bool
    _repo: git.Repo
    _worktree: git.Repo

    def commit(self, message: str) -> str | None:
        """Commit everything under ``path``; the new sha, or None when nothing changed (a new branch always commits)."""
        with git_errors(f"could not write branch {self.branch}",
                        fix="check that the repository is writable and the branch is not checked out elsewhere"):
            self._worktree.git.add("-A")
            if not (self._worktree.is_dirty(index=True, untracked_files=True) or not self.existed):
                return None
            with self._worktree.git.custom_environment(**_identity(self._repo)):
                self._worktree.git.commit("-m", message, "--allow-empty")
            return self._worktree.head.commit.hexsha


@contextlib.contextmanager
def branch_worktree(repo_root: Path, branch: str, keep: tuple[str, ...] = ()) -> Iterator[BranchWorktree]:
    """Branch ``branch`` of the repository checked out empty in a temporary folder (an orphan branch
    when it does not exist yet), without touching the working tree; removed afterwards. Top-level
    entries named in ``keep`` stay as the branch has them (e.g. ``reports``, which canaries commit);
    ``keep=("*",)`` keeps the whole tree (to add a file to what the branch holds)."""
    git = gitpython()
    repo = open_repo(repo_root)
    fix = "check that the repository is writable and the branch is not checked out elsewhere"
    with tempfile.TemporaryDirectory(prefix="branch-") as tmp:
        path = Path(tmp) / "wt"
        try:
            with git_errors(f"could not write branch {branch}", fix=fix):
                existed = branch in repo.heads
                if existed:
                    repo.git.worktree("add", str(path), branch)
                else:
                    repo.git.worktree("add", "--detach", str(path))
                    fresh = git.Repo(path)
                    fresh.git.checkout("--orphan", branch)
                    fresh.git.rm("-rf", "--quiet", "--ignore-unmatch", ".")
                for child in path.iterdir():
                    if child.name != ".git" and child.name not in keep and "*" not in keep:
                        shutil.rmtree(child) if child.is_dir() else child.unlink()
            yield BranchWorktree(path, branch, existed, repo, git.Repo(path))
        finally:
            with git_errors(f"could not clean up the worktree of {branch}", fix=fix):
                if path.exists():
                    repo.git.worktree("remove", "--force", str(path))
                repo.git.worktree("prune")


# --------------------------------------------------------------------------- trees and blobs

def git_blob_id(content: bytes) -> str:
    """`git hash-object` of some bytes: sha1 of 'blob <len>\\0' + content."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


class Tree:
    """Sorted repo-relative paths with lazy blob ids and contents."""

    paths: list[str]
    batched = False  # True where prefetch() reads many blobs in one round trip

    def ids_under(self, folder: str) -> dict[str, str]:
        prefix = folder.rstrip("/") + "/"
        start = bisect.bisect_left(self.paths, prefix)
        out = {}
        for path in self.paths[start:]:
            if not path.startswith(prefix):
                break
            out[path] = self.blob_id(path)
        return out

    def exists(self, path: str) -> bool:
        i = bisect.bisect_left(self.paths, path)
        return i < len(self.paths) and self.paths[i] == path

    def blob_id(self, path: str) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def size(self, path: str) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def read(self, path: str) -> bytes:  # pragma: no cover - abstract
        raise NotImplementedError

    def prefetch(self, paths: Iterable[str]) -> None:
        """Read these blobs ahead where that is cheaper in one batch (a commit); nothing by default."""

    def link_target(self, path: str) -> str | None:  # pragma: no cover - abstract
        """The text of the symlink at `path` (a file or a folder), None when `path` is not a symlink."""
        raise NotImplementedError


class GitTree(Tree):
    """The files of a commit: `git ls-tree`, contents through git's object database.

    `folders` (paths under the tree's root, such as `models/x`): the folders a reader asks about. When given
    and few, the listing leaves out the other sub-folders of their parents (the other 9,999 model folders of a
    one-model plan) and lists such a folder only when a path under it is asked for: every answer is the
    full listing's, at the cost of what is read (a full listing of 10,000 models is 50,000 lines, per revision).
    """

    batched = True
    PARTIAL_MAX = 64  # more folders than this: one full listing is cheaper than their round trips

    def __init__(self, repo: Located | git.Repo, rev: str, prefix: str, folders: Iterable[str] | None = None) -> None:
        self._repo = repo
        self._prefix = prefix
        self._ids: dict[str, str] = {}
        self._sizes: dict[str, int] = {}
        self._links: set[str] = set()  # paths git stores as symlinks (mode 120000)
        self._deferred: set[str] = set()  # folders (under the root) present at the commit, not listed yet
        self._above_deferred: set[str] = set()  # the folders that hold them ("models", and "" for the root)
        with git_errors(f"git cannot resolve revision {rev!r} in {repo.working_dir}",
                        fix="pass a commit, branch or tag that exists (`git log --oneline`), "
                            "or fetch it first (`git fetch --all`)"):
            sha = rev_parse(repo, rev, peel="")
            if sha is None:  # GitPython's BadName, as `repo.rev_parse` said it
                raise ValueError(f"Ref '{rev}' did not resolve to an object")
            self._sha = sha
            wanted = sorted({f.strip("/") for f in folders}) if folders is not None else None
            if wanted is None or len(wanted) > self.PARTIAL_MAX or any(not f or f.startswith(".") for f in wanted):
                self._add(ls_tree(repo, "-r", "-z", "-l", "--full-tree", self._sha))
            else:
                specs = self._partial_specs(wanted)
                if specs:  # (none: no pathspec would list everything)
                    self._add(ls_tree(repo, "-r", "-z", "-l", "--full-tree", self._sha, "--", *specs))
        self.paths = sorted(self._ids)
        self._prefetched: dict[str, bytes] = {}

    def _partial_specs(self, wanted: list[str]) -> list[str]:
        """Pathspecs of everything but the siblings of the wanted folders, which are deferred instead: each
        ancestor of a wanted folder is listed one level deep (two small `ls-tree`s for `models/x`)."""
        ancestors = {"/".join(f.split("/")[:depth]) for f in wanted for depth in range(f.count("/") + 1)}
        parents = {posixpath.dirname(f) for f in wanted}
        specs: list[str] = []
        for ancestor in sorted(ancestors):
            folder = self._prefix + (ancestor + "/" if ancestor else "")
            listing = ls_tree(self._repo, "-z", self._sha, *(("--", folder) if folder else ()))
            for record in listing.split("\0"):
                if not record:
                    continue
                meta, path = record.split("\t", 1)
                rel = path[len(self._prefix):]
                if rel in ancestors:
                    continue  # listed one level deep by its own turn
                if meta.split()[1] == "tree" and ancestor in parents and rel not in wanted:
                    self._deferred.add(rel)  # another model's folder: listed when asked about
                    self._above_deferred.update(ancestors)
                else:
                    specs.append(path)
        return specs

    def _add(self, out: str) -> None:
        for record in out.split("\0"):
            if not record:
                continue
            meta, path = record.split("\t", 1)
            mode, kind, sha, size = meta.split()
            if kind != "blob" or not path.startswith(self._prefix):
                continue  # submodules (commit) are not model inputs
            self._ids[path[len(self._prefix):]] = sha
            self._sizes[path[len(self._prefix):]] = int(size)
            if mode == "120000":
                self._links.add(path[len(self._prefix):])

    def _load(self, path: str) -> None:
        """List the deferred folder `path` lies in (or is), if any: then the listing answers for it."""
        if not self._deferred:
            return
        parts = path.split("/")
        found = [f for f in ("/".join(parts[:i]) for i in range(1, len(parts) + 1)) if f in self._deferred]
        if path in self._above_deferred:  # a folder holding deferred ones (ids_under("models"))
            found += [d for d in self._deferred if d.startswith(path + "/")]
        for folder in found:
            self._deferred.discard(folder)
            with git_errors(f"git ls-tree {self._sha[:12]} {folder} failed"):
                self._add(ls_tree(self._repo, "-r", "-z", "-l", "--full-tree", self._sha, "--",
                                                 self._prefix + folder + "/"))
            self.paths = sorted(self._ids)

    def ids_under(self, folder: str) -> dict[str, str]:
        self._load(folder.rstrip("/"))
        return super().ids_under(folder)

    def exists(self, path: str) -> bool:
        self._load(path)
        return super().exists(path)

    def blob_id(self, path: str) -> str:
        self._load(path)
        return self._ids[path]

    def size(self, path: str) -> int:
        self._load(path)
        return self._sizes[path]

    def read(self, path: str) -> bytes:
        self._load(path)
        guard.check_blob_size(path, self._sizes[path])  # before the blob is read: parsing is bounded
        sha = self._ids[path]
        data = self._prefetched.pop(sha, None)
        if data is None:
            with git_errors(f"git cannot read object {sha} ({path})"):
                data = read_object(self._repo, sha)[2]
        return data

    def link_target(self, path: str) -> str | None:
        self._load(path)
        if path not in self._links:
            return None
        return self.read(path).decode("utf-8", "surrogateescape")

    def prefetch(self, paths: Iterable[str]) -> None:
        """Read many blobs with one `git cat-file --batch` instead of one round trip each."""
        limit = guard.limits().max_file_bytes  # an oversized blob is refused by read(), never fetched
        shas = sorted({self._ids[p] for p in paths if p in self._ids and self._sizes[p] <= limit})
        if len(shas) < 16:
            return
        try:
            self._prefetched.update(cat_file_batch(self._repo.git_dir, shas))
        except SourceError:
            return  # the lazy path reads them one by one and reports a real error


class WorkTree(Tree):
    """The working tree: tracked and untracked files that .gitignore does not exclude."""

    def __init__(self, root: Path) -> None:
        self._root = root
        with git_errors(f"git cannot list the working tree of {root}",
                        fix="run the reconciler inside a git checkout of the repository"):
            out = run(root, "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", ".")
        # ls-files paths are relative to the current directory of the call: the repository root here
        paths = {p for p in out.split("\0") if p}
        self.paths = sorted(p for p in paths if os.path.isfile(os.path.join(root, p)))  # deleted tracked files are gone
        self._ids: dict[str, str] = {}

    def blob_id(self, path: str) -> str:
        sha = self._ids.get(path)
        if sha is None:
            full = os.path.join(self._root, path)
            if os.path.islink(full):
                sha = git_blob_id(os.readlink(full).encode())
            else:  # streamed: a large tracked file costs time, never its size in memory
                h = hashlib.sha1(b"blob %d\0" % self.size(path))
                with open(full, "rb") as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        h.update(chunk)
                sha = h.hexdigest()
            self._ids[path] = sha
        return sha

    def size(self, path: str) -> int:
        return os.lstat(os.path.join(self._root, path)).st_size

    def link_target(self, path: str) -> str | None:
        full = os.path.join(self._root, path)
        return os.readlink(full) if os.path.islink(full) else None

    def read(self, path: str) -> bytes:
        full = os.path.join(self._root, path)
        if os.path.islink(full):  # git stores a symlink as its target
            return os.readlink(full).encode()
        guard.check_blob_size(path, self.size(path))  # before reading: parsing is bounded
        with open(full, "rb") as f:
            return f.read()


def open_tree(repo_root: Path, rev: str | None, folders: Iterable[str] | None = None) -> Tree:
    """The files of a revision (None: the working tree). `folders`: the folders the reader will ask about
    (a commit's listing may then leave the others out until asked: GitTree)."""
    repo = located(repo_root)
    top = Path(repo.working_dir or repo_root).resolve()
    rel = repo_root.resolve().relative_to(top).as_posix()
    prefix = "" if rel == "." else rel + "/"
    if rev is None:
        # ls-files runs in repo_root, so its paths are relative to it even inside a bigger repository
        return WorkTree(repo_root.resolve())
    return GitTree(repo, rev, prefix, folders)


# --------------------------------------------------------------------------- a watched remote branch

class GitMirror:
    """A local clone of the watched remote branch, refreshed with ``fetch`` (force-pushes included)."""

    def __init__(self, url: str, branch: str, workdir: Path) -> None:
        self.url, self.branch, self.path = url, branch, Path(workdir)
        self._repo: git.Repo | None = None

    @property
    def tracking(self) -> str:
        return f"refs/remotes/origin/{self.branch}"

    def _git(self) -> git.Repo:
        git = gitpython()
        if self._repo is None:
            with git_errors(f"cannot clone {self.url} (branch {self.branch}) into {self.path}",
                            fix="check the repository URL, the branch and the credentials"):
                if (self.path / ".git").exists():
                    self._repo = git.Repo(self.path)
                else:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    self._repo = git.Repo.clone_from(self.url, self.path, branch=self.branch, no_checkout=False)
        return self._repo

    def fetch(self) -> str:
        """Fetch the branch (a forced update is accepted) and return its head commit."""
        repo = self._git()
        with git_errors(f"git fetch of {self.url} {self.branch} failed",
                        fix="check the remote is reachable and the branch exists"):
            repo.remotes.origin.fetch(refspec=f"+refs/heads/{self.branch}:{self.tracking}", prune=True)
            return repo.commit(self.tracking).hexsha

    def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        git = gitpython()
        try:
            repo = self._git()
            return bool(repo.is_ancestor(repo.commit(ancestor), repo.commit(descendant)))
        except (git.GitCommandError, git.BadName, ValueError):  # unknown commit (rewritten away): not an ancestor
            return False

    def between(self, base: str, head: str) -> list[str]:
        return [c.hexsha for c in self._git().iter_commits(f"{base}..{head}", first_parent=True, reverse=True)]


# folder_trees answers by commit id: a plan asks for the model folders of its base three times (the untouched
# models' outcomes, and recording the outcomes of both revisions): 10,000 lines to parse each time at 10,000
# models (~11 ms of CPU)
_FOLDER_TREES: OrderedDict[tuple[str, str, str], dict[str, str]] = OrderedDict()
_FOLDER_TREES_LOCK = threading.Lock()
_FOLDER_TREES_KEPT = 4


def folder_trees(root: Path, rev: str, folder: str) -> dict[str, str]:
    """The tree id of each sub-folder of `folder` at a commit (e.g. every model folder), one `ls-tree`
    (parsed once per process and commit; each caller gets its own dict)."""
    repo = located(root)
    sha = resolve(repo, rev)
    key = (os.path.abspath(repo.git_dir), sha, folder)
    with _FOLDER_TREES_LOCK:
        kept = _FOLDER_TREES.get(key)
    if kept is not None:
        return dict(kept)
    with git_errors(f"git ls-tree {rev} {folder} failed"):
        listing = ls_tree(repo, "-z", sha, f"{folder}/")
    trees = {}
    for line in listing.split("\0"):
        meta, _, path = line.partition("\t")
        parts = meta.split()
        if len(parts) == 3 and parts[1] == "tree":
            trees[path.rpartition("/")[2]] = parts[2]
    with _FOLDER_TREES_LOCK:
        _FOLDER_TREES[key] = trees
        while len(_FOLDER_TREES) > _FOLDER_TREES_KEPT:
            _FOLDER_TREES.popitem(last=False)
    return dict(trees)


def remote_url(root: Path, remote: str = "origin") -> str | None:
    """The first URL of a remote of the repository at ``root`` (None when it has no such remote)."""
    try:
        return next(iter(open_repo(root).remote(remote).urls))
    except (ValueError, StopIteration):
        return None


def top_names(root: Path, rev: str) -> list[str]:
    """The names (files and folders) at the top of a commit's tree, one `ls-tree`."""
    repo = located(root)
    with git_errors(f"git ls-tree {rev} failed"):
        listing = ls_tree(repo, "--name-only", "-z", resolve(repo, rev))
    return [p for p in listing.split("\0") if p]


def show_file(root: Path, ref: str, path: str) -> str | None:
    """A file's text at a ref (`refs/heads/x`, `origin/x`, a sha), or None when the ref or file is absent."""
    repo = located(root)
    if "\n" in ref or "\n" in path:
        return None  # no such ref or file (and not a request line of the batch below)
    try:  # through the repository's long-lived `git cat-file --batch`, not a `git show` process per file
        _, kind, data = read_object(repo, f"{ref}:{path}")
    except ValueError:  # "<name> missing": no such ref, or no such file in it
        return None
    if kind != "blob":
        return None
    return data.decode("utf-8", "surrogateescape").removesuffix("\n")


def files_outside(root: Path, rev: str, folder: str) -> list[tuple[str, str, str]]:
    """(path, mode, blob id) of every file of a commit outside one top-level folder, sorted."""
    repo = located(root)
    sha = resolve(repo, rev)
    with git_errors(f"git ls-tree {rev} failed"):
        top = [line.partition("\t")[2] for line in ls_tree(repo, "-z", sha).split("\0") if line]
        others = [p for p in top if p != folder]
        listing = ls_tree(repo, "-r", "-z", sha, "--", *others) if others else ""
    files = []
    for line in listing.split("\0"):
        meta, _, path = line.partition("\t")
        parts = meta.split()
        if len(parts) == 3:
            files.append((path, parts[0], parts[2]))
    return sorted(files)


def fetch_branch(repo_root: Path, remote: str, branch: str) -> bool:
    """Make local ``branch`` what ``remote`` has (forced); False when the remote has no such branch."""
    git = gitpython()
    repo = open_repo(repo_root)
    try:
        repo.git.fetch(remote, f"+refs/heads/{branch}:refs/heads/{branch}")
        return True
    except git.GitCommandError as exc:
        if "couldn't find remote ref" in str(exc).lower():
            return False
        raise SourceError(f"could not fetch {branch} from {remote}: {(exc.stderr or '').strip()}",
                          fix=f"check that the remote {remote} is reachable with the reconciler's credentials") from None


def push_branch(repo_root: Path, remote: str, branch: str) -> None:
    """Push local ``branch`` to ``remote`` (fast-forward only: a rejected push raises SourceError)."""
    git = gitpython()
    repo = open_repo(repo_root)
    try:
        repo.git.push(remote, f"refs/heads/{branch}:refs/heads/{branch}")
    except git.GitCommandError as exc:
        raise SourceError(f"could not push {branch} to {remote}: {(exc.stderr or '').strip()}",
                          fix=f"give the reconciler's git credentials write access to {branch} on {remote}") from None


# --------------------------------------------------------------------------- the upstream branch, as the remote has it

@dataclass(frozen=True)
class UpstreamHead:
    """The head of the checkout's upstream branch as the remote answers now (`git ls-remote`), or why not."""

    remote: str = ""  # e.g. origin
    branch: str = ""  # e.g. main
    url: str = ""  # the remote's URL, without credentials
    revision: str | None = None
    error: str = ""  # "" when the remote answered

    def describe(self) -> str:
        if not self.remote:
            return "local checkout only (the branch has no upstream: `git branch --set-upstream-to origin/main`)"
        where = f"{self.remote}/{self.branch} ({self.url})"
        if self.revision is None:
            return f"{where}: not reachable ({self.error})"
        return f"{where} at {self.revision[:12]}, fetched from the remote now"


def redact_url(url: str) -> str:
    """A remote URL without its user and password (`https://x-access-token:TOKEN@github.com/...`). Pure."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    host, slash, path = rest.partition("/")
    return f"{scheme}://{host.rpartition('@')[2]}{slash}{path}"


def upstream_head(root: Path, *, timeout: float = 20.0) -> UpstreamHead:
    """Ask the remote for the head of the current branch's upstream (`git ls-remote`, no fetch: the checkout is
    left as it is). No upstream: UpstreamHead() (remote ""). Never prompts for credentials."""
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_SSH_COMMAND": "ssh -o BatchMode=yes"}

    def git_out(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], cwd=root, env=env, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)

    found = git_out("rev-parse", "--abbrev-ref", "--symbolic-full-name", "@{upstream}")
    remote, _, branch = found.stdout.strip().partition("/")
    if found.returncode != 0 or not branch:
        return UpstreamHead()
    url = redact_url(git_out("remote", "get-url", remote).stdout.strip())
    try:
        listed = git_out("ls-remote", "--exit-code", remote, f"refs/heads/{branch}")
    except subprocess.TimeoutExpired:
        return UpstreamHead(remote, branch, url, error=f"no answer in {timeout:.0f} s")
    sha = listed.stdout.split()[0] if listed.returncode == 0 and listed.stdout.split() else None
    error = "" if sha else (redact_url(listed.stderr.strip().splitlines()[-1]) if listed.stderr.strip()
                            else f"no branch {branch} there")
    return UpstreamHead(remote, branch, url, sha, error)
