"""Plans as text a reviewer reads: markdown for a PR comment, JSON for tools (the terminal view is reconciler.cli.plan)."""

from __future__ import annotations

import json


from reconciler.plan.changes import Plan

MARKDOWN_COMMENT_MARKER = "<!-- reconciler-plan -->"


def short_revision(rev: str) -> str:
    return rev if rev == "worktree" else rev[:12]


def plan_markdown(plan: Plan, *, max_diff_lines: int = 400) -> str:
    """A PR comment: one section per environment, a table of models, diffs folded in <details>."""
    lines = [MARKDOWN_COMMENT_MARKER, f"### Reconciler plan `{short_revision(plan.base)}` → `{short_revision(plan.head)}`", ""]
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
