"""Each command imports only what it uses: the set of modules the installed `reconciler` loads, per command.

The command runs as a user runs it: the installed console script, in a subprocess, from the repository
root; a two-line wrapper runs that script and writes `sys.modules` when the process exits, so nothing
here imports the code under test in-process. The start-up time itself is measured in benchmarks/
(cli_startup.py), not asserted here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import git
import pytest

from tests.conftest import commit_all, copy_template

SCRIPT = Path(sys.executable).with_name("reconciler")

# what a PR job and `--help` must never pay for: the build stage and the heavy optional libraries
HEAVY = ("reconciler.build", "bentoml", "dvc", "hera", "matplotlib", "scipy", "torch", "sklearn")


WRAPPER = ("import atexit, json, runpy, sys\n"
           "out, sys.argv = sys.argv[1], sys.argv[2:]\n"
           "atexit.register(lambda: json.dump(sorted(sys.modules), open(out, 'w')))\n"
           "runpy.run_path(sys.argv[0], run_name='__main__')\n")


def imported(args: list[str], cwd: Path, env: dict[str, str] | None = None,
             ) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    listing = cwd.parent / "modules.json"
    done = subprocess.run([sys.executable, "-c", WRAPPER, str(listing), str(SCRIPT), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})})
    modules = set(json.loads(listing.read_text()))
    listing.unlink()
    assert "typer" in modules, done.stderr[-2000:]
    return done, modules


def under(modules: set[str], *prefixes: str) -> set[str]:
    return {m for m in modules if any(m == p or m.startswith(p + ".") for p in prefixes)}


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = copy_template(tmp_path_factory.mktemp("imports") / "repo")
    commit_all(git.Repo.init(root), "template")
    spec = root / "models" / "iris-classifier" / "model.yaml"
    spec.write_text(spec.read_text().replace("maxReplicas: 4", "maxReplicas: 5", 1))  # a change to plan
    return root


def test_help_imports_typer_and_the_command_table_only(repo: Path) -> None:
    done, modules = imported(["--help"], repo)
    assert done.returncode == 0 and "plan" in done.stdout and "rollout" in done.stdout
    assert under(modules, "reconciler") <= {"reconciler", "reconciler.cli", "reconciler.cli.main",
                                            "reconciler.extras", "reconciler.errors"}
    assert not under(modules, "rich", "pydantic", "yaml", "git", "kubernetes", "httpx", "pipelines", *HEAVY)


def test_a_commands_help_imports_that_command_only(repo: Path) -> None:
    done, modules = imported(["render", "--help"], repo)
    assert done.returncode == 0 and "--model" in done.stdout
    assert "reconciler.cli.render" in modules
    assert not under(modules, "reconciler.cli.build", "reconciler.cli.sync", "reconciler.cli.rollout",
                     "reconciler.cli.pipeline", "kubernetes", *HEAVY)


def test_plan_imports_no_build_bentoml_dvc_hera_or_matplotlib_code(repo: Path) -> None:
    done, modules = imported(["plan", "--no-check-artifacts", "--format", "json"], repo)
    assert done.returncode == 0, done.stderr[-3000:]
    assert '"iris-classifier"' in done.stdout  # it planned the change
    # pipelines.locks (standard library only, with its error class from pipelines.errors) is the one pipelines module
    # the plan reads: a model's lock and the plan-time import check (reconciler/catalog/training.py)
    assert not under(modules, "pipelines", "kubernetes", "reconciler.cluster", "reconciler.sync", "reconciler.run",
                     *HEAVY) - {"pipelines", "pipelines.locks", "pipelines.errors"}


def test_a_warm_plan_for_a_pr_comment_imports_no_terminal_printing_and_no_gitpython(repo: Path, tmp_path: Path,
                                                                                     ) -> None:
    # the PR job: `plan --format markdown|json` with the base's renders cached (the second run here). It prints
    # nothing through rich unless it has a note, a warning or an error, so rich is not imported; it reads git
    # through the git command line (reconciler/source/git_cli.py), so GitPython is not imported either (start-up
    # a PR job pays on every push: benchmarks/cli_startup.py)
    env = {"RECONCILER_CACHE": str(tmp_path / "cache")}
    args = ["plan", "--no-check-artifacts", "--format", "markdown"]
    first, modules = imported(args, repo, env)
    assert first.returncode == 0, first.stderr[-3000:]
    assert not under(modules, "git", "gitdb", "smmap")  # the cold plan that records the outcomes too
    done, modules = imported(args, repo, env)
    assert done.returncode == 0 and done.stdout == first.stdout and "iris-classifier" in done.stdout
    assert done.stderr == ""  # nothing to print through rich: no note, warning or error
    assert not under(modules, "rich", "pygments", "reconciler.cli.console", "git", "gitdb", "smmap")
    assert "reconciler.source.git_cli" in modules
    # the same command with something to say prints it through rich (the module is imported where it prints)
    noted, modules = imported([*args, "--base", "HEAD~0"], repo, {"RECONCILER_CACHE": str(tmp_path / "empty")})
    assert noted.returncode == 0 and noted.stderr.startswith("note: no hydrated base"), noted.stderr[-3000:]
    assert "reconciler.cli.console" in modules


def test_sync_help_loads_the_cluster_client_but_nothing_of_build(repo: Path) -> None:
    done, modules = imported(["sync", "--help"], repo)
    assert done.returncode == 0 and "--kubeconfig" in done.stdout
    assert "reconciler.cluster.kube" in modules
    assert not under(modules, *HEAVY)
