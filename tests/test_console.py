"""Printing is never parsing: user- and tool-controlled text reaches the terminal verbatim.

Two halves: a scan of reconciler/ that fails on any way around reconciler.cli.console (another rich
Console, Text.from_markup, markup=True, a str Panel title, rich markup tags in string literals),
and behaviour: markup-like text fed through the CLI's error paths comes out intact, never crashes.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import git
import pytest
from typer.testing import CliRunner

from reconciler.cli import console
from reconciler.cli import app
from tests.conftest import commit_all

PACKAGE = Path(__file__).resolve().parents[1] / "reconciler"
HOSTILE = ["[/x]", "[dry run]", "spec.ports[http].port", "[signal SIGSEGV]", "[bold red]x", ":smile:", "[link=file:///etc/passwd]y[/link]"]
MARKUP_TAG = re.compile(r"\[/?(bold|dim|red|green|yellow|magenta|cyan|blue|italic|link)\b[^\]]*\]")


def _python_files():
    return sorted(p for p in PACKAGE.rglob("*.py") if p != PACKAGE / "cli" / "console.py")


def _violations(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        where = f"{path.relative_to(PACKAGE.parent)}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name == "Console":
                found.append(f"{where}: builds a rich Console; use reconciler.cli.console.out / err / make_console")
            if name == "from_markup":
                found.append(f"{where}: parses text as markup")
            for kw in node.keywords:
                if kw.arg == "markup" and not (isinstance(kw.value, ast.Constant) and kw.value.value is False):
                    found.append(f"{where}: markup= other than False")
                if name == "Panel" and kw.arg in ("title", "subtitle") and not isinstance(kw.value, ast.Call):
                    found.append(f"{where}: Panel {kw.arg} not built with console.title() (a str is parsed as markup)")
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and MARKUP_TAG.search(node.value):
            found.append(f"{where}: rich markup tag in a string literal ({MARKUP_TAG.search(node.value).group()}): "
                         "it prints literally now; use console.styled()")
    return found


def test_no_printing_goes_around_the_console_module():
    problems = [v for path in _python_files() for v in _violations(path)]
    assert problems == []


def test_the_scan_catches_each_way_around(tmp_path):
    planted = tmp_path / "planted.py"
    planted.write_text('from rich.console import Console\nfrom rich.panel import Panel\nfrom rich.text import Text\n'
                       'c = Console()\nText.from_markup("x")\nc.print("x", markup=True)\nPanel("x", title=f"{c}")\n'
                       'c.print("[bold red]error:[/bold red]")\n')
    global PACKAGE
    saved, PACKAGE = PACKAGE, tmp_path
    try:
        found = _violations(planted)
    finally:
        PACKAGE = saved
    assert len(found) == 5, found


@pytest.mark.parametrize("text", HOSTILE)
def test_helpers_print_text_verbatim(text, capsys):
    console.print_error(RuntimeError(text))
    console.print_model_errors({text: text}, text)
    console.out.print(console.line(console.styled(text, "bold"), " ", text))
    captured = capsys.readouterr()
    assert captured.err.count(text) == 4
    assert captured.out.count(text) == 2


def _hostile_repo(root: Path) -> None:
    """One model whose model.yaml has markup-like keys and values (a spec error), one environment whose
    overlay has a markup-like unknown field (a kustomize/schema error)."""
    spec = root / "models" / "iris-classifier" / "model.yaml"
    spec.write_text(spec.read_text() + '"[/x]": 1\n"[bold red]eaten[/bold red]": 2\n')
    overlay = root / "environments" / "dev" / "kustomization.yaml"
    overlay.write_text(overlay.read_text() + '\n"[/y]": 1\n')


@pytest.fixture
def wide_consoles():
    """Wide enough that no table cell wraps a fragment the test looks for."""
    saved = [(c, c._width) for c in (console.out, console.err)]
    for c, _ in saved:
        c.width = 1000
    yield
    for c, width in saved:
        c._width = width


def test_markup_like_text_survives_every_cli_error_path(template_repo, wide_consoles):
    _hostile_repo(template_repo)
    repo = git.Repo(template_repo)
    commit_all(repo, "hostile [/x] [dry run] keys")
    runner = CliRunner()
    model_error = ("[/x]", "[bold red]eaten[/bold red]")
    cases = [(["render", "dev"], ("[/y]",)), (["render", "dev", "--rev", "HEAD"], ("[/y]",)),
             (["render", "staging"], model_error), (["render", "staging", "--rev", "HEAD"], model_error),
             (["hydrate", "--out", str(template_repo / "out")], model_error + ("[/y]",)),
             (["plan", "--base", "empty"], model_error), (["plan", "--base", "empty", "--format", "markdown"], model_error),
             (["render", "[/nope]"], ("[/nope]",)),
             (["sync", "[dry run]", "--kubeconfig", str(template_repo / "[/none]")], ("[/none]",))]
    for args, expected in cases:
        result = runner.invoke(app, [*args, "--repo", str(template_repo)])
        assert result.exception is None or isinstance(result.exception, SystemExit), (args, result.exception)
        text = result.output + (result.stderr if result.stderr_bytes is not None else "")
        assert "MarkupError" not in text and "Traceback" not in text, args
        for fragment in expected:
            assert fragment in text, (args, fragment, text)
        assert result.exit_code != 0, args
