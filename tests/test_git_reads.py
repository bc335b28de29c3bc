"""The git adapter's reads that a plan repeats: file text at a ref through the long-lived `cat-file --batch`
(show_file), and `ls-tree` listings kept per process only when they name an immutable object (ls_tree); and the
reads of a plan through the git command line (source/git_cli.py) answering as GitPython did."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from reconciler.errors import SourceError
from reconciler.source import git as source_git
from reconciler.source.git import (changed_paths, folder_trees, located, ls_tree, open_repo, open_tree, resolve_sha,
                                   show_file, toplevel)
from reconciler.source.git_cli import Located, locate

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
    repo = located(root)
    calls: list[tuple[str, ...]] = []
    real = source_git.run

    def counting(folder: str, *args: str) -> str:
        if args[0] == "ls-tree":
            calls.append(args)
        return real(folder, *args)

    monkeypatch.setattr(source_git, "run", counting)
    monkeypatch.setattr(source_git, "_LISTINGS", type(source_git._LISTINGS)())
    first = ls_tree(repo, "--name-only", "-z", sha)
    assert ls_tree(repo, "--name-only", "-z", sha) == first == "a.txt\0"
    assert len(calls) == 1  # the same commit's listing: read once
    assert ls_tree(repo, "--name-only", "-z", "main") == first
    commit(root, {"b.txt": "b\n"}, "two")
    assert ls_tree(repo, "--name-only", "-z", "main") == "a.txt\0b.txt\0"  # a branch moves: never kept
    assert ls_tree(repo, "--name-only", "-z", sha) == first  # the old commit still lists what it held
    assert len(calls) == 3


def test_a_plain_checkout_is_read_without_gitpython_and_as_gitpython_reads_it(root: Path, tmp_path_factory) -> None:
    first = commit(root, {"models/a/model.yaml": "a: 1\n", "README.md": "x\n"}, "one")
    (root / "models" / "a").mkdir(exist_ok=True)
    found = locate(root / "models" / "a")
    repo = open_repo(root / "models" / "a")
    assert isinstance(found, Located) and found.working_dir == repo.working_dir and found.git_dir == repo.git_dir
    assert toplevel(root / "models") == Path(repo.working_dir)
    # a linked worktree (a .git file), as GitPython names it
    linked = tmp_path_factory.mktemp("linked") / "wt"
    subprocess.run(["git", "worktree", "add", "-q", "--detach", str(linked), first], cwd=root, check=True)
    in_worktree, gp = locate(linked), open_repo(linked)
    assert in_worktree == Located(gp.working_dir, gp.git_dir)
    # a bare repository is left to GitPython
    bare = tmp_path_factory.mktemp("bare") / "r.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(root), str(bare)], check=True)
    assert locate(bare) is None and isinstance(located(bare), type(gp))
    outside = tmp_path_factory.mktemp("outside")
    assert locate(outside) is None
    with pytest.raises(SourceError, match="is not inside a git repository"):
        toplevel(outside)


def test_revisions_and_changes_read_through_the_git_command_line(root: Path) -> None:
    first = commit(root, {"a.txt": "a\n", "old/name.txt": "same bytes\n" * 20, "gone.txt": "g\n"}, "one")
    (root / "old" / "name.txt").rename(root / "new.txt")
    (root / "gone.txt").unlink()
    (root / "a.txt").write_text("changed\n")
    second = commit(root, {"b.txt": "b\n"}, "two")
    assert resolve_sha(root, "HEAD~1") == first and resolve_sha(root, "main") == second
    assert resolve_sha(root, first) == first
    for bad in ("no-such-branch", "--all", "HEAD\nHEAD", ""):
        with pytest.raises(SourceError, match="unknown git revision"):
            resolve_sha(root, bad)
    # both sides of a rename, deleted, changed and added files (as GitPython's Commit.diff listed them)
    assert changed_paths(root, first, second) == {"old/name.txt", "new.txt", "gone.txt", "a.txt", "b.txt"}
    (root / "b.txt").write_text("edited\n")
    (root / "untracked dir").mkdir()
    (root / "untracked dir" / "é f.txt").write_text("u\n")
    assert changed_paths(root, second, None) == {"b.txt", "untracked dir/é f.txt"}
    tree = open_tree(root, "HEAD~1")
    assert tree.read("a.txt") == b"a\n" and tree.paths == ["a.txt", "gone.txt", "old/name.txt"]
    with pytest.raises(SourceError, match="Ref 'nope' did not resolve to an object"):
        open_tree(root, "nope")


def test_folder_trees_answers_per_commit_and_each_caller_gets_its_own(root: Path) -> None:
    first = commit(root, {"models/a/m.yaml": "a\n", "models/b/m.yaml": "b\n", "models/c.txt": "not a folder\n"}, "one")
    trees = folder_trees(root, first, "models")
    assert set(trees) == {"a", "b"} and all(len(t) == 40 for t in trees.values())
    trees.pop("a")  # the caller's dict: the next answer is whole
    assert set(folder_trees(root, "main", "models")) == {"a", "b"}
    second = commit(root, {"models/d/m.yaml": "d\n"}, "two")
    assert set(folder_trees(root, "main", "models")) == {"a", "b", "d"}  # a branch that moved: its new commit
    assert set(folder_trees(root, first, "models")) == {"a", "b"} and second != first
