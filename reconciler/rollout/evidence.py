"""Evidence: one analysed window added to a rollout's running totals (pure).

The judge (judge.py) tests totals, never a single window; this module keeps them: requests, errors and
latency-bucket counts of the canary, of stable beside it, and of stable alone (the reference), plus the
per-window rows the dispersion estimate reads (stats.dispersion). Split from judge.py by verb: this
adds up, the judge decides.
"""

from __future__ import annotations

import math
from dataclasses import replace

from reconciler.rollout import stats
from reconciler.rollout.metrics import VersionMetrics
from reconciler.rollout.state import MAX_WINDOWS, Evidence

def _slow_counts(buckets: tuple[tuple[float, float], ...], bounds: tuple[float, ...]) -> list[float] | None:
    """Requests slower than each bound (exact at the histogram's own boundaries), or None when absent."""
    if not buckets or not bounds:
        return None
    out = []
    for b in bounds:
        got = stats.share_above(buckets, b)
        if got is None:
            return None
        out.append(got[0])
    return out


def accumulate(evidence: Evidence, stable: VersionMetrics | None, canary: VersionMetrics | None,
               min_requests: int = 0) -> Evidence:
    """The evidence after one more analysed window (pure). ``canary`` None: a window of stable alone
    (before the canary gets traffic). Stable's last measurement with enough traffic becomes the baseline."""
    c_req = canary.request_count if canary is not None and canary.has_data else 0
    s_req = stable.request_count if stable is not None and stable.has_data else 0
    if not c_req and not s_req:
        return evidence
    baseline = evidence.baseline
    if stable is not None and s_req >= max(min_requests, 1):
        baseline = stable.as_dict()
    c_err = canary.error_count if c_req and canary else 0
    s_err = stable.error_count if s_req and stable else 0
    c_buckets = canary.latency_buckets if c_req and canary else ()
    s_buckets = stable.latency_buckets if s_req and stable else ()
    layout = tuple(le for le, _ in (s_buckets or c_buckets) if math.isfinite(le))
    bounds, windows = evidence.window_bounds, evidence.windows
    if layout and layout != bounds:  # the first histogram, or the service's buckets changed: windows restart
        bounds, windows = layout, ()
    c_slow = _slow_counts(c_buckets, bounds) if c_req else [0.0] * len(bounds)
    s_slow = _slow_counts(s_buckets, bounds) if s_req else [0.0] * len(bounds)
    row = (float(canary.requests or 0) if c_req and canary else 0.0, float(c_err),
           float(stable.requests or 0) if s_req and stable else 0.0, float(s_err),
           *(c_slow or [math.nan] * len(bounds)), *(s_slow or [math.nan] * len(bounds)))
    windows = (*windows, row)[-MAX_WINDOWS:]
    return replace(evidence,
                   canary_requests=evidence.canary_requests + c_req,
                   canary_errors=evidence.canary_errors + c_err,
                   step_requests=evidence.step_requests + c_req,
                   stable_requests=evidence.stable_requests + (s_req if c_req else 0),
                   stable_errors=evidence.stable_errors + (s_err if c_req else 0),
                   canary_buckets=stats.add_buckets(evidence.canary_buckets, c_buckets),
                   stable_buckets=stats.add_buckets(evidence.stable_buckets, s_buckets if c_req else ()),
                   reference_requests=evidence.reference_requests + s_req,
                   reference_errors=evidence.reference_errors + s_err,
                   reference_buckets=stats.add_buckets(evidence.reference_buckets, s_buckets),
                   intervals=evidence.intervals + (1 if c_req else 0), baseline=baseline,
                   windows=windows, window_bounds=bounds)
