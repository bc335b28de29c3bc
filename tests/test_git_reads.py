"""The git adapter's reads that a plan repeats: file text at a ref through the long-lived `cat-file --batch`
(show_file), and `ls-tree` listings kept per process only when they name an immutable object (ls_tree)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import git
import pytest

from reconciler.source import git as source_git
from reconciler.source.git import ls_tree, open_repo, show_file

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false"]


def commit(root: Path, files: dict[str, str], message: str) -> str:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    subprocess.run([*GIT, "add", "-A"], cwd=root, check=True)
    subprocess.run([*GIT, "commit", "-qm", message], cwd=root, check=True)
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, check=True, capture_output=True,
                          text=True).stdout.strip()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    subprocess.run(["git", "init", "-q", "-b", "main", str(tmp_path)], check=True)
    return tmp_path


def test_show_file_reads_text_at_a_ref_and_says_none_when_absent(root: Path) -> None:
    first = commit(root, {"dev/meta.json": '{"a": 1}\n', "dev/notes.txt": "two\nlines\n\n"}, "one")
    subprocess.run(["git", "branch", "rendered/dev"], cwd=root, check=True)
    commit(root, {"dev/meta.json": '{"a": 2}\n'}, "two")
    assert show_file(root, "refs/heads/rendered/dev", "dev/meta.json") == '{"a": 1}'  # as `git show` prints it
    assert show_file(root, "main", "dev/meta.json") == '{"a": 2}'
    assert show_file(root, first, "dev/notes.txt") == "two\nlines\n"  # one trailing newline dropped, as git show
    assert show_file(root, "refs/heads/no-such-branch", "dev/meta.json") is None
    assert show_file(root, "main", "dev/missing.json") is None
    assert show_file(root, "main", "dev") is None  # a folder is not a file
    assert show_file(root, "main\nmain", "dev/meta.json") is None  # never a second request line


def test_ls_tree_keeps_listings_of_a_full_id_only(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sha = commit(root, {"a.txt": "a\n"}, "one")
    repo = open_repo(root)
    calls: list[tuple[str, ...]] = []
    real = git.cmd.Git._call_process

    def counting(self: git.cmd.Git, method: str, *args: object, **kwargs: object) -> object:
        if method == "ls_tree":
            calls.append(tuple(map(str, args)))
        return real(self, method, *args, **kwargs)

    monkeypatch.setattr(git.cmd.Git, "_call_process", counting)
    monkeypatch.setattr(source_git, "_LISTINGS", type(source_git._LISTINGS)())
    first = ls_tree(repo, "--name-only", "-z", sha)
    assert ls_tree(repo, "--name-only", "-z", sha) == first == "a.txt\0"
    assert len(calls) == 1  # the same commit's listing: read once
    assert ls_tree(repo, "--name-only", "-z", "main") == first
    commit(root, {"b.txt": "b\n"}, "two")
    assert ls_tree(repo, "--name-only", "-z", "main") == "a.txt\0b.txt\0"  # a branch moves: never kept
    assert ls_tree(repo, "--name-only", "-z", sha) == first  # the old commit still lists what it held
    assert len(calls) == 3
