"""Text from the repository, made safe for where a person reads it. Pure.

The PR comment is the approval surface of a GitOps repository: a change a reviewer cannot see is a
change nobody approved. Every value that comes from the repository (model names, descriptions,
field paths, error texts, diff lines, git messages) goes through one of these functions, chosen by
the context it lands in; nothing else puts repository text into markdown (docs/security.md,
"The PR comment is a security boundary"):

- `code(text)`: inline code. Markdown, HTML, @mentions and autolinks are inert inside a code span
  (GitHub renders none of them there); the fence is longer than any run of backticks inside.
- `cell_code(text)`: inline code inside a table cell (a `|` would end the cell even in code).
- `block(text, info)`: a fenced code block whose fence is longer than any run of backticks in it.
- `html_text(text)`: text inside raw HTML (a `<details>` summary): entity-escaped, so no tag, comment
  or entity of the text survives.
- `plain(text)`: running markdown text: every ASCII punctuation is backslash-escaped (CommonMark
  allows it for all of them), `<`/`>`/`&` become entities and `@` a fullwidth at sign, so no emphasis,
  link, heading, tag or mention can start.

All of them first make invisible and direction-changing characters visible (`visible`): bidirectional
controls (U+202A-202E, U+2066-2069, U+200E/200F, U+061C), zero-width characters (U+200B-200D,
U+2060, U+FEFF), other C0/C1 controls but tab and newline, and line/paragraph separators become
`<U+202E>`. Terminal output uses `visible` too (reconciler.cli.console), so an error header cannot
be reversed on screen either.
"""

from __future__ import annotations

import html
import re

# Reorder text on screen (Trojan Source, CVE-2021-42574), or hide characters.
BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c")
INVISIBLE = frozenset("\u200b\u200c\u200d\u2060\ufeff\u00ad\u180e\u2028\u2029")


HIDDEN = re.compile("[" + "".join(re.escape(c) for c in sorted(BIDI | INVISIBLE))
                     + "\x00-\x08\x0b-\x1f\x7f-\x9f]")


def visible(text: object) -> str:
    """`text` with every bidirectional control, zero-width and control character (but tab and
    newline) shown as `<U+XXXX>`."""
    return HIDDEN.sub(lambda m: f"<U+{ord(m.group()):04X}>", str(text))


def _one_line(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", " ⏎ ").replace("\t", " ")


def _longest_run(text: str, ch: str) -> int:
    return max((len(m) for m in re.findall(re.escape(ch) + "+", text)), default=0)


def code(text: object) -> str:
    """Inline code showing `text` literally (one line; newlines shown as ⏎)."""
    body = _one_line(visible(text))
    if not body.strip():
        return "`" + (body or " ") + "`" if "`" not in body else "` " + body + " `"
    fence = "`" * (_longest_run(body, "`") + 1)
    pad = " " if body.startswith("`") or body.endswith("`") or (body.startswith(" ") and body.endswith(" ")) else ""
    return f"{fence}{pad}{body}{pad}{fence}"


def cell_code(text: object) -> str:
    """Inline code inside a GFM table cell: `|` is escaped (the table splits rows before code spans)."""
    return code(text).replace("|", "\\|")


def block(text: object, info: str = "") -> list[str]:
    """A fenced code block showing `text` literally, as lines (the fence outlasts any backtick run)."""
    body = visible(text).replace("\r\n", "\n").replace("\r", "\n")
    fence = "`" * max(3, _longest_run(body, "`") + 1)
    return [fence + info, *body.split("\n"), fence]


def html_text(text: object) -> str:
    """Text inside raw HTML (`<summary>`, `<code>` in a summary): no tag, comment or entity survives."""
    return html.escape(_one_line(visible(text)), quote=True).replace("@", "&#64;").replace("|", "&#124;")


_PUNCT = re.compile(r"([!\"#$%'()*+,\-./:;=?\[\\\]^_`{|}~])")


def plain(text: object) -> str:
    """Running markdown text (a table cell, a list item, a blockquote line) that renders as written."""
    body = _one_line(visible(text))
    body = _PUNCT.sub(r"\\\1", body)
    return body.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("@", "\uff20")
