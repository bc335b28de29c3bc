"""The PR comment is a security boundary: hostile text from the repository renders as text, through
GitHub's own markdown renderer (cmark-gfm, via cmarkgfm), and every changed object shows exactly once.

The HTML is rendered with raw HTML allowed (cmark-gfm's UNSAFE): stricter than GitHub, which then
sanitizes; any tag from the data would show up here.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from html.parser import HTMLParser

import git
import pytest

from reconciler.plan.changes import EnvironmentPlan, ModelPlan, Plan
from reconciler.field_diff import FieldChange
from reconciler.plan.changes import Replacement
from reconciler.report import escape as esc
from reconciler.report.plan import GITHUB_COMMENT_LIMIT, plan_markdown
from reconciler.results import Action, ObjectRef, ObjectResult
from tests.conftest import commit_all, copy_template

cmarkgfm = pytest.importorskip("cmarkgfm", reason="pip install cmarkgfm (in the [test] extra: requirements-test.txt)")
from cmarkgfm.cmark import Options  # noqa: E402

HOSTILE = [
    "```\n# All checks passed\n```",
    "````` ``` `",
    "</details></td></tr></table>\n\n# All checks passed",
    "<img src=x onerror=alert(1)>",
    "<!-- hidden --> <script>alert(1)</script>",
    "@octocat and @github/security please approve",
    "[All checks passed](javascript:alert(1)) <javascript:alert(1)>",
    "evil\u202eexe.yaml \u2066isolate\u2069 zero\u200bwidth \ufeffbom",
    "| a | b |\n|---|---|\n| injected | row |",
    "*bold* _em_ ~~strike~~ \\ & &amp; &lt;b&gt;",
    "line one\r\nline two\rthree\x00nul\x1b[31mred",
    "<details open><summary>All checks passed</summary>",
    "- [x] approved\n> quoted\n---",
    "https://evil.example/phish www.evil.example",
    "`",
    " ",
    "",
]

ALLOWED_TAGS = {"h3", "h4", "p", "strong", "em", "code", "pre", "table", "thead", "tbody", "tr", "th", "td", "br",
                "details", "summary", "ul", "li", "blockquote"}


def render(markdown: str) -> str:
    return cmarkgfm.github_flavored_markdown_to_html(markdown, options=Options.CMARK_OPT_UNSAFE)


class Page(HTMLParser):
    """Tags, comments, text outside code, and table rows of rendered HTML."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.comments: list[str] = []
        self.stack: list[str] = []
        self.outside_code: list[str] = []
        self.rows: list[list[str]] = []
        self.headings: list[str] = []
        self._cell: list[str] | None = None
        self._heading: list[str] | None = None
        self.attrs: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += attrs
        if tag not in ("br",):
            self.stack.append(tag)
        if tag == "tr":
            self.rows.append([])
        if tag in ("td", "th"):
            self._cell = []
        if tag in ("h1", "h2", "h3", "h4", "h5", "h6"):
            self._heading = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell))
            self._cell = None
        if tag.startswith("h") and tag[1:].isdigit() and self._heading is not None:
            self.headings.append("".join(self._heading))
            self._heading = None
        if tag in self.stack:
            while self.stack and self.stack.pop() != tag:
                pass

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self._heading is not None:
            self._heading.append(data)
        if not {"code", "pre"} & set(self.stack):
            self.outside_code.append(data)

    def handle_comment(self, data):
        self.comments.append(data)


def page(markdown: str) -> Page:
    p = Page()
    p.feed(render(markdown))
    p.close()
    return p


def assert_inert(p: Page, allowed_comments: int = 0) -> None:
    assert set(p.tags) <= ALLOWED_TAGS, set(p.tags) - ALLOWED_TAGS
    assert len(p.comments) <= allowed_comments
    assert all((name, value) == ("lang", "diff") for name, value in p.attrs), p.attrs  # only ```diff blocks
    text = "".join(p.outside_code)
    assert not re.search(r"@\w", text), "a mention outside code"
    assert not any(c in text for c in esc.BIDI | esc.INVISIBLE)


