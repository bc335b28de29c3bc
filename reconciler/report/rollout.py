"""The rollout report: per analysis, the weights, stable and canary metrics, the decision and why.

Renderings of the same rows: ``report_json`` (a dict; the terminal table is reconciler.cli.rollout) and
``write_png`` (matplotlib, Agg backend: p95 latency and error rate over the steps).
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from reconciler.rollout.state import RolloutState
from reconciler.extras import missing_extra


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def report_rows(state: RolloutState) -> list[dict[str, Any]]:
    rows = []
    for record in state.history:
        rows.append({"at": _when(record.at), "revision": record.revision, "decision": record.decision,
                     "step": record.step_index + 1, "stable_weight": record.stable_weight,
                     "canary_weight": record.canary_weight, "achieved_weight": record.achieved_weight,
                     "stable": record.stable, "canary": record.canary, "reasons": list(record.reasons)})
    return rows


def guard_line(state: RolloutState) -> str | None:
    """The last judgement in words (None: no canary under analysis): which test decided, on how many
    canary requests, with what error budget left; or what the rollout waits for."""
    ev = state.evidence
    if not state.phase.active or ev.needed_requests is None:
        return None
    if ev.decided_by:
        return ev.decided_by
    if ev.waiting_for:
        return (f"waiting for {ev.waiting_for} more requests to detect {ev.detect} ({ev.canary_requests} of "
                f"{ev.needed_requests} canary requests, {state.policy.power:.0%} power)")
    return f"the rollout's {ev.canary_requests} canary requests detect {ev.detect} ({state.policy.power:.0%} power)"


def guard_json(state: RolloutState) -> dict[str, Any]:
    ev = state.evidence
    return {"needed_requests": ev.needed_requests, "canary_requests": ev.canary_requests,
            "waiting_for": ev.waiting_for, "detect": ev.detect, "power": state.policy.power,
            "budget_left": ev.budget_left, "alpha": state.policy.alpha, "decided_by": ev.decided_by,
            # promoted before the guard's full sample (waiting_for then stays above 0): every check's upper bound
            # excluded the regression it must catch (judge.py, early acceptance)
            "accepted_early": bool(ev.decided_by and ev.decided_by.startswith("accepted early")),
            "summary": guard_line(state)}


def report_json(state: RolloutState) -> dict[str, Any]:
    return {"model": state.model, "environment": state.environment, "phase": state.phase.value,
            "paused": state.paused, "requested": state.requested, "stable_revision": state.stable_revision,
            "canary_revision": state.canary_revision, "stable_pool": state.stable_pool,
            "canary_pool": state.canary_pool, "canary_weight": state.canary_weight,
            "achieved_weight": state.achieved_weight, "pause_reason": state.pause_reason,
            "inconclusive_checks": state.inconclusive_checks, "inconclusive_limit": state.policy.inconclusive_limit,
            "step": state.step_index + 1, "steps": list(state.policy.steps), "failed_checks": state.failed_checks,
            "failure_threshold": state.policy.failure_threshold, "promotions": state.promotions,
            "outcome": state.outcome, "guard": guard_json(state), "history": report_rows(state)}


DECISION_COLOURS = {"advance": "tab:green", "promoting": "tab:blue", "promote": "tab:blue", "hold": "tab:orange",
                    "inconclusive": "tab:gray", "pause": "tab:purple", "rollback": "tab:red", "start": "black",
                    "restart": "black", "resume": "tab:purple"}


def _short(text: str, width: int = 110) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def write_png(state: RolloutState, path: Path) -> Path:
    """The rollout as a reviewer reads it, on a wall-clock axis: the canary weight (set and achieved) as
    step lines, p95 of both tracks against the SLO / limit, error rate of both against the limit from
    zero, every decision marked where it was taken and numbered, with its reason in words below."""
    try:
        import matplotlib
    except ImportError as exc:

        raise missing_extra(exc) or exc from None
    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    records = [r for r in state.history if r.revision == state.canary_revision] or list(state.history)
    stamps = [datetime.fromtimestamp(r.at, tz=timezone.utc) for r in records]
    times = [float(mdates.date2num(t)) for t in stamps]  # matplotlib's date numbers: a wall-clock axis
    policy = state.policy

    def series(track: str, key: str, scale: float = 1.0) -> list[float]:
        out = []
        for record in records:
            value = (getattr(record, track) or {}).get(key)
            out.append(float("nan") if value is None else value * scale)
        return out

    decisions = [(t, r) for t, r in zip(times, records, strict=True) if r.decision not in ("wait",)]
    notes = [f"{i}. {datetime.fromtimestamp(r.at, tz=timezone.utc):%H:%M:%S} {r.decision} at {r.canary_weight}%: "
             + _short("; ".join(r.reasons)) for i, (_, r) in enumerate(decisions, start=1)]
    waits: dict[int, int] = {}
    for r in records:
        if r.decision == "wait":
            waits[r.canary_weight] = waits.get(r.canary_weight, 0) + 1
    if waits:
        notes.append("waited for the minimum sample (no pass before the step's requests can detect "
                     f"+{policy.detect_error_increase:.0%} errors): "
                     + ", ".join(f"{n} analyses at {w}%" for w, n in sorted(waits.items())))
    fig_height = 7.5 + 0.22 * len(notes)
    fig = plt.figure(figsize=(11, fig_height))
    top = 1 - 0.9 / fig_height
    bottom = (0.35 + 0.22 * len(notes)) / fig_height + 0.05
    grid = fig.add_gridspec(3, 1, height_ratios=[1, 1.2, 1.2], top=top, bottom=bottom, hspace=0.12)
    weight_ax = fig.add_subplot(grid[0])
    lat = fig.add_subplot(grid[1], sharex=weight_ax)
    err = fig.add_subplot(grid[2], sharex=weight_ax)

    weight_ax.step(times, [r.canary_weight for r in records], where="post", color="tab:green", linewidth=2,
                   label="canary weight set (%)")
    achieved = [float("nan") if r.achieved_weight is None else r.achieved_weight for r in records]
    if any(a == a for a in achieved):  # not all NaN
        # measured over the interval that ends at the analysis: drawn backwards from it
        weight_ax.step(times, achieved, where="pre", color="tab:olive", linestyle="--",
                       label="achieved over the interval (%)")
    # analyses that waited for the minimum-sample guard (nothing wrong yet, not enough requests to pass):
    # shaded over the interval each one measured, so the reviewer sees how long each step gathered evidence
    waited = False
    for t, record in zip(times, records, strict=True):
        if record.decision == "wait":
            span = policy.interval_seconds / 86400.0  # matplotlib date numbers are days
            weight_ax.axvspan(t - span, t, color="tab:gray", alpha=0.15, linewidth=0,
                              label=None if waited else "waiting for the minimum sample")
            waited = True
    weight_ax.set_ylim(-5, 110)
    weight_ax.set_ylabel("canary weight (%)")
    for i, (t, record) in enumerate(decisions, start=1):
        colour = DECISION_COLOURS.get(record.decision, "black")
        for ax in (weight_ax, lat, err):
            ax.axvline(t, color=colour, alpha=0.25, linewidth=1)
        weight_ax.annotate(str(i), (t, 104), ha="center", va="center", fontsize=8, color="white",
                           bbox={"boxstyle": "circle,pad=0.2", "fc": colour, "ec": "none"})
    weight_ax.legend(loc="center left", fontsize=8)

    lat.plot(times, series("stable", "p95_ms"), marker="o", label="stable p95")
    lat.plot(times, series("canary", "p95_ms"), marker="o", label="canary p95")
    slo = policy.slo_p95_latency_ms or policy.max_p95_latency_ms
    if slo:
        lat.axhline(slo, linestyle="--", color="tab:red", label=f"SLO p95 {slo:.0f} ms")
    lat.set_ylim(bottom=0)
    lat.set_ylabel("p95 latency (ms)")
    lat.legend(loc="upper left", fontsize=8)

    err.plot(times, series("stable", "error_rate", 100), marker="o", label="stable")
    err.plot(times, series("canary", "error_rate", 100), marker="o", label="canary")
    limit = policy.slo_error_rate if state.cross_pool and policy.slo_error_rate is not None else policy.max_error_rate
    err.axhline(limit * 100, linestyle="--", color="tab:red", label=f"limit {limit:.2%}")
    err.set_ylim(bottom=0)
    err.set_ylabel("error rate (%)")
    err.set_xlabel("time (UTC)")
    err.legend(loc="upper left", fontsize=8)
    err.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M"))
    for ax in (weight_ax, lat):
        ax.tick_params(labelbottom=False)

    old_rev, old_pool = state.stable_revision, state.stable_pool
    if state.phase.value == "promoted":
        old_rev, old_pool = state.replaced_revision, state.replaced_pool
    pools = f" ({old_pool} -> {state.canary_pool})" if old_pool and state.canary_pool and old_pool != state.canary_pool \
        else ""
    outcome = state.phase.value.replace("_", " ") + (f" (paused: {state.pause_reason})" if state.paused else "")
    fig.suptitle(f"{state.model} in {state.environment}: {old_rev or '-'} -> {state.canary_revision or '-'}{pools}: "
                 f"{outcome}", fontsize=12)
    fig.text(0.01, (0.15 + 0.22 * len(notes)) / fig_height, "\n".join(notes), fontsize=7.5, va="top",
             family="monospace")
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
