"""The reads a plan makes of a repository, through the git command line alone: no GitPython.

`reconciler plan` is a new process on every push of a pull request. Importing GitPython costs about 0.05 s of
CPU at each start (a tenth of a warm one-model plan), and a plan needs none of it: it lists trees
(`git ls-tree`), resolves revisions (`git rev-parse`), diffs two of them (`git diff-tree`) and reads objects
(`git cat-file --batch`). reconciler.source.git runs those reads through here; GitPython stays for what needs
it (commits to branches, fetches of a watched branch, configuration).

- :func:`locate` finds the repository of a folder as GitPython's `Repo(folder, search_parent_directories=True)`
  does (a `.git` folder, or a `.git` file naming one, in the folder or a parent; symlinks resolved) and returns
  None for anything else: an environment that points git elsewhere (GIT_DIR ...), a bare repository, a folder
  that is itself a git folder. The caller then opens it with GitPython, which answers as it always did.
- :func:`run` is `repo.git.<command>(...)`: the same command line and working folder, stdout decoded the same
  way (UTF-8, surrogateescape) without its one trailing newline, and a failure as :class:`GitFailed`, whose
  `stderr` reads as GitPython's GitCommandError's.
- :func:`read_object` is GitPython's long-lived `cat-file --batch` (`repo.git.get_object_data`): one process
  per repository and thread for every object a process reads, by id or by `<rev>:<path>`.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

# what points git (and GitPython) at another repository, worktree or object store: left to GitPython
_REDIRECTS = ("GIT_DIR", "GIT_WORK_TREE", "GIT_COMMON_DIR", "GIT_OBJECT_DIRECTORY")
_BARE = re.compile(rb"^\s*bare\s*=\s*true\s*$", re.MULTILINE | re.IGNORECASE)
FULL_ID = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


@dataclass(frozen=True)
class Located:
    """A repository as GitPython's Repo names it: the working tree's folder and its git folder."""

    working_dir: str
    git_dir: str


class Repository(Protocol):
    """What these reads need of a repository: a Located, or a GitPython Repo where GitPython opened it."""

    @property
    def working_dir(self) -> str | os.PathLike[str]: ...

    @property
    def git_dir(self) -> str | os.PathLike[str]: ...


class GitFailed(Exception):
    """A git command that exited non-zero. `stderr` is formatted as GitPython's GitCommandError formats it
    ("\\n  stderr: '<git's message>'"), so callers translate both the same way (source.git.git_errors)."""

    def __init__(self, command: Sequence[str], status: int, stderr: str) -> None:
        self.command, self.status = list(command), status
        self.stderr = f"\n  stderr: '{stderr}'" if stderr else ""
        super().__init__(f"Cmd('git') failed due to: exit code({status})\n  cmdline: {' '.join(command)}{self.stderr}")


def _git_folder(path: str) -> bool:
    """A non-bare repository's own git folder (HEAD, objects/, refs/), not a linked worktree's."""
    try:
        with open(os.path.join(path, "HEAD"), "rb") as head:
            text = head.read(256)
        with open(os.path.join(path, "config"), "rb") as config:
            bare = _BARE.search(config.read(1 << 20)) is not None
    except OSError:
        return False
    valid_head = (text.startswith(b"ref:") and text[4:].lstrip().startswith(b"refs/")) or \
        re.match(rb"(?:[0-9A-Fa-f]{64}|[0-9A-Fa-f]{40})", text) is not None
    return (valid_head and not bare and not os.path.lexists(os.path.join(path, "commondir"))
            and os.path.isdir(os.path.join(path, "objects")) and os.path.isdir(os.path.join(path, "refs")))


def _linked_folder(path: str) -> bool:
    """A linked worktree's git folder (`.git/worktrees/<name>`: HEAD, gitdir and commondir files)."""
    return all(os.path.isfile(os.path.join(path, name)) for name in ("HEAD", "gitdir", "commondir"))


def locate(root: Path) -> Located | None:
    """The repository holding `root` as GitPython finds it, or None: leave it to GitPython (module docstring)."""
    if not isinstance(root, Path) or any(name in os.environ for name in _REDIRECTS):
        return None
    try:
        current = str(root.resolve())
    except (OSError, RuntimeError):
        return None
    while True:
        dotgit = os.path.join(current, ".git")
        if os.path.isdir(dotgit):
            return Located(current, dotgit) if _git_folder(dotgit) else None
        if os.path.isfile(dotgit):  # a linked worktree: "gitdir: <its folder under the main .git/worktrees>"
            try:
                with open(dotgit, "rb") as file:
                    content = os.fsdecode(file.read(1 << 20)).rstrip("\r\n")
            except (OSError, UnicodeError):
                return None
            if not content.startswith("gitdir: ") or len(content) < 9:
                return None
            folder = os.path.normpath(os.path.join(current, content[8:]))
            return Located(current, folder) if _linked_folder(folder) else None
        if os.path.lexists(dotgit) or os.path.isfile(os.path.join(current, "HEAD")):
            return None  # something GitPython decides about (a git folder itself, a broken .git)
        current, tail = os.path.split(current)
        if not tail:
            return None


