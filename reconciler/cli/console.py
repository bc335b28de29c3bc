"""The one way text reaches the terminal: printing is never parsing.

Error messages, object names, YAML keys, git messages and kustomize's stderr are user- or
tool-controlled text. Printed as rich markup, `[dry run]` or `spec.ports[http].port` lose their
brackets, `[signal SIGSEGV]` disappears and a YAML key `"[/x]"` crashes the CLI with a MarkupError.
So every console here is built with markup, emoji codes and highlighting OFF: a plain `str` is
printed exactly as it is. Style is added only by building `rich.text.Text` values from code:

    from reconciler.cli.console import err, line, styled
    err.print(line(styled("✗ " + name, "bold red"), f" ({where}):\\n{error}"))

Bidirectional controls (U+202E...), zero-width and control characters (ESC included) in any printed
text are shown as `<U+202E>` (reconciler.report.escape.visible), in str and Text and in every segment
a Table, Panel or Syntax draws: a file name cannot reverse or hide part of an error header or a plan
table on screen, nor send an escape sequence to the terminal.

Never construct a `rich.console.Console` elsewhere, never call `Text.from_markup` or
`console.print(..., markup=True)`, and never pass a `str` title to `rich.panel.Panel` (Panel parses
str titles as markup whatever the console says): use `title(...)`. tests/test_console.py scans
reconciler/ for those and fails on them.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console, ConsoleDimensions, ConsoleOptions, RenderableType
from rich.segment import Segment
from rich.text import Text

from reconciler.report.escape import HIDDEN, visible


def _shown(obj: Any) -> Any:
    """A str or Text with its hidden characters made visible (styles kept); anything else as it is."""
    if isinstance(obj, str):
        return visible(obj)
    if isinstance(obj, Text) and HIDDEN.search(obj.plain):
        cuts = sorted({i for m in HIDDEN.finditer(obj.plain) for i in (m.start(), m.end())})
        result = Text(style=obj.style, end=obj.end)
        for piece in obj.divide(cuts):
            result.append_text(Text(visible(piece.plain), style=piece.style) if HIDDEN.fullmatch(piece.plain) else piece)
        return result
    return obj


# Not a terminal (a CI log, a pipe, a file): no width to fit, so none is imposed. rich would assume 80
# columns (or $COLUMNS) and crop table cells, panel lines and diff lines; a log keeps whole lines, and
# tables and panels take the width of their content (tables and panels are built with
# `expand=console.is_terminal`).
UNBOUNDED = 4096


class VisibleConsole(Console):
    """A rich Console whose printed str and Text show hidden characters as escapes, and that cuts
    nothing when it does not write to a terminal (a width given by the caller still holds)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._asked_width = kwargs.get("width")
        super().__init__(*args, **kwargs)

    @property
    def size(self) -> ConsoleDimensions:
        if self._asked_width is None and not self.is_terminal:
            return ConsoleDimensions(UNBOUNDED, Console.size.fget(self).height)  # type: ignore[attr-defined]
        return Console.size.fget(self)  # type: ignore[attr-defined]

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        self._asked_width = new_size[0]
        Console.size.fset(self, new_size)  # type: ignore[attr-defined]

    def print(self, *objects: Any, **kwargs: Any) -> None:
        super().print(*(_shown(o) for o in objects), **kwargs)

    def render(self, renderable: RenderableType, options: ConsoleOptions | None = None) -> Any:
        """Every segment any renderable draws (a table cell, a panel's body, a diff in Syntax, a live
        display) with its hidden characters made visible: `print` sees only the top-level objects, and a
        Panel or Table built from repository text would otherwise carry an ESC or U+202E to the terminal.
        Rich's own control segments (cursor moves) are kept; its colours are styles, added after this."""
        for segment in super().render(renderable, options):
            if not segment.control and HIDDEN.search(segment.text):
                yield Segment(visible(segment.text), segment.style, segment.control)
            else:
                yield segment


def make_console(*, stderr: bool = False, soft_wrap: bool = True, **options: Any) -> Console:
    """A console that prints str as literal text (no markup, no :emoji: codes, no auto-highlighting)."""
    return VisibleConsole(stderr=stderr, soft_wrap=soft_wrap, markup=False, emoji=False, highlight=False, **options)


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
