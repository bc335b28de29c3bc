"""Plans as text a reviewer reads: markdown for a PR comment, JSON for tools (the terminal view is reconciler.cli.plan)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from reconciler.plan import cost
from reconciler.plan.changes import EnvironmentPlan, ModelPlan, Plan, short_revision
from reconciler.plan.review import fmt
from reconciler.report import escape as esc
from reconciler.results import Action

MARKDOWN_COMMENT_MARKER = "<!-- reconciler-plan -->"


# --------------------------------------------------------------------------- the PR comment

GITHUB_COMMENT_LIMIT = 65_536  # characters GitHub accepts in one issue comment
FULL_PLAN_HINT = "the full plan is attached to the workflow run as the artifact `reconciler-plan` (plan.md, plan.json)"


def cost_cell(mp: ModelPlan) -> str:
    if mp.error:
        return "unchanged (kept)"  # not applied: what runs stays, and so does its cost
    if mp.review is None:
        return "-"
    low, high = mp.review.cost_delta
    if (low, high) == (0.0, 0.0):
        return "±$0.00"
    return cost.usd(low, signed=True) if low == high else f"{cost.usd(low, signed=True)} (min) / {cost.usd(high, signed=True)} (max)"


def env_cost(env: EnvironmentPlan) -> str:
    """The environment's monthly cost change, with its totals when they are known."""
    low, high = env.cost_delta
    text = cost.usd(low, signed=True) if low == high else \
        f"{cost.usd(low, signed=True)} at min replicas, {cost.usd(high, signed=True)} at max"
    if env.total is not None:
        text += f" ({cost.usd_range(env.total[0].monthly)} -> {cost.usd_range(env.total[1].monthly)})"
    return text


def summary_line(env: EnvironmentPlan) -> str:
    m = env.model_summary
    counts = env.summary.counts
    models = f"models: {m['added']} added, {m['changed']} changed, {m['removed']} removed"
    if m["errors"]:
        models += f", {m['errors']} with errors (kept as deployed)"
    objects = (f"objects: {counts[Action.created]} created, {counts[Action.configured]} configured, "
               f"{counts[Action.pruned]} pruned")
    return f"{models} · {objects} · cost: {env_cost(env)} a month"


def why(mp: ModelPlan) -> list[str]:
    """The model's reasons; never empty for a row (a row exists because something differs)."""
    if mp.reasons:
        return list(mp.reasons)
    if mp.error:
        return ["its errors (below) keep it as deployed"]
    return ["the rendered objects differ (see the diff)"] if mp.changed else ["cost, policy or metrics (below)"]


def by_importance(plan: Plan) -> list[EnvironmentPlan]:
    """Environments from the most important down: the reverse of the promotion order (prod, staging,
    dev), so what reaches production is read first."""
    return list(reversed(plan.ordered()))


# --------------------------------------------------------------------------- risk


@dataclass(frozen=True, order=True)
class Risk:
    """How much a reviewer should look at one model's change: the environment's rank first (a change
    in prod outranks any change in dev), then the kind of change, then its cost."""

    env_rank: int  # higher: a more important environment
    weight: int
    cost: float
    environment: str = ""
    model: str = ""
    what: str = ""


def risk(env: EnvironmentPlan, env_rank: int, model: str, mp: ModelPlan, canaries: bool) -> Risk | None:
    """The risk of applying one model's change; None when nothing of it is applied. Pure."""
    if mp.error:
        return None
    counts = mp.summary.counts
    review = mp.review
    cost_up = max(review.cost_delta) if review else 0.0
    if counts[Action.pruned] and not counts[Action.created] and not counts[Action.configured] \
            and not counts[Action.unchanged]:
        weight, what = 60, "removes the model: every object of it is deleted"
    elif review is not None and review.move:
        weight, what = (50, f"moves {review.move}") if "no canary" in review.move else (40, f"moves {review.move}")
    elif counts[Action.pruned]:
        weight, what = 35, f"deletes {counts[Action.pruned]} object(s)"
    elif counts[Action.configured] and not canaries:
        weight, what = 30, "changes serving objects in place, without a canary"
    elif review is not None and review.policy:
        weight, what = 25, "changes its canary policy or SLOs: " + ", ".join(f for f, _, _ in review.policy)
    elif counts[Action.configured]:
        weight, what = 20, "changes serving objects (rolled out by a canary)"
    elif counts[Action.created]:
        weight, what = 15, "deploys a new model"
    elif cost_up:
        weight, what = 10, "changes its cost"
    else:
        weight, what = 5, "changes its evaluation metrics"
    if cost_up > 0:
        what += f"; cost {cost.usd(cost_up, signed=True)} a month"
    return Risk(env_rank, weight, round(cost_up, 2), env.environment, model, what)


