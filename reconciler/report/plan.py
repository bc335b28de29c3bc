"""Plans as text a reviewer reads: markdown for a PR comment, JSON for tools (the terminal view is reconciler.cli.plan)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from reconciler.plan import cost
from reconciler.plan.changes import EnvironmentPlan, ModelPlan, Plan, short_revision
from reconciler.plan.review import fmt
from reconciler.results import Action

MARKDOWN_COMMENT_MARKER = "<!-- reconciler-plan -->"


# --------------------------------------------------------------------------- the PR comment

GITHUB_COMMENT_LIMIT = 65_536  # characters GitHub accepts in one issue comment
FULL_PLAN_HINT = "the full plan is attached to the workflow run as the artifact `reconciler-plan` (plan.md, plan.json)"


def _md(text: str) -> str:
    """Text safe inside a markdown table cell."""
    return text.replace("|", "\\|").replace("\n", "<br>")


def cost_cell(mp: ModelPlan) -> str:
    if mp.review is None:
        return "-"
    low, high = mp.review.cost_delta
    if (low, high) == (0.0, 0.0):
        return "±$0.00"
    return cost.usd(low, signed=True) if low == high else f"{cost.usd(low, signed=True)} (min) / {cost.usd(high, signed=True)} (max)"


def summary_line(env: EnvironmentPlan) -> str:
    m = env.model_summary
    counts = env.summary.counts
    models = f"models: {m['added']} added, {m['changed']} changed, {m['removed']} removed"
    if m["errors"]:
        models += f", {m['errors']} with errors"
    objects = (f"objects: {counts[Action.created]} created, {counts[Action.configured]} configured, "
               f"{counts[Action.pruned]} pruned")
    low, high = env.cost_delta
    if low == high:
        line = f"{models} · {objects} · cost: {cost.usd(low, signed=True)} a month"
    else:
        line = (f"{models} · {objects} · cost: {cost.usd(low, signed=True)} a month at min replicas, "
                f"{cost.usd(high, signed=True)} at max")
    if env.total is not None:
        line += f" ({cost.usd_range(env.total[0].monthly)} -> {cost.usd_range(env.total[1].monthly)})"
    return line


@dataclass
class _Block:
    """A part of the comment; diffs may be dropped to fit the limit, the rest stays."""

    text: str
    diff_of: str | None = None  # "env/model" when this block is a folded diff


def _environment_blocks(index: int, env: EnvironmentPlan, base: str, head: str, max_diff_lines: int) -> list[_Block]:
    name = env.environment
    head_line = f"#### {index}. `{name}`"
    if env.error:
        return [_Block("\n".join([head_line, "", "```", env.error, "```", ""]))]
    if not env.models:
        return [_Block("\n".join([head_line, "", "No change.", ""]))]
    lines = [head_line, "", f"**{summary_line(env)}**", ""]
    if env.budget_error:
        lines += ["> [!CAUTION]", *(f"> {line}" for line in env.budget_error.splitlines()), ""]
    if env.changes:
        lines += ["Environment: " + "; ".join(f"`{c}`" for c in env.changes), ""]
    lines += ["| model | objects | cost / month | why |", "|---|---|---|---|"]
    for model, mp in sorted(env.models.items()):
        status = f"❌ {mp.error.splitlines()[0]}" if mp.error else str(mp.summary)
        why = "<br>".join(_md(r) for r in mp.reasons) or "-"
        lines.append(f"| `{model}` | {_md(status)} | {cost_cell(mp)} | {why} |")
    lines.append("")
    moves = [(m, mp.review.move) for m, mp in sorted(env.models.items()) if mp.review and mp.review.move]
    if moves:
        lines += ["Accelerator moves:", *(f"- `{m}`: {_md(move)}" for m, move in moves), ""]
    policy = [(m, row) for m, mp in sorted(env.models.items()) if mp.review for row in mp.review.policy]
    if policy:
        lines += ["Canary policy and SLOs:", "", "| model | field | before | after |", "|---|---|---|---|"]
        lines += [f"| `{m}` | `{f}` | {_md(fmt(a))} | {_md(fmt(b))} |" for m, (f, a, b) in policy]
        lines.append("")
    metrics = [(m, row) for m, mp in sorted(env.models.items()) if mp.review for row in mp.review.metrics]
    if metrics:
        lines += ["Evaluation metrics:", "", "| model | metric | before | after | change |", "|---|---|---|---|---|"]
        for m, row in metrics:
            change = (f"{row.after - row.before:+.4g}" if isinstance(row.before, (int, float))
                      and isinstance(row.after, (int, float)) else "-")
            lines.append(f"| `{m}` | {row.name} | {fmt(row.before)} | {fmt(row.after)} | {change} |")
        lines.append("")
    blocks = [_Block("\n".join(lines))]
    for model, mp in sorted(env.models.items()):
        if mp.error:
            blocks.append(_Block("\n".join([f"<details><summary><code>{model}</code>: errors</summary>", "", "```",
                                            mp.error, "```", "", "</details>", ""])))
            continue
        diff = "\n".join(r.diff.rstrip("\n") for r in mp.objects if r.diff)
        if not diff:
            continue
        diff_lines = diff.replace("```", "`\u200b``").splitlines()
        if len(diff_lines) > max_diff_lines:
            diff_lines = diff_lines[:max_diff_lines] + [f"... {len(diff_lines) - max_diff_lines} more lines"]
        blocks.append(_Block("\n".join([
            f"<details><summary><code>{model}</code>: {mp.summary} (<code>{base}</code> → <code>{head}</code>)</summary>",
            "", "```diff", *diff_lines, "```", "", "</details>", ""]), diff_of=f"{name}/{model}"))
    return blocks


def plan_markdown(plan: Plan, *, max_diff_lines: int = 400, limit: int = GITHUB_COMMENT_LIMIT,
                  full_plan: str = FULL_PLAN_HINT) -> str:
    """A PR comment: per environment in promotion order, a summary, a row per changed model, cost,
    moves, policy and metric tables, and diffs folded per model; never longer than `limit`.

    To fit, the largest diffs are dropped first (the comment says which and where the full plan
    is); if the tables alone are too long, the last rows go, largest environment first.
    """
    base, head = short_revision(plan.base), short_revision(plan.head)
    top = [MARKDOWN_COMMENT_MARKER, f"### Reconciler plan `{base}` → `{head}`", ""]
    if not plan.ok:
        top += ["> [!CAUTION]", "> Some models or environments have errors or exceed a budget: they will not be applied.", ""]
    ordered = plan.ordered()
    if len(ordered) > 1:
        top += ["Promotion order: " + " → ".join(f"`{e.environment}`" for e in ordered), ""]
    blocks = [_Block("\n".join(top))]
    for i, env in enumerate(ordered, 1):
        blocks += _environment_blocks(i, env, base, head, max_diff_lines)

    def render(note: str | None) -> str:
        return "\n".join(b.text for b in blocks) + ("\n" + note if note else "") + "\n"

    text = render(None)
    if len(text) <= limit:
        return text
    dropped: list[str] = []
    by_size = sorted((b for b in blocks if b.diff_of), key=lambda b: len(b.text), reverse=True)
    note = ""
    for block in by_size:
        dropped.append(block.diff_of or "")
        blocks.remove(block)
        note = _cut_note(dropped, 0, full_plan)
        if len(render(note)) <= limit:
            return render(note)
    # still too long: the tables themselves; keep the head of each block, cut lines from the longest
    cut_lines = 0
    while len(render(note)) > limit:
        longest = max(blocks, key=lambda b: len(b.text))
        lines = longest.text.splitlines()
        keep = max(1, len(lines) - max(1, (len(render(note)) - limit) // 80 + 1))
        cut_lines += len(lines) - keep
        longest.text = "\n".join(lines[:keep] + [f"| … | {len(lines) - keep} more lines cut | | |"])
        note = _cut_note(dropped, cut_lines, full_plan)
    return render(note)


def _cut_note(dropped: list[str], cut_lines: int, full_plan: str) -> str:
    parts = []
    if dropped:
        shown = ", ".join(f"`{d}`" for d in dropped[:20]) + (f" and {len(dropped) - 20} more" if len(dropped) > 20 else "")
        parts.append(f"{len(dropped)} diff(s) left out, largest first: {shown}")
    if cut_lines:
        parts.append(f"{cut_lines} table line(s) cut")
    return ("> [!NOTE]\n> Shortened to fit GitHub's 65,536-character comment limit: " + "; ".join(parts)
            + f". {full_plan[0].upper()}{full_plan[1:]}.")


def plan_json(plan: Plan) -> str:
    return json.dumps(plan.as_dict(), indent=2, sort_keys=True)