@pytest.mark.parametrize("hostile", HOSTILE)
def test_each_context_shows_hostile_text_as_text(hostile):
    shown = esc.visible(hostile)
    one_line = shown.replace("\r\n", "\n").replace("\r", "\n").replace("\n", " ⏎ ").replace("\t", " ")
    # inline code
    p = page(f"before {esc.code(hostile)} after")
    assert_inert(p)
    assert p.tags == ["p", "code"]
    # a table cell: still one row of three cells
    p = page(f"| a | b | c |\n|---|---|---|\n| x | {esc.cell_code(hostile)} | z |\n")
    assert_inert(p)
    assert p.rows[1] == ["x", one_line if one_line.strip() else p.rows[1][1], "z"]
    # a code block
    p = page("\n".join(["text", "", *esc.block(hostile), "", "after"]))
    assert_inert(p)
    assert p.tags == ["p", "pre", "code", "p"]
    # raw HTML: a <details> summary
    p = page(f"<details><summary><code>{esc.html_text(hostile)}</code>: errors</summary>\n\nbody\n\n</details>\n")
    assert_inert(p)
    assert p.tags == ["details", "summary", "code", "p"]
    # running text
    p = page(f"text {esc.plain(hostile)} end")
    assert_inert(p)
    assert p.tags == ["p"]
    shown_text = "".join(p.outside_code).strip().replace("\uff20", "@")
    assert shown_text == f"text {one_line} end".strip() or not one_line.strip()


def test_bidirectional_and_invisible_characters_are_shown_as_escapes():
    assert esc.visible("a\u202eb\u2066c\u200bd\x1be") == "a<U+202E>b<U+2066>c<U+200B>d<U+001B>e"
    assert esc.visible("tab\tand\nnewline stay") == "tab\tand\nnewline stay"


def test_a_fence_outlasts_any_backtick_run():
    lines = esc.block("a ````` b")
    assert lines[0] == "``````" and lines[-1] == "``````"
    assert esc.code("x ``` y") == "````x ``` y````"


def hostile_plan() -> Plan:
    """Every repository string of a plan, hostile: reasons, errors, diffs, moves, policy, objects."""
    plan = Plan(base="a" * 40, head="b" * 40, order=["dev", "prod"])
    for env in ("dev", "prod"):
        ep = EnvironmentPlan(env, changes=[f"environment.yaml: {h}" for h in HOSTILE[:3]])
        for i, hostile in enumerate(HOSTILE):
            name = f"model-{i}"
            objects = [ObjectResult(ObjectRef("apps/v1", "Deployment", f"models-{env}", f"{name}-{hostile}"[:90]),
                                    Action.configured, model=name, diff=f"--- a\n+++ b\n-{hostile}\n+{hostile}!"),
                       ObjectResult(ObjectRef("v1", "Service", f"models-{env}", f"{name}-svc"), Action.created,
                                    model=name, diff=f"+{hostile}")]
            mp = ModelPlan(name, reasons=[f"model.yaml: description {hostile!r} -> x", hostile], objects=objects)
            if i % 4 == 3:
                mp.error = hostile + "\n  fix: " + hostile
            if i % 5 == 1:
                mp.replacements = [Replacement(objects[0].ref, objects[1].ref,
                                               (FieldChange(f"spec.{hostile}", hostile, None),))]
            ep.models[name] = mp
        plan.environments[env] = ep
    return plan


def test_a_hostile_plan_renders_every_changed_object_once_and_nothing_injected():
    plan = hostile_plan()
    md = plan_markdown(plan)
    p = page(md)
    assert_inert(p, allowed_comments=1)  # the comment's own marker
    assert p.comments == [" reconciler-plan "]
    # the headings are the comment's own: its title and one per environment, in importance order
    assert p.headings == [f"Reconciler plan {'a' * 12} → {'b' * 12}", "1. prod", "2. dev"]
    for env in plan.environments.values():
        for model, mp in env.models.items():
            for result in mp.objects:
                if not result.action.writes:
                    continue
                rows = [r for r in p.rows if r and r[0] == esc.visible(str(result.ref)).replace("\n", " ⏎ ")]
                assert len(rows) == 1, (str(result.ref), len(rows))
                assert rows[0][1:] == [model, result.action.value]
    # every table row has as many cells as its header
    assert all(len(r) in (3, 4, 5) for r in p.rows)


def test_terminal_error_headers_show_bidi_as_escapes():
    from reconciler.cli.console import make_console, print_error

    console = make_console(file=__import__("io").StringIO(), width=200)
    print_error("models/evil\u202egnp.yaml: bad", console)
    assert "<U+202E>" in console.file.getvalue() and "\u202e" not in console.file.getvalue()