def riskiest(plan: Plan, canaries: dict[str, bool] | None = None) -> Risk | None:
    """The one change of the plan a reviewer should read first. Pure."""
    envs = by_importance(plan)
    found = [r for i, env in enumerate(envs) for model, mp in env.models.items()
             if (r := risk(env, len(envs) - i, model, mp, (canaries or {}).get(env.environment, True)))]
    return max(found, default=None)


# --------------------------------------------------------------------------- the comment


@dataclass
class _Block:
    """A part of the comment; diffs may be dropped to fit the limit, the rest stays."""

    text: str
    diff_of: str | None = None  # "env/model" when this block is a folded diff


def _summary_block(plan: Plan, base: str, head: str) -> list[str]:
    envs = by_importance(plan)
    lines = [f"**Summary**, environments from the most important down ({' → '.join(e.environment for e in envs)}; "
             "promotion runs the other way):", "",
             "| environment | cost / month | accelerator moves | models with errors | models |",
             "|---|---|---|---|---|"]
    for env in envs:
        name = esc.cell_code(env.environment)
        if env.error:
            lines.append(f"| {name} | - | - | ❌ the environment does not render: nothing is applied | - |")
            continue
        moves = "<br>".join(f"{esc.cell_code(m)}: {esc.cell_code(mp.review.move)}"
                            for m, mp in sorted(env.models.items()) if mp.review and mp.review.move and not mp.error)
        failing = ", ".join(esc.cell_code(m) for m, mp in sorted(env.models.items()) if mp.error)
        if env.budget_error:
            failing = (failing + "<br>" if failing else "") + "❌ over its budget"
        m = env.model_summary
        models = (f"{m['changed']} changed, {m['added']} added, {m['removed']} removed" if env.models else "no change")
        lines.append(f"| {name} | {env_cost(env) if env.models else '±$0.00'} | {moves or 'none'} | "
                     f"{failing or 'none'} | {models} |")
    top = riskiest(plan)
    lines.append("")
    if top is not None:
        lines += [f"**Riskiest change:** {esc.code(top.model)} in {esc.code(top.environment)}: {esc.code(top.what)}", ""]
    return lines


def _move_lines(model: str, mp: ModelPlan) -> list[str]:
    lines = []
    for r in mp.replacements:
        lines += [f"{esc.code(model)}: {esc.code(r.old.kind)} {esc.code(r.old.name)} is replaced by "
                  f"{esc.code(r.new.name)}; the fields that differ:", "",
                  "| field | before | after |", "|---|---|---|"]
        lines += [f"| {esc.cell_code(c.path)} | {_value(c.live)} | {_value(c.desired)} |" for c in r.changes]
        lines.append("")
    return lines


def _value(value: object) -> str:
    if value is None:
        return "(none)"
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, ensure_ascii=False)
    return esc.cell_code(text)


