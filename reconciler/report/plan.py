"""Plans as text a reviewer reads: rich for the terminal, markdown for a PR comment, JSON for tools."""

from __future__ import annotations

import json

from rich.console import Console, Group
from rich.panel import Panel
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from reconciler.plan.changes import EnvironmentPlan, Plan
from reconciler.results import Action

ACTION_STYLE = {Action.created: "green", Action.configured: "yellow", Action.pruned: "red",
                Action.unchanged: "dim", Action.skipped: "magenta", Action.failed: "bold red"}
MARKDOWN_COMMENT_MARKER = "<!-- reconciler-plan -->"


def _short(rev: str) -> str:
    return rev if rev == "worktree" else rev[:12]


def print_plan(plan: Plan, console: Console, *, diffs: bool = True) -> None:
    console.print(f"[bold]Plan[/bold] {_short(plan.base)} -> {_short(plan.head)}")
    for name, env in sorted(plan.environments.items()):
        console.print(_environment_panel(name, env, diffs))


def _environment_panel(name: str, env: EnvironmentPlan, diffs: bool) -> Panel:
    if env.error:
        return Panel(Text(env.error, style="red"), title=f"{name}: environment error", border_style="red")
    if not env.models:
        return Panel(Text("no change", style="dim"), title=name, border_style="dim")
    table = Table(show_header=True, header_style="bold", expand=True)
    table.add_column("model")
    table.add_column("objects")
    table.add_column("why")
    parts: list = [table]
    for model, mp in sorted(env.models.items()):
        status = Text(mp.error, style="red") if mp.error else Text(str(mp.summary))
        table.add_row(model, status, "\n".join(mp.reasons) or "-")
        for result in mp.objects:
            if result.action is Action.unchanged:
                continue
            parts.append(Text(f"{result.action.value:>10}  {result.ref}", style=ACTION_STYLE[result.action]))
            if diffs and result.diff:
                parts.append(Syntax(result.diff, "diff", theme="ansi_dark", background_color="default"))
    title = f"{name}: {len(env.changed_models)} model(s) changed" if env.changed_models else f"{name}: no manifest change"
    return Panel(Group(*parts), title=title, border_style="yellow" if env.changed_models else "dim")


def plan_markdown(plan: Plan, *, max_diff_lines: int = 400) -> str:
    """A PR comment: one section per environment, a table of models, diffs folded in <details>."""
    lines = [MARKDOWN_COMMENT_MARKER, f"### Reconciler plan `{_short(plan.base)}` → `{_short(plan.head)}`", ""]
    if not plan.ok:
        lines += ["> [!CAUTION]", "> Some models or environments have errors: they will not be applied.", ""]
    for name, env in sorted(plan.environments.items()):
        lines.append(f"#### `{name}`")
        if env.error:
            lines += ["", "```", env.error, "```", ""]
            continue
        if not env.models:
            lines += ["No change.", ""]
            continue
        lines += ["", "| model | objects | why |", "|---|---|---|"]
        for model, mp in sorted(env.models.items()):
            status = f"❌ {mp.error.splitlines()[0]}" if mp.error else str(mp.summary)
            why = "<br>".join(r.replace("|", "\\|") for r in mp.reasons) or "-"
            lines.append(f"| `{model}` | {status.replace('|', '/')} | {why} |")
        lines.append("")
        for model, mp in sorted(env.models.items()):
            if mp.error:
                lines += [f"<details><summary><code>{model}</code>: errors</summary>", "", "```", mp.error, "```",
                          "", "</details>", ""]
                continue
            diff = "\n".join(r.diff.rstrip("\n") for r in mp.objects if r.diff)
            if not diff:
                continue
            diff_lines = diff.splitlines()
            if len(diff_lines) > max_diff_lines:
                diff_lines = diff_lines[:max_diff_lines] + [f"... {len(diff_lines) - max_diff_lines} more lines"]
            lines += [f"<details><summary><code>{model}</code>: {mp.summary}</summary>", "", "```diff",
                      *diff_lines, "```", "", "</details>", ""]
    return "\n".join(lines) + "\n"


def plan_json(plan: Plan) -> str:
    return json.dumps(plan.as_dict(), indent=2, sort_keys=True)
