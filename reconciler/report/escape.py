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
- `slack(text)`: a Slack-compatible webhook message (notifications): no mention or link survives.
- `plain(text)`: running markdown text: every ASCII punctuation is backslash-escaped (CommonMark
  allows it for all of them), `<`/`>`/`&` become entities and `@` a fullwidth at sign, so no emphasis,
  link, heading, tag or mention can start.

All of them first make invisible and direction-changing characters visible (`visible`): bidirectional
controls (U+202A-202E, U+2066-2069, U+200E/200F, U+061C), zero-width characters (U+200B-200D,
U+2060, U+FEFF), other C0/C1 controls but tab and newline, and line/paragraph separators become
`<U+202E>`. Terminal output uses `visible` too (reconciler.cli.console), so an error header cannot
be reversed on screen either.

Two bounds hold in every markdown context, because cmark-gfm (GitHub's renderer) has limits of its own:
a run of more than `MAX_BACKTICKS` backticks is shown as `<N backticks>` (cmark-gfm gives up on code
spans whose fence is 80 backticks or longer, and keeps a code fence's length in a byte, so a fence
of 256+ backticks closes at the wrong line), and an inline value (`code`, `cell_code`, `html_text`,
`plain`) longer than `MAX_INLINE` characters is cut, saying how many characters are not shown (a
70,000-character description would otherwise push every changed object out of the comment).
"""

from __future__ import annotations

import html
import re

# Reorder text on screen (Trojan Source, CVE-2021-42574), or hide characters.
BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c")
INVISIBLE = frozenset("\u200b\u200c\u200d\u2060\ufeff\u00ad\u180e\u2028\u2029")


HIDDEN = re.compile("[" + "".join(re.escape(c) for c in sorted(BIDI | INVISIBLE))
                     + "\x00-\x08\x0b-\x1f\x7f-\x9f]")


MAX_BACKTICKS = 16  # longer runs are shown as "<N backticks>"
MAX_INLINE = 1_000  # characters of one inline value (a cell, a name, a reason); the rest is counted, not shown
_LONG_TICKS = re.compile("`{%d,}" % (MAX_BACKTICKS + 1))


def visible(text: object) -> str:
    """`text` with every bidirectional control, zero-width and control character (but tab and
    newline) shown as `<U+XXXX>`."""
    return HIDDEN.sub(lambda m: f"<U+{ord(m.group()):04X}>", str(text))


def _markdown(text: object) -> str:
    """`visible`, with backtick runs cmark-gfm cannot fence shown by their length."""
    return _LONG_TICKS.sub(lambda m: f"<{len(m.group())} backticks>", visible(text))


def _inline(text: object) -> str:
    """One line of `_markdown` text, at most MAX_INLINE characters (the cut says how many are not shown)."""
    body = _one_line(_markdown(text))
    if len(body) > MAX_INLINE:
        body = body[:MAX_INLINE] + f" …({len(body) - MAX_INLINE:,} more characters not shown)"
    return body


def _one_line(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", " ⏎ ").replace("\t", " ")


def _longest_run(text: str, ch: str) -> int:
    return max((len(m) for m in re.findall(re.escape(ch) + "+", text)), default=0)


def code(text: object) -> str:
    """Inline code showing `text` literally (one line; newlines shown as ⏎)."""
    body = _inline(text)
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
    body = _markdown(text).replace("\r\n", "\n").replace("\r", "\n")
    fence = "`" * max(3, _longest_run(body, "`") + 1)
    return [fence + info, *body.split("\n"), fence]


def html_text(text: object) -> str:
    """Text inside raw HTML (`<summary>`, `<code>` in a summary): no tag, comment or entity survives."""
    return html.escape(_inline(text), quote=True).replace("@", "&#64;").replace("|", "&#124;")


_PUNCT = re.compile(r"([!\"#$%'()*+,\-./:;=?\[\\\]^_`{|}~])")


def plain(text: object) -> str:
    """Running markdown text (a table cell, a list item, a blockquote line) that renders as written."""
    body = _inline(text)
    body = _PUNCT.sub(r"\\\1", body)
    return html.escape(body, quote=False).replace("@", "\uff20")


def slack(text: object) -> str:
    """Text in a Slack-compatible webhook message (mrkdwn): `&`, `<`, `>` as entities, as Slack asks, so no
    `<!channel>`, `<@U123>` or `<https://evil|link>` of the text is a mention or a link; hidden characters visible."""
    return html.escape(visible(text), quote=False)
