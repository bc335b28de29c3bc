"""A finished canary as Markdown: the pull-request comment (outcome, chart link, one row per decision). Pure;
reconciler.report.github posts it and reconciler.report.commit writes it beside the chart."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from reconciler.report import escape as esc
from reconciler.report.rollout import guard_line
from reconciler.rollout.state import Phase, RolloutState


def _cell(text: Any) -> str:
    """Running text in a table cell or line: reasons and outcomes carry repository text (canary queries,
    model names) and peers' error texts, escaped as the PR comment escapes them (reconciler.report.escape)."""
    return esc.plain(text)


def _figures(metrics: dict[str, Any] | None) -> str:
    if not metrics:
        return "no data"
    parts = []
    if metrics.get("error_rate") is not None:
        parts.append(f"err {metrics['error_rate']:.2%}")
    if metrics.get("p95_ms") is not None:
        parts.append(f"p95 {metrics['p95_ms']:.0f} ms")
    if metrics.get("requests") is not None:
        parts.append(f"{metrics['requests']:.0f} req")
    return ", ".join(parts) or "no data"


def report_markdown(state: RolloutState, chart_url: str | None = None) -> str:
    """The PR comment: outcome, then one row per decision (weight set / achieved, both tracks, why)."""
    old = state.replaced_revision if state.phase is Phase.promoted else state.stable_revision
    lines = [f"### Canary of {esc.code(state.model)} in {esc.code(state.environment)}: {state.phase.value.replace('_', ' ')}",
             "", f"{esc.code(old or '-')} -> {esc.code(state.canary_revision or '-')}"
             + (f" ({esc.code(state.replaced_pool or state.stable_pool)} -> {esc.code(state.canary_pool)})"
                if state.canary_pool and (state.replaced_pool or state.stable_pool) != state.canary_pool else ""),
             ""]
    if state.outcome:
        lines += [f"**Outcome:** {_cell(state.outcome)}", ""]
    if chart_url:
        lines += [f"![rollout chart]({chart_url})", ""]

    if guard_line(state):
        lines += [f"**Last judgement:** {_cell(guard_line(state))}", ""]
    lines += ["| time (UTC) | decision | weight set | achieved | stable | canary | why |",
              "|---|---|---|---|---|---|---|"]
    rows = [r for r in state.history if r.revision == state.canary_revision]
    for i, r in enumerate(rows):
        if r.decision == "wait" and i + 1 < len(rows) and rows[i + 1].decision == "wait":
            continue  # a step waiting for the guard's sample: its last wait row says how far it got
        when = datetime.fromtimestamp(r.at, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        achieved = "" if r.achieved_weight is None else f"{r.achieved_weight:.0f}%"
        lines.append(f"| {when} | {_cell(r.decision)} | {r.canary_weight}% | {achieved} | {_cell(_figures(r.stable))} | "
                     f"{_cell(_figures(r.canary))} | {_cell('; '.join(r.reasons))} |")
    return "\n".join(lines) + "\n"
