"""Plans printed for a terminal with rich (markdown and JSON are in reconciler.report.plan)."""

from __future__ import annotations

from rich.console import Console, Group
from rich.panel import Panel
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from reconciler.cli.console import line, title as _title
from reconciler.plan.changes import EnvironmentPlan, Plan
from reconciler.plan.review import fmt
from reconciler.report.plan import cost_cell, short_revision, summary_line
from reconciler.results import Action

ACTION_STYLE = {Action.created: "green", Action.configured: "yellow", Action.pruned: "red",
                Action.unchanged: "dim", Action.skipped: "magenta", Action.failed: "bold red"}


def print_plan(plan: Plan, console: Console, *, diffs: bool = True) -> None:
    console.print(line(Text("Plan", style="bold"), f" {short_revision(plan.base)} -> {short_revision(plan.head)}"))
    for env in plan.ordered():
        console.print(_environment_panel(env.environment, env, diffs))


def _environment_panel(name: str, env: EnvironmentPlan, diffs: bool) -> Panel:
    if env.error:
        return Panel(Text(env.error, style="red"), title=_title(f"{name}: environment error"), border_style="red")
    if not env.models:
        return Panel(Text("no change", style="dim"), title=_title(name), border_style="dim")
    parts: list = [Text(summary_line(env))]
    if env.budget_error:
        parts.append(Text(env.budget_error, style="bold red"))
    table = Table(show_header=True, header_style="bold", expand=True)
    table.add_column("model")
    table.add_column("objects")
    table.add_column("cost/month")
    table.add_column("why")
    parts.append(table)
    for model, mp in sorted(env.models.items()):
        status = Text(mp.error, style="red") if mp.error else Text(str(mp.summary))
        table.add_row(Text(model), status, Text(cost_cell(mp)), Text("\n".join(mp.reasons) or "-"))
    for model, mp in sorted(env.models.items()):
        review = mp.review
        for field, before, after in (review.policy if review else []):
            parts.append(Text(f"{model}: {field} {fmt(before)} -> {fmt(after)}", style="cyan"))
        for result in mp.objects:
            if result.action is Action.unchanged:
                continue
            parts.append(Text(f"{result.action.value:>10}  {result.ref}", style=ACTION_STYLE[result.action]))
            if diffs and result.diff:
                parts.append(Syntax(result.diff, "diff", theme="ansi_dark", background_color="default"))
    title = f"{name}: {len(env.changed_models)} model(s) changed" if env.changed_models else f"{name}: no manifest change"
    return Panel(Group(*parts), title=_title(title), border_style="red" if not env.ok else "yellow")
