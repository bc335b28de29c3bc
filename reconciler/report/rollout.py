"""The rollout report: per analysis, the weights, stable and canary metrics, the decision and why.

Renderings of the same rows: ``report_json`` (a dict; the terminal table is reconciler.cli.rollout) and
``write_png`` (matplotlib, Agg backend: p95 latency and error rate over the steps).
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from reconciler.rollout.state import RolloutState


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def report_rows(state: RolloutState) -> list[dict[str, Any]]:
    rows = []
    for record in state.history:
        rows.append({"at": _when(record.at), "revision": record.revision, "decision": record.decision,
                     "step": record.step_index + 1, "stable_weight": record.stable_weight,
                     "canary_weight": record.canary_weight, "stable": record.stable, "canary": record.canary,
                     "reasons": list(record.reasons)})
    return rows


def report_json(state: RolloutState) -> dict[str, Any]:
    return {"model": state.model, "environment": state.environment, "phase": state.phase.value,
            "paused": state.paused, "requested": state.requested, "stable_revision": state.stable_revision,
            "canary_revision": state.canary_revision, "stable_pool": state.stable_pool,
            "canary_pool": state.canary_pool, "canary_weight": state.canary_weight,
            "step": state.step_index + 1, "steps": list(state.policy.steps), "failed_checks": state.failed_checks,
            "failure_threshold": state.policy.failure_threshold, "promotions": state.promotions,
            "outcome": state.outcome, "history": report_rows(state)}


def write_png(state: RolloutState, path: Path) -> Path:
    """Chart p95 latency and error rate of stable and canary, and the canary weight, per analysis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report_rows(state) if r["stable"] or r["canary"]]
    xs = list(range(1, len(rows) + 1))

    def series(track: str, key: str, scale: float = 1.0) -> list[float]:
        out = []
        for row in rows:
            value = (row[track] or {}).get(key)
            out.append(float("nan") if value is None else value * scale)
        return out

    fig, (lat, err) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    lat.plot(xs, series("stable", "p95_ms"), marker="o", label="stable p95")
    lat.plot(xs, series("canary", "p95_ms"), marker="o", label="canary p95")
    if state.policy.max_p95_latency_ms or state.policy.slo_p95_latency_ms:
        lat.axhline(state.policy.slo_p95_latency_ms or state.policy.max_p95_latency_ms, linestyle="--",
                    color="grey", label="limit")
    lat.set_ylabel("p95 latency (ms)")
    lat.legend(loc="upper left")
    weight_axis = lat.twinx()
    weight_axis.step(xs, [r["canary_weight"] for r in rows], where="post", color="green", alpha=0.3)
    weight_axis.set_ylabel("canary weight (%)")
    weight_axis.set_ylim(0, 105)
    err.plot(xs, series("stable", "error_rate", 100), marker="o", label="stable")
    err.plot(xs, series("canary", "error_rate", 100), marker="o", label="canary")
    err.set_ylabel("error rate (%)")
    err.set_xlabel("analysis")
    err.legend(loc="upper left")
    for x, row in zip(xs, rows, strict=True):
        err.annotate(row["decision"], (x, 0), textcoords="offset points", xytext=(0, -28), ha="center", fontsize=7)
    fig.suptitle(f"{state.model} in {state.environment}: {state.phase.value}")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