def test_a_hostile_description_and_field_reach_the_comment_as_text(tmp_path):
    """As a PR runs it: `reconciler plan --format markdown` on a commit whose model.yaml carries the corpus
    (weights are not checked: no DVC remote is needed to read the comment)."""
    template_repo = copy_template(tmp_path / "repo")
    repo = git.Repo.init(template_repo, initial_branch="main")
    commit_all(repo, "template")
    spec = template_repo / "models/iris-classifier/model.yaml"
    hostile = "```\\n# All checks passed\\n<img src=x onerror=alert(1)> @octocat [ok](javascript:alert(1)) \\u202eevil"
    spec.write_text(spec.read_text() + f'canary:\n  queries: {{errorRate: "{hostile}"}}\n')
    digits = template_repo / "models/digits-classifier/model.yaml"
    digits.write_text(digits.read_text() + '"```\\n## All checks passed": 1\n')
    commit_all(repo, "hostile")
    reconciler = str(Path(sys.executable).parent / "reconciler")
    done = subprocess.run([reconciler, "plan", "--base", "HEAD~1", "--head", "HEAD",
                           "--format", "markdown", "--no-check-artifacts"],
                          cwd=template_repo, capture_output=True, text=True, timeout=300)
    assert done.returncode == 3, done.stderr  # digits has an error: partial
    p = page(done.stdout)
    assert_inert(p, allowed_comments=1)
    assert all("All checks passed" not in h for h in p.headings)
    assert "<U+202E>" in done.stdout and "\u202e" not in done.stdout
    # the hostile query is a field-level reason and a policy row of iris where canaries run (staging, prod)
    assert sum(1 for r in p.rows if r and r[0] == "iris-classifier") == 4
    assert any("<img src=x onerror=alert(1)> @octocat" in cell for r in p.rows for cell in r)
    assert sum(1 for r in p.rows if r and r[0] == "digits-classifier") == 3


SGR = re.compile(r"\x1b\[[0-9;]*m")  # rich's own colours: the only escape sequence the terminal may get


@pytest.mark.parametrize("terminal", [False, True])
def test_the_terminal_plan_shows_hidden_characters_in_tables_panels_and_diffs_as_escapes(terminal):
    """`reconciler plan`'s text format draws Panels, Tables and Syntax: every cell, panel body and diff line
    of repository text reaches the screen with its ESC, bidi, NUL, line separators made visible."""
    import io

    from reconciler.cli.console import make_console
    from reconciler.cli.plan import print_plan

    plan = hostile_plan()
    plan.environments["staging"] = EnvironmentPlan(
        "staging", error="kustomize: \x1b]8;;https://evil.example\x1b\\link\x1b]8;;\x1b\\ \u202eevil\x1b[2J\u2028\x85\x00")
    plan.order.append("staging")
    buffer = io.StringIO()
    print_plan(plan, make_console(file=buffer, width=160, force_terminal=terminal))
    shown = buffer.getvalue()
    assert not esc.HIDDEN.search(SGR.sub("", shown)), sorted({hex(ord(c)) for c in esc.HIDDEN.findall(SGR.sub("", shown))})
    assert "<U+202E>" in shown and "<U+001B>" in shown and "<U+0000>" in shown
    assert bool(SGR.search(shown)) is terminal  # colours stay where there is a terminal


def test_the_default_plan_output_sends_no_escape_sequence_or_bidi_control_to_the_terminal(tmp_path):
    """As a user runs it: `reconciler plan` (text) on a commit whose model.yaml carries ESC and U+202E in a
    canary query (a reason and a policy row) and in an unknown field's name (an error header)."""
    template_repo = copy_template(tmp_path / "repo")
    repo = git.Repo.init(template_repo, initial_branch="main")
    commit_all(repo, "template")
    spec = template_repo / "models/iris-classifier/model.yaml"
    spec.write_text(spec.read_text() + 'canary:\n  queries: {errorRate: "\\e[2J\\e]0;pwned\\a \\u202eevil \\0 \\u2028"}\n')
    digits = template_repo / "models/digits-classifier/model.yaml"
    digits.write_text(digits.read_text() + '"\\e[31mfake\\u202e": 1\n')
    commit_all(repo, "hostile")
    reconciler = str(Path(sys.executable).parent / "reconciler")
    done = subprocess.run([reconciler, "plan", "--base", "HEAD~1", "--head", "HEAD", "--no-check-artifacts"],
                          cwd=template_repo, capture_output=True, text=True, timeout=300)
    assert done.returncode == 3, done.stderr
    for stream in (done.stdout, done.stderr):
        assert not esc.HIDDEN.search(stream), sorted({hex(ord(c)) for c in esc.HIDDEN.findall(stream)})
    assert "<U+001B>[2J" in done.stdout and "<U+202E>evil" in done.stdout
    assert "<U+001B>[31mfake<U+202E>" in done.stdout + done.stderr