def _decode(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def run(folder: str | os.PathLike[str], *args: str) -> str:
    """`git ARGS` in `folder`: stdout as text without its one trailing newline; GitFailed when git fails."""
    command = ["git", *args]
    done = subprocess.run(command, cwd=folder, capture_output=True, check=False, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise GitFailed(command, done.returncode, _decode(done.stderr.removesuffix(b"\n")))
    return _decode(done.stdout.removesuffix(b"\n"))


# revisions named by their full id, once resolved: an object id names the same object for ever
_RESOLVED: dict[tuple[str, str], str] = {}
_RESOLVED_LOCK = threading.Lock()


def rev_parse(repo: Repository, rev: str, *, peel: str = "^0") -> str | None:
    """The id of `rev` (`^0`: the commit it names, as GitPython's `repo.commit(rev)`; `""`: the object itself, as
    `repo.rev_parse(rev)`), None when there is no such object. A full id is looked up once per process."""
    if not rev or rev.startswith("-") or "\n" in rev or "\0" in rev:
        return None  # not a revision (and never an option of rev-parse)
    git_dir = os.fspath(repo.git_dir)
    key = (git_dir, rev + peel)
    with _RESOLVED_LOCK:
        found = _RESOLVED.get(key)
    if found is not None:
        return found
    try:
        out = run(repo.working_dir, "rev-parse", "--verify", "--quiet", rev + peel)
    except GitFailed:
        return None
    if not FULL_ID.fullmatch(out):
        return None
    with _RESOLVED_LOCK:
        if FULL_ID.fullmatch(rev):
            _RESOLVED[key] = out
        if peel == "^0":  # the commit's own id names it too, peeled or not
            _RESOLVED[(git_dir, out + peel)] = _RESOLVED[(git_dir, out)] = out
    return out


class _Batch:
    """One long-lived `git cat-file --batch` (as GitPython keeps one per Repo): a request is one line, the
    answer a header and the object's bytes."""

    def __init__(self, repo: Repository) -> None:
        self.git_dir = os.fspath(repo.git_dir)
        self._proc = subprocess.Popen(["git", "cat-file", "--batch"], cwd=repo.working_dir, stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)

    def alive(self) -> bool:
        return self._proc.poll() is None and os.path.isdir(self.git_dir)

    def read(self, name: str) -> tuple[str, str, bytes]:
        """(id, type, bytes) of the object `name` names; ValueError when it names none (GitPython's error)."""
        stdin, stdout = self._pipes()
        stdin.write(name.encode("utf-8", "surrogateescape") + b"\n")
        stdin.flush()
        header = stdout.readline().split()
        if len(header) != 3:
            raise ValueError(f"SHA {_decode(header[0]) if header else ''} could not be resolved, git returned: "
                             f"{_decode(b' '.join(header))!r}")
        size = int(header[2])
        data = stdout.read(size + 1)[:size]  # the object, then the newline that ends it
        return _decode(header[0]), _decode(header[1]), data

    def _pipes(self) -> tuple[IO[bytes], IO[bytes]]:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        return self._proc.stdin, self._proc.stdout

    def close(self) -> None:
        stdin, _ = self._pipes()
        try:
            stdin.close()
        except OSError:
            pass
        self._proc.wait()


# one per repository and thread: the pipes carry one request at a time
_BATCHES = threading.local()
_BATCHES_LIMIT = 8


def read_object(repo: Repository, name: str) -> tuple[str, str, bytes]:
    """(id, type, bytes) of the object `name` names (an id, or `<rev>:<path>`), through the repository's
    long-lived `git cat-file --batch`; ValueError when it names none."""
    if "\n" in name or "\0" in name:
        raise ValueError(f"{name!r} is not one object name")  # it would be a second request line
    batches: dict[str, _Batch] = _BATCHES.__dict__.setdefault("batches", {})
    git_dir = os.fspath(repo.git_dir)
    batch = batches.get(git_dir)
    if batch is None or not batch.alive():
        if len(batches) >= _BATCHES_LIMIT:
            batches.pop(next(iter(batches))).close()
        batch = batches[git_dir] = _Batch(repo)
    return batch.read(name)
