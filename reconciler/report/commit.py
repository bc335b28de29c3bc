"""A finished canary's report committed where a reviewer can open it: the environment's rendered
branch (``rendered/<env>``, the branch ``reconciler hydrate --branch-prefix rendered/`` publishes),
under ``reports/<model>/``: the markdown table (``<revision>.md``, the PR comment's text) and the
chart (``<revision>.png``). The PR comment and the commit status link them at the report's commit, so
the link keeps showing that report after later hydrations (which keep ``reports/``).

Why the rendered branch and not a workflow artifact: canaries run in the in-cluster reconciler
(``reconciler run``), not in the main workflow, which only builds and hydrates; the reconciler
already holds a clone of the repository and the remote it fetches from. Artifacts also expire (90
days by default) while the branch keeps every report in git history.

The push uses the clone's remote (``RECONCILER_REPORT_REMOTE``, default ``origin``) with whatever
credentials it fetches with; a push that loses a race with a hydration is fetched and retried once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from reconciler.errors import SourceError
from reconciler.rollout.state import RolloutState
from reconciler.report.markdown import report_markdown
from reconciler.report.rollout import write_png
from reconciler.source.git import branch_worktree, fetch_branch, push_branch

REPORTS = "reports"


@dataclass(frozen=True)
class ReportCommit:
    branch: str
    commit: str | None   # the commit holding the report (None: the same report was there already)
    markdown: str        # path of the markdown in the branch
    chart: str           # path of the PNG in the branch
    pushed: bool


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-._" else "-" for c in text).strip(".") or "x"


def report_paths(state: RolloutState) -> tuple[str, str]:
    """(markdown, chart) paths of a rollout's report in its rendered branch."""
    stem = f"{REPORTS}/{_safe(state.model)}/{_safe((state.canary_revision or 'none')[-24:])}"
    return f"{stem}.md", f"{stem}.png"


def blob_url(repository: str, commit: str, path: str, server: str = "https://github.com", raw: bool = False) -> str:
    """Where GitHub shows ``path`` at ``commit`` (``raw``: the file itself, for an image in a comment)."""
    return f"{server.rstrip('/')}/{repository}/blob/{commit}/{path}" + ("?raw=true" if raw else "")


def commit_report(repo_root: Path, state: RolloutState, *, prefix: str = "rendered/", remote: str | None = "origin",
                  source_commit: str | None = None) -> ReportCommit:
    """Commit the report of ``state`` to ``<prefix><env>`` (keeping everything the branch holds) and push it."""

    branch = f"{prefix}{state.environment}"
    md_path, png_path = report_paths(state)
    for attempt in (1, 2):
        if remote:
            fetch_branch(repo_root, remote, branch)  # the reconciler's clone may never have had it
        with branch_worktree(repo_root, branch, keep=("*",)) as wt:
            folder = wt.path / Path(md_path).parent
            folder.mkdir(parents=True, exist_ok=True)
            (wt.path / md_path).write_text(report_markdown(state, Path(png_path).name), encoding="utf-8")
            write_png(state, wt.path / png_path)
            message = (f"Canary report: {state.model} in {state.environment}: {state.phase.value.replace('_', ' ')}\n\n"
                       + (f"Source-Commit: {source_commit}\n" if source_commit else ""))
            commit = wt.commit(message)
        if not remote or commit is None:
            return ReportCommit(branch, commit, md_path, png_path, False)
        try:
            push_branch(repo_root, remote, branch)
            return ReportCommit(branch, commit, md_path, png_path, True)
        except SourceError:
            if attempt == 2:  # lost a race with a hydration twice: say so
                raise
    raise AssertionError("unreachable")  # pragma: no cover
