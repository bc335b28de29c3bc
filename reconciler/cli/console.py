"""The one way text reaches the terminal: printing is never parsing.

Error messages, object names, YAML keys, git messages and kustomize's stderr are user- or
tool-controlled text. Printed as rich markup, `[dry run]` or `spec.ports[http].port` lose their
brackets, `[signal SIGSEGV]` disappears and a YAML key `"[/x]"` crashes the CLI with a MarkupError.
So every console here is built with markup, emoji codes and highlighting OFF: a plain `str` is
printed exactly as it is. Style is added only by building `rich.text.Text` values from code:

    from reconciler.cli.console import err, line, styled
    err.print(line(styled("✗ " + name, "bold red"), f" ({where}):\\n{error}"))

Never construct a `rich.console.Console` elsewhere, never call `Text.from_markup` or
`console.print(..., markup=True)`, and never pass a `str` title to `rich.panel.Panel` (Panel parses
str titles as markup whatever the console says): use `title(...)`. tests/test_console.py scans
reconciler/ for those and fails on them.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.text import Text


def make_console(*, stderr: bool = False, soft_wrap: bool = True, **options: Any) -> Console:
    """A console that prints str as literal text (no markup, no :emoji: codes, no auto-highlighting)."""
    return Console(stderr=stderr, soft_wrap=soft_wrap, markup=False, emoji=False, highlight=False, **options)


# The file is looked up on every print (rich uses sys.stdout / sys.stderr when none is given), so
# test runners that swap the streams capture these too.
out = make_console()
err = make_console(stderr=True)


def styled(text: object, style: str) -> Text:
    """`text` (any object, converted with str) in a style; the text itself is never parsed."""
    return Text(str(text), style=style)


def line(*parts: str | Text) -> Text:
    """Join literal strings and styled pieces into one printable line (str parts are not parsed)."""
    result = Text()
    for part in parts:
        result.append(part if isinstance(part, Text) else Text(str(part)))
    return result


def title(text: object, style: str = "") -> Text:
    """A title for Panel / Table / Rule: Panel parses a str title as markup, a Text it prints as is."""
    return Text(str(text), style=style)


def print_error(exc: object, console: Console | None = None, *, label: str = "error:") -> None:
    """`error: <message>` with the message (an exception's str, with its fix line) printed verbatim."""
    (console or err).print(line(styled(label, "bold red"), " ", str(exc)))


def print_model_errors(errors: dict[str, object], where: str, console: Console | None = None) -> None:
    """One block per failing model: `✗ name (where):` then its error text verbatim."""
    for name, error in sorted(errors.items()):
        (console or err).print(line(styled(f"✗ {name}", "bold red"), f" ({where}):\n{error}"))
