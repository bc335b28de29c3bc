"""Commit files to a branch through git's plumbing, at the cost of what changed.

`git fast-import` writes a commit on top of the branch's tip from a stream of changes: the files
that changed (inline, one at a time), the folders that went away. Every other entry keeps its blob
id: nothing unchanged is read, checked out or compressed again, and the working tree and the current
checkout are never touched. A `rendered/<env>` branch of 10,000 models takes one model's change as
one blob and a few tree objects.

The ref moves only as a fast-forward of the tip this module read (fast-import refuses anything
else), so two writers racing on one branch cannot lose a commit: the loser gets a SourceError.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from reconciler.errors import SourceError
from reconciler.source.git import _identity, git_blob_id, located, open_repo

FIX = "check that the repository is writable; another writer may have moved the branch: run again"


@dataclass(frozen=True)
class Entry:
    mode: str
    kind: str  # blob | tree | commit
    sha: str


def branch_tip(root: Path, ref: str) -> str | None:
    """The commit a ref points at (`refs/heads/x`, `refs/remotes/origin/x`), None when it does not exist."""
    repo = located(root)
    done = subprocess.run(["git", "-C", repo.git_dir, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"],
                          capture_output=True, text=True, check=False)
    return done.stdout.strip() or None


def entries_under(root: Path, commit: str, *paths: str) -> dict[str, Entry]:
    """Every file at `commit` under the given folders or named by the given paths (recursive), path -> Entry:
    one `ls-tree`."""
    repo = located(root)
    done = subprocess.run(["git", "-C", repo.git_dir, "ls-tree", "-r", "-z", commit, "--", *paths],
                          capture_output=True, check=False)
    if done.returncode != 0:
        raise SourceError(f"git ls-tree {commit[:12]} {' '.join(paths)} failed: "
                          f"{done.stderr.decode(errors='replace').strip()}", fix=FIX)
    found = {}
    for record in done.stdout.split(b"\0"):
        meta, _, path = record.partition(b"\t")
        parts = meta.split()
        if len(parts) == 3:
            found[path.decode()] = Entry(parts[0].decode(), parts[1].decode(), parts[2].decode())
    return found


def _committer(repo) -> tuple[bytes, bytes]:
    """Who commits: git's own order (GIT_COMMITTER_* variables, then user.name/email), else the reconciler."""
    fallback = _identity(repo)
    reader = repo.config_reader()
    name = os.environ.get("GIT_COMMITTER_NAME") or fallback.get("GIT_COMMITTER_NAME") or reader.get_value("user", "name")
    email = os.environ.get("GIT_COMMITTER_EMAIL") or fallback.get("GIT_COMMITTER_EMAIL") or reader.get_value("user", "email")
    return str(name).replace("<", "").replace(">", "").encode(), str(email).replace("<", "").replace(">", "").encode()


def _data(payload: bytes) -> bytes:
    return b"data %d\n" % len(payload) + payload + b"\n"


def _quoted(path: str) -> bytes:
    if any(c in path for c in '"\n\\') or path.startswith(" "):
        raise SourceError(f"cannot commit a file named {path!r}", fix="rename it: quotes, newlines and backslashes are refused")
    return path.encode()


