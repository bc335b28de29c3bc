"""Plans as text a reviewer reads: markdown for a PR comment, JSON for tools (the terminal view is reconciler.cli.plan)."""

from __future__ import annotations

import collections
import json
from dataclasses import dataclass, field

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
    if low == high:
        return cost.usd(low, signed=True)
    at_min = f"min: {cost.IDLE}" if mp.review.after.to_zero else "min"  # why its low end is $0
    return f"{cost.usd(low, signed=True)} ({at_min}) / {cost.usd(high, signed=True)} (max)"


def env_cost(env: EnvironmentPlan) -> str:
    """The environment's monthly cost change, with its totals when they are known."""
    low, high = env.cost_delta
    # why the low end is lower than what the changed models run at: those that scale to zero when idle
    idle = cost.idle_text(sum(mp.review.after.to_zero for mp in env.models.values() if mp.review and not mp.error))
    text = cost.usd(low, signed=True) if low == high else \
        f"{cost.usd(low, signed=True)} at min replicas{f' ({idle})' if idle else ''}, {cost.usd(high, signed=True)} at max"
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
    """A part of the comment. To fit GitHub's limit a block either goes whole (`detail`: a folded diff or
    error text, named in the note) or loses rows from its end (`rank`: tables, cut lowest rank first,
    the changed objects last), with a line in its place saying what is not shown; `head` and `tail`
    (a heading, a table header, a closing `</details>`) always stay, so no tag or table is left open."""

    head: list[str]
    rows: list[str] = field(default_factory=list)
    tail: list[str] = field(default_factory=list)
    rank: int = 0  # 0: never cut by rows
    detail: str | None = None  # "diff of env/model" / "errors of env/model": dropped whole
    actions: list[str] = field(default_factory=list)  # per row of the objects table: its action
    keep: int = -1  # rows kept; -1: all

    def lines(self) -> list[str]:
        keep = len(self.rows) if self.keep < 0 else self.keep
        cut = len(self.rows) - keep
        note: list[str] = []
        if cut and self.actions:
            counts = collections.Counter(self.actions[keep:])
            note = ["", f"… {cut} more object(s) to write or delete are not listed here ("
                    + ", ".join(f"{n} {a}" for a, n in sorted(counts.items())) + "): see the full plan", ""]
        elif cut:
            note = ["", f"… {cut} more row(s) not shown: see the full plan", ""]
        return [*self.head, *self.rows[:keep], *note, *self.tail]

    @property
    def text(self) -> str:
        return "\n".join(self.lines())


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
        first = env.error.strip().splitlines()[0] if env.error.strip() else "error"
        return [_Block([head_line, "", f"❌ The environment does not render, nothing of it is applied: {esc.code(first)}", ""]),
                _Block(["<details><summary>the error</summary>", "", *esc.block(env.error), "", "</details>", ""],
                       detail=f"errors of {name}")]
    if not env.models:
        return [_Block([head_line, "", "No change.", ""])]
    lines = [head_line, "", f"**{summary_line(env)}**", ""]  # our words and figures only
    if env.budget_error:
        lines += ["> [!CAUTION]", *(f"> {esc.plain(line)}" for line in env.budget_error.splitlines()), ""]
    if env.changes:
        lines += ["Environment: " + "; ".join(esc.code(c) for c in env.changes), ""]
    blocks = [_Block(lines)]
    rows = []
    for model, mp in sorted(env.models.items()):
        if mp.error:
            status = "❌ not applied: " + esc.cell_code(mp.error.splitlines()[0] if mp.error.strip() else "errors")
        else:
            status = esc.plain(str(mp.summary))
            if mp.replacements:
                status += "<br>" + "<br>".join(f"{esc.cell_code(r.old.kind)} replaced: {esc.cell_code(r.old.name)} → "
                                               f"{esc.cell_code(r.new.name)}" for r in mp.replacements)
        reasons = "<br>".join(esc.cell_code(r) for r in why(mp))
        rows.append(f"| {esc.cell_code(model)} | {status} | {cost_cell(mp)} | {reasons} |")
    blocks.append(_Block(["| model | objects | cost / month | why |", "|---|---|---|---|"], rows, [""], rank=2))
    moves = [(m, mp) for m, mp in sorted(env.models.items()) if mp.review and mp.review.move and not mp.error]
    if moves:
        rows = [f"- {esc.code(m)}: {esc.code(mp.review.move if mp.review else '')}" for m, mp in moves] + [""]
        for m, mp in moves:
            rows += _move_lines(m, mp)
        blocks.append(_Block(["Accelerator moves:", ""], rows, [""], rank=1))
    policy = [(m, row) for m, mp in sorted(env.models.items()) if mp.review for row in mp.review.policy]
    if policy:
        blocks.append(_Block(["Canary policy and SLOs:", "", "| model | field | before | after |", "|---|---|---|---|"],
                             [f"| {esc.cell_code(m)} | {esc.cell_code(f)} | {esc.cell_code(fmt(a))} | {esc.cell_code(fmt(b))} |"
                              for m, (f, a, b) in policy], [""], rank=1))
    metrics = [(m, row) for m, mp in sorted(env.models.items()) if mp.review for row in mp.review.metrics]
    if metrics:
        rows = []
        for m, row in metrics:
            change = (f"{row.after - row.before:+.4g}" if isinstance(row.before, (int, float))
                      and isinstance(row.after, (int, float)) else "-")
            rows.append(f"| {esc.cell_code(m)} | {esc.cell_code(row.name)} | {esc.cell_code(fmt(row.before))} | "
                        f"{esc.cell_code(fmt(row.after))} | {change} |")
        blocks.append(_Block(["Evaluation metrics:", "", "| model | metric | before | after | change |",
                              "|---|---|---|---|---|"], rows, [""], rank=1))
    changed = [(m, r) for m, mp in sorted(env.models.items()) for r in mp.objects if r.action.writes]
    if changed:
        blocks.append(_Block([f"<details><summary>{esc.html_text(name)}: {len(changed)} object(s) to write or delete</summary>",
                              "", "| object | model | action |", "|---|---|---|"],
                             [f"| {esc.cell_code(r.ref)} | {esc.cell_code(m)} | {r.action.value} |" for m, r in changed],
                             ["", "</details>", ""], rank=3, actions=[r.action.value for _, r in changed]))
    for model, mp in sorted(env.models.items()):
        if mp.error:
            error = mp.error.splitlines()
            if len(error) > max_diff_lines:
                error = error[:max_diff_lines] + [f"... {len(error) - max_diff_lines} more lines"]
            blocks.append(_Block([f"<details><summary><code>{esc.html_text(model)}</code>: errors</summary>",
                                  "", *esc.block("\n".join(error)), "", "</details>", ""], detail=f"errors of {name}/{model}"))
            continue
        replaced = {r.old for r in mp.replacements} | {r.new for r in mp.replacements}  # shown as a field diff
        diff = "\n".join(r.diff.rstrip("\n") for r in mp.objects if r.diff and r.ref not in replaced)
        if not diff:
            continue
        diff_lines = diff.splitlines()
        if len(diff_lines) > max_diff_lines:
            diff_lines = diff_lines[:max_diff_lines] + [f"... {len(diff_lines) - max_diff_lines} more lines"]
        blocks.append(_Block([
            f"<details><summary><code>{esc.html_text(model)}</code>: {esc.html_text(mp.summary)} "
            f"(<code>{esc.html_text(base)}</code> → <code>{esc.html_text(head)}</code>)</summary>",
            "", *esc.block("\n".join(diff_lines), "diff"), "", "</details>", ""], detail=f"diff of {name}/{model}"))
    return blocks