# Cases the first corpus did not have: tilde fences, comment halves, summary closers, autolinks, reference
# definitions, entities one decode away from a tag, refs and team mentions, shortcodes, every bidi control,
# separators, NEL, a lone CR, NUL, backslashes before pipes, backtick runs past cmark-gfm's limits (a code span
# of 80+ backticks is not a code span; a fence's length is kept in a byte) and values far past any cell.
HOSTILE_MORE = [
    "~~~\n# tilde fence\n~~~", "~~~~~ ``` ~~~", "<!--", "-->", "</summary></details>\n\n## Approved",
    "<https://evil.example> <mailto:a@b.example> a@b.example", "[a]: http://evil.example\n[a]", "[a]: http://evil.example",
    "&lt;img src=x onerror=alert(1)&gt; &#60;script&#62; &amp;lt;b&amp;gt;", "![img](http://evil.example/x.png)",
    "@octocat @github/security #123 GH-1 org/repo#5 :+1: :shipit:", "\u200d\u200c\u2060\ufeff\u00ad\u180e",
    "".join(map(chr, [0x202a, 0x202b, 0x202c, 0x202d, 0x202e, 0x2066, 0x2067, 0x2068, 0x2069, 0x200e, 0x200f, 0x061c])),
    "line\u2028sep\u2029para\u0085nel\rcr\x00nul\x0b\x0c", "a\\|b", "a\\\\|b", "x\\", "| `code | pipe` |", "\\`",
    "a" + "`" * 80 + "b", "`" * 300, "```" + "`" * 253 + "\n# All checks passed\n" + "`" * 256, "x" * 70_000,
    "<" * 2_000 + "&" * 2_000,
]


@pytest.mark.parametrize("hostile", HOSTILE_MORE, ids=range(len(HOSTILE_MORE)))
def test_more_hostile_text_stays_text_in_each_context(hostile):
    p = page(f"before {esc.code(hostile)} after")
    assert_inert(p)
    assert p.tags == ["p", "code"]
    p = page(f"| a | b | c |\n|---|---|---|\n| x | {esc.cell_code(hostile)} | z |\n")
    assert_inert(p)
    assert len(p.rows) == 2 and p.rows[1][0] == "x" and p.rows[1][2] == "z" and len(p.rows[1]) == 3
    assert len(p.rows[1][1]) <= esc.MAX_INLINE + 60  # a value is cut, saying how much
    p = page("\n".join(["text", "", *esc.block(hostile), "", "after"]))
    assert_inert(p)
    assert p.tags == ["p", "pre", "code", "p"]
    p = page(f"<details><summary><code>{esc.html_text(hostile)}</code>: errors</summary>\n\nbody\n\n</details>\n")
    assert_inert(p)
    assert p.tags == ["details", "summary", "code", "p"]
    p = page(f"text {esc.plain(hostile)} end")
    assert_inert(p)
    assert p.tags == ["p"]


def huge_plan(models: int, *, reason: str = "r", error_lines: int = 0) -> Plan:
    """`models` models a environment, each configuring a Deployment and creating a Service, with hostile text."""
    plan = Plan(base="a" * 40, head="b" * 40, order=["dev", "staging", "prod"])
    for env in plan.order:
        ep = EnvironmentPlan(env)
        for i in range(models):
            name = f"m{i:05d}"
            hostile = HOSTILE_MORE[i % len(HOSTILE_MORE)][:200]
            objects = [ObjectResult(ObjectRef("apps/v1", "Deployment", f"models-{env}", name), Action.configured,
                                    model=name, diff="\n".join(f"-a{j} {hostile}\n+b{j}" for j in range(30))),
                       ObjectResult(ObjectRef("v1", "Service", f"models-{env}", name), Action.created, model=name)]
            mp = ModelPlan(name, reasons=[reason, hostile], objects=objects)
            if error_lines and i % 3 == 0:
                mp.error = "```\n# All checks passed\n" + "E\n" * error_lines
            ep.models[name] = mp
        plan.environments[env] = ep
    return plan


NOT_LISTED = re.compile(r"… (\d+) more object\(s\) to write or delete are not listed here \(([^)]*)\)")


def account(plan: Plan, md: str) -> dict[str, tuple[int, int]]:
    """Per environment: (objects listed in their own row exactly once, objects the comment says it does not list);
    fails if an object is listed twice or its row is malformed."""
    p = page(md)
    assert_inert(p, allowed_comments=1)
    sections = re.split(r"^#### \d+\. ", md, flags=re.M)[1:]
    result = {}
    for section in sections:
        env = section.split("`")[1]
        changed = [r for mp in plan.environments[env].models.values() for r in mp.objects if r.action.writes]
        rows = [r for r in page(section).rows if r and r[0].startswith(("Deployment/", "Service/"))]
        listed = {r[0] for r in rows}
        assert len(listed) == len(rows), f"{env}: an object listed twice"
        assert listed <= {str(r.ref) for r in changed}
        missing = NOT_LISTED.search(section)
        result[env] = (len(listed), int(missing.group(1)) if missing else 0)
        assert sum(result[env]) == len(changed), (env, result[env], len(changed))
    assert set(result) == set(plan.environments)
    return result