class BranchWriter:
    """One commit to `refs/heads/<branch>` on top of `parent` (None: a new, parentless branch), written as it
    is produced: each file's content goes to `git fast-import` as a blob when the caller has it (`blob`
    returns its id, the only thing the caller keeps), and `commit` names the files by id at the end. Memory
    holds ids, not contents: a cold hydrate of 10,000 models streams 10,000 blobs through one process.

    A blob the branch already holds (`existing`, from `entries_under`) or that was sent already is not sent
    again. `abort` ends the stream without a commit: blobs sent are left unreferenced (`git gc` prunes them).
    Use as a context manager: leaving it without `commit` aborts."""

    def __init__(self, root: Path, branch: str, *, parent: str | None,
                 existing: Mapping[str, Entry] | None = None) -> None:
        self.root, self.branch, self.parent = root, branch, parent
        self.existing = existing  # None: not known, so every commit is written
        self._known = {e.sha for e in (existing or {}).values()}
        self._proc: subprocess.Popen | None = None
        self._broken = False

    def __enter__(self) -> BranchWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()

    def _stream(self) -> subprocess.Popen:
        if self._proc is None:
            repo = open_repo(self.root)
            self._proc = subprocess.Popen(["git", "-C", repo.git_dir, "fast-import", "--quiet", "--date-format=now",
                                           "--done"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.PIPE)
        return self._proc

    def _write(self, data: bytes) -> None:
        if self._broken:
            return
        proc = self._stream()
        assert proc.stdin is not None
        try:
            proc.stdin.write(data)
        except BrokenPipeError:
            self._broken = True  # fast-import stopped: its stderr says why, at the end

    def blob(self, body: bytes) -> str:
        """Send one file's content (unless git has it already); its blob id."""
        sha = git_blob_id(body)
        if sha not in self._known:
            self._write(b"blob\n" + _data(body))
            self._known.add(sha)
        return sha

    def _finish(self) -> bytes:
        proc = self._proc
        if proc is None:
            return b""
        self._write(b"done\n")
        assert proc.stdin is not None and proc.stderr is not None
        try:
            proc.stdin.close()
        except BrokenPipeError:
            pass
        errors = proc.stderr.read()
        proc.wait()
        self._proc = None
        if proc.returncode != 0:
            raise SourceError(f"could not write branch {self.branch}: "
                              f"{errors.decode(errors='replace').strip()[-400:]}", fix=FIX)
        return errors

    def abort(self) -> None:
        """End the stream without a commit (blobs already sent stay unreferenced)."""
        if self._proc is not None:
            try:
                self._finish()
            except SourceError:
                pass

    def commit(self, put: Mapping[str, str], *, drop: Iterable[str] = (), message: str) -> str | None:
        """Commit: the files of `put` (path -> blob id, from `blob`), the files or folders of `drop` deleted
        first. Returns the new commit, or None when nothing would change: every file of `put` already has that
        id on the branch and `drop` names nothing that exists (then nothing is committed)."""
        drop = sorted(set(drop))
        existing = self.existing
        if self.parent is not None and existing is not None:
            present = set(existing)
            gone = [d for d in drop if d in present or any(p.startswith(d.rstrip("/") + "/") for p in present)]
            # a dropped folder whose files are all put back unchanged is no change either
            removed = {p for p in present for d in gone if p == d or p.startswith(d.rstrip("/") + "/")}
            same = all(path in existing and existing[path].sha == sha for path, sha in put.items())
            if same and removed <= set(put):
                self.abort()
                return None
        repo = open_repo(self.root)
        name, email = _committer(repo)
        self._write(b"commit refs/heads/%s\ncommitter %s <%s> now\n" % (self.branch.encode(), name, email))
        self._write(_data(message.encode()))
        if self.parent is not None:
            self._write(b"from %s\n" % self.parent.encode())
        for path in drop:
            self._write(b"D %s\n" % _quoted(path.rstrip("/")))
        for path in sorted(put):
            self._write(b"M 100644 %s %s\n" % (put[path].encode(), _quoted(path)))
        self._finish()
        tip = branch_tip(self.root, f"refs/heads/{self.branch}")
        if tip is None:  # pragma: no cover - fast-import succeeded
            raise SourceError(f"branch {self.branch} was not written", fix=FIX)
        return tip


def fetch_remote_branches(root: Path, names: Iterable[str], remote: str = "origin", timeout: float = 60.0) -> set[str]:
    """Fetch branches `names` of `remote` into `refs/remotes/<remote>/<name>` (what a clone with full history
    has); return the names fetched. Quiet and best-effort: no remote, a branch the remote lacks, a remote that
    asks for credentials or does not answer within `timeout` fetch nothing. Never prompts."""
    names = sorted(set(names))
    repo = located(root)
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true", "SSH_ASKPASS": "true",
           "GIT_SSH_COMMAND": os.environ.get("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")}
    base = ["git", "-C", repo.git_dir]
    try:
        if not names or subprocess.run([*base, "remote", "get-url", remote], capture_output=True,
                                       check=False).returncode != 0:
            return set()
        listed = subprocess.run([*base, "ls-remote", "--heads", remote, *(f"refs/heads/{n}" for n in names)],
                                capture_output=True, text=True, env=env, timeout=timeout, check=False)
        present = {line.split("\t", 1)[1][len("refs/heads/"):] for line in listed.stdout.splitlines() if "\t" in line}
        wanted = [n for n in names if n in present]
        if listed.returncode != 0 or not wanted:
            return set()
        done = subprocess.run([*base, "fetch", "--quiet", "--no-tags", remote,
                               *(f"+refs/heads/{n}:refs/remotes/{remote}/{n}" for n in wanted)],
                              capture_output=True, env=env, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return set()
    return set(wanted) if done.returncode == 0 else set()