def plan_markdown(plan: Plan, *, max_diff_lines: int = 400, limit: int = GITHUB_COMMENT_LIMIT,
                  full_plan: str = FULL_PLAN_HINT) -> str:
    """A PR comment that leads with the answer: a summary (cost per environment, accelerator moves,
    models with errors, the riskiest change), then per environment from the most important down a
    row per changed model, moves as field diffs, policy and metric tables, the changed objects, and
    diffs and error texts folded per model; never longer than `limit`. Every value from the
    repository is escaped for where it lands (reconciler.report.escape), and no inline value is
    longer than escape.MAX_INLINE characters.

    To fit, folded diffs and error texts go first, largest first (the note names them); then table
    rows from the end of each table, the least important environment first: moves, policy and
    metrics first, the model rows next, the list of changed objects last. A table that loses rows says so in its place, the objects table with
    how many objects of each action it does not list; the note says where the full plan is.
    """
    base, head = short_revision(plan.base), short_revision(plan.head)
    top = [MARKDOWN_COMMENT_MARKER, f"### Reconciler plan {esc.code(base)} → {esc.code(head)}", ""]
    if not plan.ok:
        top += ["> [!CAUTION]", "> Some models or environments have errors or exceed a budget: they will not be applied "
                "(what runs now stays as it is).", ""]
    if plan.warnings:
        top += ["> [!WARNING]", *(f"> {esc.plain(line)}<br>" for w in plan.warnings for line in w.splitlines()), ""]
    top += _summary_block(plan, base, head)
    blocks = [_Block(top)]
    for i, env in enumerate(by_importance(plan), 1):
        blocks += _environment_blocks(i, env, base, head, max_diff_lines)
    return _fit(blocks, limit, full_plan)


