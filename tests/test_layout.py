"""The layering of reconciler/ holds (import-linter contracts in pyproject.toml), and the check is real:
it fails on a planted upward import and on a planted rich import in a library module."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    if not LINT_IMPORTS.exists():
        pytest.fail(f"import-linter is not installed in {LINT_IMPORTS.parent}: install the test extra")
    env = {**os.environ, "PYTHONPATH": str(root), "NO_COLOR": "1"}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", "--config", str(root / "pyproject.toml")], cwd=root,
                          env=env, capture_output=True, text=True, timeout=300)


def planted_copy(tmp_path: Path, module: str, line: str) -> Path:
    """A copy of the package (and its contracts) with one import line added to one module."""
    for package in ("reconciler", "pipelines"):
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / (module.replace(".", "/") + ".py")
    target.write_text(target.read_text(encoding="utf-8") + f"\n{line}\n", encoding="utf-8")
    return tmp_path


def test_layers_are_kept():
    proc = lint_imports(ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout


def test_an_upward_import_breaks_the_layers(tmp_path):
    proc = lint_imports(planted_copy(tmp_path, "reconciler.source.git", "from reconciler.sync import engine  # planted"))
    assert proc.returncode != 0
    assert "stages import only the stages below them BROKEN" in proc.stdout
    assert "reconciler.source.git -> reconciler.sync.engine" in proc.stdout


def test_a_library_module_importing_rich_is_refused(tmp_path):
    proc = lint_imports(planted_copy(tmp_path, "reconciler.sync.health", "import rich.console  # planted"))
    assert proc.returncode != 0
    assert "only the command layer imports typer and rich BROKEN" in proc.stdout
    assert "reconciler.sync.health -> rich" in proc.stdout


def test_pipelines_is_inside_the_rules(tmp_path):
    proc = lint_imports(planted_copy(tmp_path, "pipelines.common", "from reconciler.sync import engine  # planted"))
    assert proc.returncode != 0
    assert "pipelines reads only the catalog and the shared vocabulary BROKEN" in proc.stdout
    upward = lint_imports(planted_copy(tmp_path / "b", "reconciler.render.manifests", "import pipelines.common  # planted"))
    assert "only the build stage and the command layer import pipelines BROKEN" in upward.stdout


def test_no_module_is_over_the_size_limit_without_saying_why():
    """Past 400 lines a module's docstring must say why it stays whole ("over 400 lines: ...")."""
    too_big = []
    for path in sorted((ROOT / "reconciler").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        if text.count("\n") > 400 and "over 400 lines" not in text[:3000].lower():
            too_big.append(f"{path.relative_to(ROOT)} ({text.count(chr(10))} lines)")
    assert not too_big, "split these modules by verb, or say in the docstring why not: " + ", ".join(too_big)


def _ruff_on(path: str, source: str) -> subprocess.CompletedProcess[str]:
    ruff = Path(sys.executable).parent / "ruff"
    return subprocess.run([str(ruff), "check", "--no-cache", "--stdin-filename", path, "-"], input=source,
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_the_heavy_libraries_are_named_once_and_imported_only_where_needed():
    import tomllib

    from reconciler.extras import HEAVY

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["ruff"]["lint"]
    assert tuple(config["flake8-tidy-imports"]["banned-module-level-imports"]) == HEAVY
    assert {"PLC0415", "TID253"} <= set(config["select"])
    heavy_at_top = _ruff_on("reconciler/sync/planted.py", '"""x."""\nimport kubernetes\n')
    assert heavy_at_top.returncode == 1 and "TID253" in heavy_at_top.stdout
    hidden = _ruff_on("reconciler/sync/planted.py", '"""x."""\n\n\ndef f():\n    import json\n    return json\n')
    assert hidden.returncode == 1 and "PLC0415" in hidden.stdout
    lazy_heavy = _ruff_on("reconciler/cli/planted.py", '"""x."""\n\n\ndef f():\n    import bentoml\n    return bentoml\n')
    assert lazy_heavy.returncode == 0, lazy_heavy.stdout
    # pipelines/ too: a stray import fails, one that must stay says why on its line
    stray = _ruff_on("pipelines/planted.py", '"""x."""\n\n\ndef f():\n    import json\n    return json\n')
    assert stray.returncode == 1 and "PLC0415" in stray.stdout
    said = _ruff_on("pipelines/planted.py",
                    '"""x."""\n\n\ndef f():\n    import numpy  # noqa: PLC0415 - a reason\n    return numpy\n')
    assert said.returncode == 0, said.stdout


def test_a_noqa_that_suppresses_nothing_fails_ruff():
    """A noqa names a rule that fires there; a reason alone is a plain comment (RUF100)."""
    unused = _ruff_on("reconciler/sync/planted.py", '"""x."""\n\nvalue = 1  # noqa: E402 - not needed\n')
    assert unused.returncode == 1 and "RUF100" in unused.stdout
    not_enabled = _ruff_on("reconciler/sync/planted.py", '"""x."""\n\nvalue = 1  # noqa: BLE001 - a reason\n')
    assert not_enabled.returncode == 1 and "RUF100" in not_enabled.stdout


def test_every_module_is_listed_in_the_architecture_document():
    doc = (ROOT / "docs" / "architecture.md").read_text()
    modules = sorted(p.relative_to(ROOT / "reconciler").as_posix() for p in (ROOT / "reconciler").rglob("*.py")
                     if p.relative_to(ROOT / "reconciler").as_posix() != "__init__.py")
    missing = [m for m in modules if f"| `{m}` |" not in doc]
    assert not missing, "add a row to the module table of docs/architecture.md for: " + ", ".join(missing)
    listed = re.findall(r"^\| `([\w/]+\.py)` \|", doc, re.MULTILINE)
    stale = [m for m in listed if m not in modules and m != "__init__.py"]
    assert not stale, "docs/architecture.md lists modules that are gone: " + ", ".join(stale)


def _git_handles() -> set[str]:
    """The names of reconciler.source that hand out or take a GitPython object (a Repo, a Git command): the
    adapter's own plumbing, which nothing outside reconciler/source/ may call (it gets shas, paths and trees)."""
    import importlib
    import inspect
    import pkgutil

    import reconciler.source

    def mentions_git(function: object) -> bool:
        annotations = getattr(function, "__annotations__", {})
        return any(str(a).startswith("git.") or "git.Repo" in str(a) for a in annotations.values())

    names = set()
    for info in pkgutil.iter_modules(reconciler.source.__path__):
        module = importlib.import_module(f"reconciler.source.{info.name}")
        for name, obj in vars(module).items():
            if getattr(obj, "__module__", None) != module.__name__:
                continue
            if inspect.isfunction(obj) and mentions_git(obj):
                names.add(name)
            elif inspect.isclass(obj):
                assert not [a for a, t in getattr(obj, "__annotations__", {}).items()
                            if not a.startswith("_") and "git." in str(t)], f"{name} shows a GitPython object"
                assert not [a for a, f in vars(obj).items() if not a.startswith("_")
                            and mentions_git(getattr(f, "fget", f))], f"{name} hands out a GitPython object"
                if mentions_git(vars(obj).get("__init__")):
                    names.add(name)
    return names


def git_handles_used(path: Path, text: str, handles: set[str]) -> list[str]:
    """Where a module outside reconciler/source/ imports or calls one of `handles` (from reconciler.source)."""
    import ast

    tree = ast.parse(text, filename=str(path))
    aliases = set()  # local names bound to a reconciler.source module
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("reconciler.source"):
            for alias in node.names:
                if alias.name in handles:
                    found.append(f"{path}:{node.lineno} imports {alias.name}")
                elif node.module == "reconciler.source":  # a module of the package: `source.git.open_repo`
                    aliases.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            aliases.update(a.asname or a.name for a in node.names if a.name.startswith("reconciler.source"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in handles:
            base = ast.unparse(node.value)
            if base in aliases or base.startswith("reconciler.source"):
                found.append(f"{path}:{node.lineno} uses {base}.{node.attr}")
    return found


def test_only_source_holds_git_objects(tmp_path):
    """reconciler/source/ hands out shas, paths and tree readers; its functions that take or return a GitPython
    Repo stay inside it. (Importing GitPython itself is import-linter's "only reconciler.source talks to git".)"""
    handles = _git_handles()
    assert {"open_repo", "resolve", "write_tree"} <= handles  # the rule sees the adapter's plumbing
    outside = [p for package in ("reconciler", "pipelines") for p in sorted((ROOT / package).rglob("*.py"))
               if "source" not in p.relative_to(ROOT).parts[:2]]
    found = [f for p in outside for f in git_handles_used(p.relative_to(ROOT), p.read_text(encoding="utf-8"), handles)]
    assert not found, "use reconciler.source's shas, paths and trees, not its Repo plumbing: " + "; ".join(found)
    planted = "from reconciler.source import git as source\n\n\ndef f(root):\n    return source.open_repo(root).head\n"
    assert git_handles_used(Path("reconciler/plan/planted.py"), planted, handles) == [
        "reconciler/plan/planted.py:5 uses source.open_repo"]
    assert git_handles_used(Path("p.py"), "from reconciler.source.git import open_repo, head_sha\n", handles) == [
        "p.py:1 imports open_repo"]


def test_nothing_outside_source_imports_gitpython(tmp_path):
    proc = lint_imports(planted_copy(tmp_path, "reconciler.desired.state", "import git  # planted"))
    assert "only reconciler.source talks to git (GitPython) BROKEN" in proc.stdout
    piped = lint_imports(planted_copy(tmp_path / "b", "pipelines.propose", "import git  # planted"))
    assert "only reconciler.source talks to git (GitPython) BROKEN" in piped.stdout