def _environment_blocks(index: int, env: EnvironmentPlan, base: str, head: str, max_diff_lines: int) -> list[_Block]:
    name = env.environment
    head_line = f"#### {index}. {esc.code(name)}"
    if env.error:
        return [_Block("\n".join([head_line, "", *esc.block(env.error), ""]))]
    if not env.models:
        return [_Block("\n".join([head_line, "", "No change.", ""]))]
    lines = [head_line, "", f"**{summary_line(env)}**", ""]  # our words and figures only
    if env.budget_error:
        lines += ["> [!CAUTION]", *(f"> {esc.plain(line)}" for line in env.budget_error.splitlines()), ""]
    if env.changes:
        lines += ["Environment: " + "; ".join(esc.code(c) for c in env.changes), ""]
    lines += ["| model | objects | cost / month | why |", "|---|---|---|---|"]
    for model, mp in sorted(env.models.items()):
        if mp.error:
            status = "❌ not applied: " + esc.cell_code(mp.error.splitlines()[0] if mp.error.strip() else "errors")
        else:
            status = esc.plain(str(mp.summary))
            if mp.replacements:
                status += "<br>" + "<br>".join(f"{esc.cell_code(r.old.kind)} replaced: {esc.cell_code(r.old.name)} → "
                                               f"{esc.cell_code(r.new.name)}" for r in mp.replacements)
        reasons = "<br>".join(esc.cell_code(r) for r in why(mp))
        lines.append(f"| {esc.cell_code(model)} | {status} | {cost_cell(mp)} | {reasons} |")
    lines.append("")
    moves = [(m, mp) for m, mp in sorted(env.models.items()) if mp.review and mp.review.move and not mp.error]
    if moves:
        lines += ["Accelerator moves:", ""]
        for m, mp in moves:
            lines += [f"- {esc.code(m)}: {esc.code(mp.review.move if mp.review else '')}"]
        lines.append("")
        for m, mp in moves:
            lines += _move_lines(m, mp)
    policy = [(m, row) for m, mp in sorted(env.models.items()) if mp.review for row in mp.review.policy]
    if policy:
        lines += ["Canary policy and SLOs:", "", "| model | field | before | after |", "|---|---|---|---|"]
        lines += [f"| {esc.cell_code(m)} | {esc.cell_code(f)} | {esc.cell_code(fmt(a))} | {esc.cell_code(fmt(b))} |"
                  for m, (f, a, b) in policy]
        lines.append("")
    metrics = [(m, row) for m, mp in sorted(env.models.items()) if mp.review for row in mp.review.metrics]
    if metrics:
        lines += ["Evaluation metrics:", "", "| model | metric | before | after | change |", "|---|---|---|---|---|"]
        for m, row in metrics:
            change = (f"{row.after - row.before:+.4g}" if isinstance(row.before, (int, float))
                      and isinstance(row.after, (int, float)) else "-")
            lines.append(f"| {esc.cell_code(m)} | {esc.cell_code(row.name)} | {esc.cell_code(fmt(row.before))} | "
                         f"{esc.cell_code(fmt(row.after))} | {change} |")
        lines.append("")
    changed = [(m, r) for m, mp in sorted(env.models.items()) for r in mp.objects if r.action.writes]
    if changed:
        lines += [f"<details><summary>{esc.html_text(name)}: {len(changed)} object(s) to write or delete</summary>", "",
                  "| object | model | action |", "|---|---|---|"]
        lines += [f"| {esc.cell_code(r.ref)} | {esc.cell_code(m)} | {r.action.value} |" for m, r in changed]
        lines += ["", "</details>", ""]
    blocks = [_Block("\n".join(lines))]
    for model, mp in sorted(env.models.items()):
        if mp.error:
            blocks.append(_Block("\n".join([f"<details><summary><code>{esc.html_text(model)}</code>: errors</summary>",
                                            "", *esc.block(mp.error), "", "</details>", ""])))
            continue
        replaced = {r.old for r in mp.replacements} | {r.new for r in mp.replacements}  # shown as a field diff
        diff = "\n".join(r.diff.rstrip("\n") for r in mp.objects if r.diff and r.ref not in replaced)
        if not diff:
            continue
        diff_lines = diff.splitlines()
        if len(diff_lines) > max_diff_lines:
            diff_lines = diff_lines[:max_diff_lines] + [f"... {len(diff_lines) - max_diff_lines} more lines"]
        blocks.append(_Block("\n".join([
            f"<details><summary><code>{esc.html_text(model)}</code>: {esc.html_text(mp.summary)} "
            f"(<code>{esc.html_text(base)}</code> → <code>{esc.html_text(head)}</code>)</summary>",
            "", *esc.block("\n".join(diff_lines), "diff"), "", "</details>", ""]), diff_of=f"{name}/{model}"))
    return blocks