def test_a_70000_character_description_does_not_push_the_changed_objects_out_of_the_comment():
    plan = huge_plan(20, reason="model.yaml: description " + "x" * 70_000)
    md = plan_markdown(plan)
    assert len(md) <= GITHUB_COMMENT_LIMIT
    assert account(plan, md) == {env: (40, 0) for env in plan.environments}
    assert "more characters not shown" in md


@pytest.mark.parametrize("models,error_lines", [(150, 3_000), (2_000, 0)])
def test_a_plan_too_big_for_one_comment_lists_every_changed_object_or_counts_it(models, error_lines):
    """Diffs and error texts go first, then rows, least important environment first; the objects table of
    each environment lists its objects once each, or says how many of which action it does not list."""
    plan = huge_plan(models, error_lines=error_lines)
    md = plan_markdown(plan)
    assert len(md) <= GITHUB_COMMENT_LIMIT
    accounted = account(plan, md)
    assert "Shortened to fit GitHub's 65,536-character comment limit" in md
    if models == 150:  # dropping folded texts was enough
        assert accounted == {env: (300, 0) for env in plan.environments}
        assert "folded diff(s) or error text(s) left out, largest first" in md
    else:  # the most important environment keeps the most rows
        assert accounted["prod"][0] >= accounted["staging"][0] >= accounted["dev"][0]
        assert accounted["prod"][0] > 0


def test_a_canary_report_with_hostile_reasons_and_outcome_renders_as_text():
    """The finished canary's PR comment (reconciler.report.markdown, posted with a write token) carries reasons
    and outcomes that quote canary queries from model.yaml and peers' error texts: one row per decision, as text."""
    from reconciler.report.markdown import report_markdown
    from reconciler.rollout.state import Phase, Policy, RolloutState, StepRecord

    corpus = HOSTILE + HOSTILE_MORE
    history = tuple(StepRecord(at=1e9 + i, revision="v2", step_index=i, canary_weight=10, decision="hold",
                               reasons=(hostile, "query " + hostile)) for i, hostile in enumerate(corpus))
    state = RolloutState("iris", "prod", Policy(), stable_revision="v1", canary_revision="v2", phase=Phase.rolled_back,
                         outcome="rolled back: " + HOSTILE[2], history=history)
    p = page(report_markdown(state))
    assert_inert(p)
    assert p.headings == ["Canary of iris in prod: rolled back"]
    assert len(p.rows) == 1 + len(corpus) and all(len(r) == 7 for r in p.rows)


def test_webhook_messages_and_commit_statuses_carry_no_mention_link_or_hidden_character():
    """Notifications quote model names and error texts: a Slack-compatible message escapes &, <, > (no
    <!channel>, <@U123> or <url|label> survives), a commit status shows hidden characters as escapes."""
    from reconciler.run.notify import commit_status, message

    detail = "model <!channel> <@U024BE7LH> <https://evil.example|approve> &amp; \u202eevil"
    text = message("failure", "prod", "0123456789abcdef", detail)["text"]
    assert "<" not in text and ">" not in text and "\u202e" not in text
    assert "&lt;!channel&gt;" in text and "&amp;amp;" in text and "&lt;U+202E&gt;evil" in text  # Slack shows <U+202E>
    status = commit_status("prod", error="iris \u202eevil\x1b[2J failed").body()
    assert "\u202e" not in status["description"] and "<U+202E>evil<U+001B>[2J" in status["description"]


def test_the_status_markdown_shows_hostile_errors_and_drift_as_text():
    """`reconciler status --format markdown` (a CI summary): an environment's error and drift lines quote
    repository and cluster text."""
    from reconciler.run.status import EnvironmentStatus, ModelStatus, to_markdown

    statuses = [EnvironmentStatus("dev", "models-dev", head="b" * 40, deployed="a" * 40, ok=True, models={
                    "iris": ModelStatus("iris", 3, [f"Deployment/iris: {h}" for h in HOSTILE + HOSTILE_MORE], "healthy")}),
                EnvironmentStatus("prod", "models-prod", error=HOSTILE[2] + HOSTILE_MORE[4])]
    p = page(to_markdown(statuses))
    assert_inert(p)
    assert [r[0] for r in p.rows] == ["environment", "dev", "prod", "model", "iris"]
