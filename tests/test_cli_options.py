"""One command-line vocabulary: the options every command shares are declared once (reconciler/cli/options.py),
mean the same in every command, and --repo reaches the command as one absolute, symlink-resolved path."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import git
import typer.main

from reconciler.cli import app
from tests.conftest import commit_all, copy_template
from tests.test_cli_help import _commands

CLI = Path(__file__).resolve().parents[1] / "reconciler" / "cli"
SHARED = ("--repo", "--kubeconfig", "--context", "--state-namespace")


def test_shared_options_are_declared_once_in_the_options_module():
    declared = {flag: [] for flag in SHARED}
    for path in sorted(CLI.glob("*.py")):
        for flag in SHARED:
            if re.search(rf"typer\.Option\(\s*\"{flag}\"", path.read_text()):
                declared[flag].append(path.name)
    assert declared == {flag: ["options.py"] for flag in SHARED}


def test_every_command_gives_a_shared_option_one_type_and_one_help():
    seen: dict[str, set[tuple[str, object, str]]] = {flag: set() for flag in SHARED}
    users: dict[str, list[str]] = {flag: [] for flag in SHARED}
    for path, command in _commands(typer.main.get_command(app)):
        for param in command.params:
            for flag in SHARED:
                if flag in param.opts:
                    seen[flag].add((str(param.type_descriptor.annotation), param.envvar, param.help))
                    users[flag].append(" ".join(path))
    assert all(len(kinds) == 1 for kinds in seen.values()), seen
    assert len(users["--repo"]) >= 15 and len(users["--kubeconfig"]) >= 8, users


def test_a_relative_repo_through_a_symlink_is_resolved_once(tmp_path: Path):
    root = copy_template(tmp_path / "checkout")
    commit_all(git.Repo.init(root), "template")
    (tmp_path / "link").symlink_to(root)
    script = Path(sys.executable).with_name("reconciler")
    done = subprocess.run([str(script), "render", "dev", "--repo", ".", "--model", "iris-classifier"],
                          cwd=tmp_path / "link", capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "name: iris-classifier" in done.stdout