def plan_markdown(plan: Plan, *, max_diff_lines: int = 400, limit: int = GITHUB_COMMENT_LIMIT,
                  full_plan: str = FULL_PLAN_HINT) -> str:
    """A PR comment that leads with the answer: a summary (cost per environment, accelerator moves,
    models with errors, the riskiest change), then per environment from the most important down a
    row per changed model, moves as field diffs, policy and metric tables, the changed objects, and
    diffs folded per model; never longer than `limit`. Every value from the repository is escaped
    for where it lands (reconciler.report.escape).

    To fit, the largest diffs are dropped first (the comment says which and where the full plan
    is); if the tables alone are too long, the last rows go, largest environment first.
    """
    base, head = short_revision(plan.base), short_revision(plan.head)
    top = [MARKDOWN_COMMENT_MARKER, f"### Reconciler plan {esc.code(base)} → {esc.code(head)}", ""]
    if not plan.ok:
        top += ["> [!CAUTION]", "> Some models or environments have errors or exceed a budget: they will not be applied "
                "(what runs now stays as it is).", ""]
    top += _summary_block(plan, base, head)
    blocks = [_Block("\n".join(top))]
    for i, env in enumerate(by_importance(plan), 1):
        blocks += _environment_blocks(i, env, base, head, max_diff_lines)

    def render(note: str | None) -> str:
        return "\n".join(b.text for b in blocks) + ("\n" + note if note else "") + "\n"

    def size(note: str | None) -> int:  # len(render(note)), without building it
        return sum(len(b.text) for b in blocks) + len(blocks) - 1 + (len(note) + 1 if note else 0) + 1

    text = render(None)
    if len(text) <= limit:
        return text
    dropped: list[str] = []
    by_size = sorted((b for b in blocks if b.diff_of), key=lambda b: len(b.text), reverse=True)
    gone: set[int] = set()
    note = ""
    total = size(None)
    for block in by_size:
        dropped.append(block.diff_of or "")
        gone.add(id(block))
        total -= len(block.text) + 1
        note = _cut_note(dropped, 0, full_plan)
        if total + len(note) + 1 <= limit:
            break
    blocks[:] = [b for b in blocks if id(b) not in gone]
    if size(note) <= limit:
        return render(note)
    # still too long: the tables themselves; keep the head of each block, cut lines from the longest
    cut_lines = 0
    while size(note) > limit:
        longest = max(blocks, key=lambda b: len(b.text))
        lines = longest.text.splitlines()
        excess = size(note) - limit + 200  # what must go, with room for the line saying so and the note's growth
        keep, removed = len(lines), 0
        while keep > 1 and removed < excess:  # by characters, not an average line length: it always shrinks
            keep -= 1
            removed += len(lines[keep]) + 1
        if keep == len(lines):  # every block is down to one line: nothing more can go (never loop)
            break
        cut_lines += len(lines) - keep
        kept = lines[:keep]
        unclosed = sum(line.count("<details") for line in kept) - sum(line.count("</details>") for line in kept)
        longest.text = "\n".join(kept + ["", f"… {len(lines) - keep} more lines cut", ""]
                                 + ["</details>", ""] * max(0, unclosed))
        note = _cut_note(dropped, cut_lines, full_plan)
    return render(note)


def _cut_note(dropped: list[str], cut_lines: int, full_plan: str) -> str:
    parts = []
    if dropped:
        shown = ", ".join(esc.code(d) for d in dropped[:20]) + (f" and {len(dropped) - 20} more" if len(dropped) > 20 else "")
        parts.append(f"{len(dropped)} diff(s) left out, largest first: {shown}")
    if cut_lines:
        parts.append(f"{cut_lines} table line(s) cut")
    return ("> [!NOTE]\n> Shortened to fit GitHub's 65,536-character comment limit: " + "; ".join(parts)
            + f". {full_plan[0].upper()}{full_plan[1:]}.")


def plan_json(plan: Plan) -> str:
    return json.dumps(plan.as_dict(), indent=2, sort_keys=True)