def _fit(blocks: list[_Block], limit: int, full_plan: str) -> str:
    """The blocks as one comment of at most `limit` characters (see plan_markdown)."""
    lengths = [len(b.text) for b in blocks]

    def size(note: str) -> int:
        return sum(lengths) + len(lengths) - 1 + (len(note) + 1 if note else 0) + 1

    def render(note: str) -> str:
        return "\n".join(b.text for b in blocks) + ("\n" + note if note else "") + "\n"

    if size("") <= limit:
        return render("")
    dropped: list[str] = []
    note = _cut_note(dropped, 0, full_plan)
    for i in sorted((i for i, b in enumerate(blocks) if b.detail), key=lambda i: lengths[i], reverse=True):
        if size(note) <= limit:
            break
        dropped.append(blocks[i].detail or "")
        lengths[i] = -1  # gone with its newline
        note = _cut_note(dropped, 0, full_plan)
    blocks[:] = [b for b, n in zip(blocks, lengths) if n >= 0]
    lengths = [n for n in lengths if n >= 0]
    cut_rows = 0
    for rank in (1, 2, 3):
        # the least important environment's tables first (blocks run from the most important down)
        for i in reversed([i for i, b in enumerate(blocks) if b.rank == rank]):
            block = blocks[i]
            while size(note) > limit and (block.keep < 0 or block.keep > 0):
                keep = len(block.rows) if block.keep < 0 else block.keep
                excess = size(note) - limit + 400  # room for the line saying so and the note's growth
                removed = 0
                while keep > 0 and removed < excess:  # by characters: every pass removes at least one row
                    keep -= 1
                    removed += len(block.rows[keep]) + 1
                cut_rows += (len(block.rows) if block.keep < 0 else block.keep) - keep
                block.keep = keep
                lengths[i] = len(block.text)
                note = _cut_note(dropped, cut_rows, full_plan)
    while size(note) > limit and len(blocks) > 1:  # headings alone too long (thousands of environments)
        blocks.pop()
        lengths.pop()
        note = _cut_note(dropped, cut_rows, full_plan) + " The comment ends early: the last environments are not shown."
    return render(note)


def _cut_note(dropped: list[str], cut_rows: int, full_plan: str) -> str:
    parts = []
    if dropped:
        shown = ", ".join(esc.code(d) for d in dropped[:20]) + (f" and {len(dropped) - 20} more" if len(dropped) > 20 else "")
        parts.append(f"{len(dropped)} folded diff(s) or error text(s) left out, largest first: {shown}")
    if cut_rows:
        parts.append(f"{cut_rows} table row(s) cut (each table says what it does not show)")
    return ("> [!NOTE]\n> Shortened to fit GitHub's 65,536-character comment limit: " + ("; ".join(parts) or "nothing cut")
            + f". {full_plan[0].upper()}{full_plan[1:]}.")


def plan_json(plan: Plan) -> str:
    return json.dumps(plan.as_dict(), indent=2, sort_keys=True)
