"""`reconciler plan`, and plans printed for a terminal with rich (markdown and JSON are in
reconciler.report.plan).

A PR job runs `plan --format markdown|json`, which prints nothing through rich unless it has a note,
a warning or an error: rich (and reconciler.cli.console, built on it) is imported where something is
printed with it, so that job does not pay rich's import (tests/test_cli_imports.py keeps it out).
"""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from reconciler.cli.exits import outcome
from reconciler.cli.options import RepoOption, TraceOption, fail
from reconciler.errors import ReconcilerError
from reconciler.plan.changes import EnvironmentPlan, Plan
from reconciler.plan.revisions import plan_revisions
from reconciler.plan.review import fmt
from reconciler.report.plan import by_importance, cost_cell, plan_json, plan_markdown, short_revision, summary_line, why
from reconciler.results import Action

if TYPE_CHECKING:
    from rich.console import Console
    from rich.panel import Panel


class PlanFormat(str, Enum):
    text = "text"
    markdown = "markdown"
    json = "json"


ACTION_STYLE = {Action.created: "green", Action.configured: "yellow", Action.pruned: "red",
                Action.unchanged: "dim", Action.skipped: "magenta", Action.failed: "bold red"}


def print_plan(plan: Plan, console: Console, *, diffs: bool = True) -> None:
    from rich.text import Text  # noqa: PLC0415 - rich only where a plan is drawn with it (module docstring)

    from reconciler.cli.console import line  # noqa: PLC0415 - built on rich, as above

    console.print(line(Text("Plan", style="bold"), f" {short_revision(plan.base)} -> {short_revision(plan.head)}"))
    for env in by_importance(plan):  # as the PR comment: the most important environment first
        console.print(_environment_panel(env.environment, env, diffs, fit=console.is_terminal))


def _environment_panel(name: str, env: EnvironmentPlan, diffs: bool, fit: bool = True) -> Panel:
    """`fit`: fill the terminal's width; off (a CI log), the panel takes its content's width and cuts nothing."""
    # the terminal format only (module docstring); rich's Syntax brings pygments and Table brings fractions/decimal
    from rich.console import Group  # noqa: PLC0415
    from rich.panel import Panel  # noqa: PLC0415
    from rich.syntax import Syntax  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415
    from rich.text import Text  # noqa: PLC0415

    from reconciler.cli.console import title as _title  # noqa: PLC0415 - built on rich, as above

    if env.error:
        return Panel(Text(env.error, style="red"), title=_title(f"{name}: environment error"), border_style="red",
                     expand=fit)
    if not env.models:
        return Panel(Text("no change", style="dim"), title=_title(name), border_style="dim", expand=fit)
    parts: list = [Text(summary_line(env))]
    if env.budget_error:
        parts.append(Text(env.budget_error, style="bold red"))
    table = Table(show_header=True, header_style="bold", expand=fit)
    table.add_column("model")
    table.add_column("objects")
    table.add_column("cost/month")
    table.add_column("why")
    parts.append(table)
    for model, mp in sorted(env.models.items()):
        status = Text(mp.error, style="red") if mp.error else Text(str(mp.summary))
        for r in mp.replacements:
            status.append(f"\n{r.old.kind} replaced: {r.old.name} -> {r.new.name}")
        table.add_row(Text(model), status, Text(cost_cell(mp)), Text("\n".join(why(mp))))
    for model, mp in sorted(env.models.items()):
        review = mp.review
        for field, before, after in (review.policy if review else []):
            parts.append(Text(f"{model}: {field} {fmt(before)} -> {fmt(after)}", style="cyan"))
        replaced = {r.old for r in mp.replacements} | {r.new for r in mp.replacements}
        for r in mp.replacements:  # a pool move: the fields that differ, not two whole objects
            parts.append(Text(f"{model}: {r.old.kind} {r.old.name} -> {r.new.name}, the fields that differ:", style="cyan"))
            parts += [Text(f"    {c}") for c in r.changes]
        for result in mp.objects:
            if result.action is Action.unchanged:
                continue
            parts.append(Text(f"{result.action.value:>10}  {result.ref}", style=ACTION_STYLE[result.action]))
            if diffs and result.diff and result.ref not in replaced:
                parts.append(Syntax(result.diff, "diff", theme="ansi_dark", background_color="default"))
    title = f"{name}: {len(env.changed_models)} model(s) changed" if env.changed_models else f"{name}: no manifest change"
    return Panel(Group(*parts), title=_title(title), border_style="red" if not env.ok else "yellow", expand=fit)


def plan(
    base: Annotated[str, typer.Option(help="the revision changes are measured from; 'empty' for a first deployment")] = "HEAD",
    head: Annotated[str | None, typer.Option(help="the revision to plan (default: the working tree)")] = None,
    environment: Annotated[list[str] | None, typer.Option("--env", "-e", help="only this environment (repeatable)")] = None,
    fmt: Annotated[PlanFormat, typer.Option("--format", "-f", help="text (a terminal), markdown (a PR comment) or json")] = PlanFormat.text,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="write the plan to a file too")] = None,
    artifact: Annotated[Path | None, typer.Option(
        help="write the complete plan (plan.md with every diff, plan.json) into this folder, e.g. for a CI artifact")] = None,
    diffs: Annotated[bool, typer.Option(help="show manifest diffs in text output")] = True,
    full: Annotated[bool, typer.Option(
        help="render every model at both revisions, without the render cache (slow; the incremental plan is "
             "tested to be identical)")] = False,
    check_artifacts: Annotated[bool, typer.Option(help="check that changed models' DVC-tracked weights are in the DVC remote (existence only, nothing is downloaded)")] = True,
    trace: TraceOption = True,
    repo: RepoOption = Path("."),
) -> None:
    """Show, per environment, which models change between two revisions and the manifest diff.

    The markdown format is a PR comment: capped at GitHub's 65,536 characters (largest diffs left
    out first, saying so); --artifact keeps the complete plan beside it.
    """
    try:
        result = plan_revisions(repo, base, head, environment or None, full=full, check_artifacts=check_artifacts,
                                trace=trace)
    except ReconcilerError as exc:
        raise fail(exc) from None
    if result.notes or result.hints or result.warnings:
        from reconciler.cli.console import err  # noqa: PLC0415 - rich only when something is printed with it

        for note in [*result.notes, *result.hints]:
            err.print(f"note: {note}")
        for warning in result.warnings:
            err.print(f"warning: {warning}")
    if fmt is PlanFormat.text:
        from reconciler.cli.console import out  # noqa: PLC0415 - as above

        print_plan(result, out, diffs=diffs)
        text = None
    else:
        text = plan_markdown(result) if fmt is PlanFormat.markdown else plan_json(result)
        sys.stdout.write(text)
    if output is not None:
        output.write_text(text if text is not None else plan_json(result), encoding="utf-8")
    if artifact is not None:
        artifact.mkdir(parents=True, exist_ok=True)
        (artifact / "plan.md").write_text(plan_markdown(result, limit=sys.maxsize, max_diff_lines=sys.maxsize),
                                          encoding="utf-8")
        (artifact / "plan.json").write_text(plan_json(result), encoding="utf-8")
    envs = result.environments.values()
    raise typer.Exit(outcome(done=sum(1 for e in envs if not e.error),
                             failed=sum(1 for e in envs if e.error) + sum(1 for e in envs for m in e.models.values()
                                                                          if m.error)))
