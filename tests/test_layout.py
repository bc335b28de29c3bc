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


def test_every_module_is_listed_in_the_architecture_document():
    doc = (ROOT / "docs" / "architecture.md").read_text()
    modules = sorted(p.relative_to(ROOT / "reconciler").as_posix() for p in (ROOT / "reconciler").rglob("*.py")
                     if p.relative_to(ROOT / "reconciler").as_posix() != "__init__.py")
    missing = [m for m in modules if f"| `{m}` |" not in doc]
    assert not missing, "add a row to the module table of docs/architecture.md for: " + ", ".join(missing)
    listed = re.findall(r"^\| `([\w/]+\.py)` \|", doc, re.MULTILINE)
    stale = [m for m in listed if m not in modules and m != "__init__.py"]
    assert not stale, "docs/architecture.md lists modules that are gone: " + ", ".join(stale)
