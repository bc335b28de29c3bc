"""Verdicts: what one analysis says about the canary. Pure functions of policy and evidence.

Four outcomes, as Argo Rollouts' AnalysisRun: ``passed`` (nothing wrong), ``failed``, ``inconclusive``
(not enough to decide: no canary traffic, nothing to compare with) and ``error`` (a measurement error:
Prometheus could not be asked; see machine.py). A pass says nothing is wrong so far; whether the
rollout may go on to its next weight or be promoted is the machine's call, from ``Verdict.enough``.

How a canary is judged (issue 21), in the units Prometheus is exact in:

- **Counts, over the whole rollout.** Every analysis adds one window of counts (``evidence.accumulate``): the
  canary's and stable's requests, errors and latency bucket increases. Each check tests the running
  totals of the rollout; none tests an interpolated quantile.
- **Latency as a share of slow requests at a bucket boundary.** "p95 vs stable": the canary's share of
  requests slower than a bucket boundary near stable's p95 against stable's share (exact counts at the
  boundary). "p99 vs stable" likewise where the policy asks for it (``quantiles``). "p95 vs limit" /
  "p95 vs SLO": the canary's share slower than the threshold against the 5 % a p95 allows. A threshold
  that is not a bucket boundary is a plan error (buckets.py); if the metrics still lack it, the check
  counts at the next boundary above it, which can only miss a breach, never invent one.
- **Errors**: "errors vs stable" (the conditional test of two rates) and "errors vs limit" (the policy's
  maxErrorRate, or the SLO's error rate across pools).
- **Variance from the data.** Errors and slow requests come in bursts; each test divides the counts by
  a quasi-binomial dispersion phi estimated across the rollout's windows (``stats.dispersion``), as
  Kayenta uses windows, so a bursty healthy canary is not rolled back.
- **One error budget.** The policy's ``alpha`` is the chance of rolling back a healthy canary over the
  whole rollout. It is split evenly over the checks, and each check spends its share over the looks
  with an O'Brien-Fleming alpha-spending function of the information time (the canary's requests over
  the sample the guard sizes for). A look fails a check only when its p-value is below the alpha this
  look newly spends; the union bound over looks and checks keeps the total within ``alpha``. A second
  look confirming a failure (``failureThreshold`` 2) is held to the alpha spent so far: it cannot add
  false rollbacks, since the first failure already paid for them.
- **Effect-size gates** (as Kayenta's): a significant difference fails only when it is also larger than
  the tolerance (``errorRateTolerance``; for slow shares 1 + 2.5 x ``latencyTolerance``).
- **The guard** (guard.py) sizes the canary requests the rollout needs so that a regression of the
  sized effect (2x errors, +30 % latency) is caught with ``power``; ``Verdict.enough`` says whether the
  totals have it.

``mann-whitney`` is accepted as a judge name and decides as ``threshold`` does: the per-window p95s it
ranked were interpolated quantiles (the issue's first complaint); Kayenta's idea of windows lives on in
the dispersion estimate. ``mann_whitney_worse`` stays for callers of the function.

Across pools (GPU -> Inferentia): latency against the SLO only, errors compared as above, and cost per
1,000 inferences at equal load: cheaper passes; dearer but within the SLO follows ``cost_policy``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from enum import Enum

from reconciler.extras import missing_extra
from reconciler.rollout import stats
from reconciler.rollout.guard import Guard, choose_boundary, guard, latency_windows
from reconciler.rollout.metrics import VersionMetrics
from reconciler.rollout.evidence import accumulate
from reconciler.rollout.state import Evidence, Policy

MIN_WINDOWS = 4      # kept for importers
TAIL_SHARE = 0.05    # the share of requests a p95 leaves above itself
SLOW_GATE = 2.5      # a slow share fails only above stable's x (1 + SLOW_GATE x latencyTolerance)
HOLD_LEVEL = 0.01    # below the next weight: a check this suspicious (p < HOLD_LEVEL, beyond its tolerance) holds it


class Outcome(str, Enum):
    passed = "passed"
    failed = "failed"
    inconclusive = "inconclusive"
    error = "error"


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    reasons: tuple[str, ...]
    needs_confirmation: bool = False  # passed, but a person must confirm (cost policy "confirm")
    pvalues: dict[str, float] = field(default_factory=dict)
    waiting: bool = False              # passed, but the rollout lacks the guard's requests (kept for readers)
    needed_requests: int | None = None  # the guard: canary requests the rollout needs ...
    detect: str | None = None           # ... to detect this ("+100 % errors, +30 % p95")
    enough: bool = False                # the canary's requests reach the guard's figure
    decided_by: str | None = None       # which test decided, on how many requests (in words)
    evidence: Evidence | None = None    # the evidence with this look's spending recorded
    budget_left: float | None = None    # of policy.alpha, after this look
    suspicious: str | None = None       # passed, but a check looks worse (p < HOLD_LEVEL): do not add weight yet

    @property
    def passed(self) -> bool:
        return self.outcome is Outcome.passed

    @property
    def failed(self) -> bool:
        return self.outcome is Outcome.failed

    @property
    def inconclusive(self) -> bool:
        return self.outcome in (Outcome.inconclusive, Outcome.error)

    @property
    def no_data(self) -> bool:  # the name earlier callers used
        return self.inconclusive


# --------------------------------------------------------------------------- the checks


def check_names(policy: Policy, cross_pool: bool) -> tuple[str, ...]:
    """The checks of a rollout, fixed by its policy (the error budget is split over them)."""
    names = ["errors vs stable", "errors vs " + ("SLO" if cross_pool and policy.slo_error_rate is not None
                                                 else "limit")]
    if cross_pool:
        names.append("p95 vs SLO")
    else:
        names += [f"{_qname(q)} vs stable" for q in policy.quantiles]
        if policy.max_p95_latency_ms is not None:
            names.append("p95 vs limit")
    return tuple(names)


def _qname(q: float) -> str:
    return f"p{q * 100:g}"


@dataclass
class _Check:
    name: str
    pvalue: float
    gate: bool          # the effect is beyond the tolerance
    text: str           # the figures, in words
    requests: int       # canary requests it was computed on
    level: float = 0.0
    failed: bool = False


def judge(policy: Policy, stable: VersionMetrics | None, canary: VersionMetrics | None, *,
          evidence: Evidence | None = None, cross_pool: bool = False, canary_weight: int = 0,
          confirming: bool = False) -> Verdict:
    """The verdict of one look. ``evidence`` already includes this window (see ``accumulate``); without
    it, this window alone is the evidence. ``confirming``: an earlier look failed and this one may
    confirm it (held to the alpha spent so far instead of this look's increment)."""
    if canary is None or not canary.has_data:
        missing = ", ".join(canary.missing()) if canary is not None else "all metrics"
        return Verdict(Outcome.inconclusive, (f"no data for the canary ({missing}): inconclusive, "
                                              "never promoted on missing data",))
    if evidence is None:
        evidence = accumulate(Evidence(), stable, canary, policy.min_requests)
    names = check_names(policy, cross_pool)
    share = policy.alpha / len(names)
    size = guard(policy, evidence, cross_pool=cross_pool, canary_weight=canary_weight, check_alpha=share)
    checks: list[_Check] = []
    open_questions: list[str] = []
    passes: list[str] = []
    _error_checks(policy, evidence, cross_pool, size, checks, open_questions)
    boundaries = dict(evidence.boundaries)
    if cross_pool:
        _limit_latency(policy, evidence, "p95 vs SLO", policy.slo_p95_latency_ms or policy.max_p95_latency_ms,
                       size, checks, open_questions, passes, canary)
    else:
        reference = _reference(policy, stable, evidence)
        for q in policy.quantiles:
            _relative_latency(policy, evidence, q, size, boundaries, checks, open_questions, passes, canary, reference)
        if policy.max_p95_latency_ms is not None:
            _limit_latency(policy, evidence, "p95 vs limit", policy.max_p95_latency_ms, size, checks, open_questions,
                           passes, canary)

    # the spending rule: the information time is the canary's share of the sample the rollout will have
    # judged by its end: the guard's figure, or more where the remaining steps bring more (one interval
    # each at its weight), so a regression that starts at a later step still finds alpha to spend
    horizon = max(size.needed, evidence.canary_requests + _projected(policy, canary, canary_weight))
    t = evidence.canary_requests / horizon if horizon else 0.0
    spent = dict(evidence.spent)
    for c in checks:
        total = stats.spent_by(t, share)
        increment = max(total - spent.get(c.name, 0.0), 0.0)
        c.level = total if confirming else increment
        c.failed = c.pvalue < c.level and c.gate
        spent[c.name] = max(spent.get(c.name, 0.0), total)
    budget_left = max(policy.alpha - sum(spent.get(n, 0.0) for n in names), 0.0)
    budget_left = 0.0 if budget_left < policy.alpha * 1e-9 else budget_left
    pvalues = {c.name: c.pvalue for c in checks}
    evidence = replace(evidence, spent=tuple(sorted(spent.items())), boundaries=tuple(sorted(boundaries.items())),
                       needed_requests=size.needed, detect=size.detect, budget_left=budget_left)

    needs_confirmation = False
    failures = [c for c in checks if c.failed]
    if cross_pool and not failures:
        cost_failures: list[str] = []
        needs_confirmation = _cost(policy, stable, canary, _reference(policy, stable, evidence), cost_failures,
                                   passes, open_questions)
        if cost_failures:
            return _verdict(Outcome.failed, cost_failures + [_line(c) for c in checks], size, evidence, budget_left,
                            pvalues, decided_by=f"cost per 1,000 inferences (cost policy {policy.cost_policy})",
                            t=t)
    budget = (f"error budget left {budget_left:.2g} of alpha {policy.alpha:g} ({len(names)} checks, "
              f"spending at {min(t, 1.0):.0%} of the {horizon} requests the rollout plans to judge)")
    if failures:
        worst = min(failures, key=lambda c: c.pvalue / max(c.level, 1e-300))
        decided = (f"{worst.name} on {worst.requests} canary requests (p={worst.pvalue:.2g} < "
                   f"{worst.level:.2g}{' (confirming)' if confirming else ''}); {budget}")
        return _verdict(Outcome.failed, [f"decided by {decided}"] + [f"FAILED {_line(c)}" for c in failures] +
                        [_line(c) for c in checks if not c.failed] + [budget], size, evidence, budget_left, pvalues,
                        decided_by=decided, t=t)
    if open_questions or size.unknown:
        questions = (*open_questions, *((size.unknown,) if size.unknown else ()))
        return _verdict(Outcome.inconclusive, [q + ": inconclusive" for q in questions] + [_line(c) for c in checks],
                        size, evidence, budget_left, pvalues, decided_by="; ".join(questions), t=t)
    have = evidence.canary_requests
    enough = have >= size.needed
    if enough:
        decided = (f"all {len(checks)} checks within their levels on {have} canary requests, enough to detect "
                   f"{size.detect} with {policy.power:.0%} power; {budget}")
    else:
        decided = (f"no check failed on {have} canary requests; {size.needed - have} more needed to detect "
                   f"{size.detect} with {policy.power:.0%} power ({have} of {size.needed}"
                   + "".join(f"; {n}" for n in size.notes) + f"); {budget}")
    odd = [c for c in checks if c.gate and c.pvalue < HOLD_LEVEL]
    suspicious = "; ".join(f"{c.name} looks worse (p={c.pvalue:.2g} < {HOLD_LEVEL:g}, not yet beyond the budget's "
                           f"{c.level:.2g})" for c in odd) or None
    verdict = _verdict(Outcome.passed, [decided, *(_line(c) for c in checks), *passes], size, evidence, budget_left,
                       pvalues, decided_by=decided, enough=enough, needs_confirmation=needs_confirmation, t=t)
    return replace(verdict, suspicious=suspicious)


def _projected(policy: Policy, canary: VersionMetrics, weight: int) -> int:
    """Canary requests the steps after the current one bring, one interval each, at this look's rate."""
    if weight <= 0:
        return 0
    later = [w for w in policy.steps if w > weight]
    return int(canary.request_count * sum(later) / weight)


def _verdict(outcome: Outcome, reasons: list[str], size: Guard, evidence: Evidence, budget_left: float,
             pvalues: dict[str, float], *, decided_by: str, t: float, enough: bool = False,
             needs_confirmation: bool = False) -> Verdict:
    evidence = replace(evidence, decided_by=decided_by)
    return Verdict(outcome, tuple(reasons), needs_confirmation, pvalues, waiting=outcome is Outcome.passed and not enough,
                   needed_requests=size.needed, detect=size.detect, enough=enough, decided_by=decided_by,
                   evidence=evidence, budget_left=budget_left)


def _line(c: _Check) -> str:
    verdict = "fails" if c.failed else "within"
    return f"{c.name}: {c.text}; p={c.pvalue:.2g}, level {c.level:.2g} at this look: {verdict}"


def _error_checks(policy: Policy, ev: Evidence, cross_pool: bool, size: Guard, checks: list[_Check],
                  open_questions: list[str]) -> None:
    kc, nc = ev.canary_errors, ev.canary_requests
    ks, ns = ev.reference_errors, ev.reference_requests
    phi = size.phi_errors
    c_rate = kc / nc if nc else 0.0
    if ns <= 0:
        open_questions.append("stable has served no requests in this revision: no error rate to compare with")
    else:
        s_rate = ks / ns
        ratio = 1.0 + policy.error_rate_tolerance
        p = stats.quasi_rate_pvalue(kc, nc, ks, ns, phi)
        checks.append(_Check("errors vs stable", p, c_rate > s_rate * ratio,
                             f"canary {c_rate:.3%} ({kc}/{nc}) vs stable {s_rate:.3%} ({ks}/{ns}), dispersion "
                             f"{phi:.2g}, tolerance {ratio:.2f}x", nc))
    slo = cross_pool and policy.slo_error_rate is not None
    limit = policy.slo_error_rate if slo and policy.slo_error_rate is not None else policy.max_error_rate
    name = "errors vs " + ("SLO" if slo else "limit")
    p = stats.quasi_share_pvalue(kc, nc, limit, phi) if limit > 0 else (0.0 if kc > 0 else 1.0)
    checks.append(_Check(name, p, c_rate > limit, f"canary {c_rate:.3%} ({kc}/{nc}) vs {limit:.3%}", nc))


def _relative_latency(policy: Policy, ev: Evidence, q: float, size: Guard, boundaries: dict[str, float],
                      checks: list[_Check], open_questions: list[str], passes: list[str],
                      canary: VersionMetrics, reference: VersionMetrics | None) -> None:
    name = f"{_qname(q)} vs stable"
    if not ev.reference_buckets or not ev.canary_buckets:
        _no_histogram(policy, name, canary, reference, q, None, passes, open_questions)
        return
    bound = boundaries.get(name)
    if bound is None:
        bound = choose_boundary(ev.reference_buckets, q, policy.detect_latency_increase)
        if bound is None:
            open_questions.append(f"{name}: stable's histogram has no bucket boundary near its {_qname(q)}")
            return
        boundaries[name] = bound
    c = stats.share_above(ev.canary_buckets, bound)
    s = stats.share_above(ev.reference_buckets, bound)
    if c is None or s is None or c[1] <= 0 or s[1] <= 0:
        open_questions.append(f"{name}: {bound * 1000:g} ms is no longer a bucket boundary of the metrics")
        return
    phi = stats.dispersion(latency_windows(ev, bound))[0]
    c_share, s_share = c[0] / c[1], s[0] / s[1]
    p = stats.quasi_rate_pvalue(c[0], c[1], s[0], s[1], phi)
    gate = c_share > s_share * (1 + SLOW_GATE * policy.latency_tolerance)
    checks.append(_Check(name, p, gate, f"canary {c_share:.2%} of {c[1]:.0f} requests slower than {bound * 1000:g} ms "
                                        f"vs stable {s_share:.2%} of {s[1]:.0f} (exact at a bucket boundary), "
                                        f"dispersion {phi:.2g}", int(c[1])))


def _limit_latency(policy: Policy, ev: Evidence, name: str, threshold_ms: float | None, size: Guard,
                   checks: list[_Check], open_questions: list[str], passes: list[str],
                   canary: VersionMetrics) -> None:
    if threshold_ms is None:
        open_questions.append("a cross-pool canary needs a p95 latency SLO (slo.p95LatencyMs) to judge against")
        return
    if not ev.canary_buckets:
        _no_histogram(policy, name, canary, None, 0.95, threshold_ms, passes, open_questions)
        return
    bounds = [le for le, _ in ev.canary_buckets]
    bound = stats.boundary_at_or_above(bounds, threshold_ms / 1000.0)
    if bound is None:
        open_questions.append(f"{name}: the histogram has no bucket boundary at or above {threshold_ms:g} ms")
        return
    got = stats.share_above(ev.canary_buckets, bound)
    if got is None or got[1] <= 0:
        open_questions.append(f"{name}: no canary requests in the histogram")
        return
    slow, total = got
    phi = stats.dispersion(latency_windows(ev, bound, stable=False))[0]
    p = stats.quasi_share_pvalue(slow, total, TAIL_SHARE, phi)
    share = slow / total
    note = "" if math.isclose(bound * 1000.0, threshold_ms, rel_tol=1e-9) else (
        f" (not a bucket boundary: counted at the next one, {bound * 1000:g} ms, which can only miss a breach; "
        "add the threshold to the service's buckets)")
    checks.append(_Check(name, p, share > TAIL_SHARE, f"canary {share:.2%} of {total:.0f} requests slower than "
                                                      f"{threshold_ms:g} ms vs the {TAIL_SHARE:.0%} a p95 allows"
                                                      f"{note}, dispersion {phi:.2g}", int(total)))


def _no_histogram(policy: Policy, name: str, canary: VersionMetrics, reference: VersionMetrics | None, q: float,
                  threshold_ms: float | None, passes: list[str], open_questions: list[str]) -> None:
    """No latency histogram (a custom query without one): nothing to test latency with. A p95 figure
    beyond the bound holds the rollout for a person (inconclusive); within it, the pass says latency
    was not tested."""
    figure = canary.p95_ms if q == 0.95 else None
    if threshold_ms is None and reference is not None and reference.p95_ms and q == 0.95:
        threshold_ms = reference.p95_ms * (1 + policy.latency_tolerance)
    if figure is None or threshold_ms is None:
        open_questions.append(f"{name}: no latency histogram to test with")
    elif figure > threshold_ms:
        open_questions.append(f"{name}: the canary's p95 figure {figure:.0f} ms is above {threshold_ms:.0f} ms, "
                              "and without a latency histogram there is no test to decide it")
    else:
        passes.append(f"{name}: not tested (no latency histogram); the canary's p95 figure {figure:.0f} ms is "
                      f"within {threshold_ms:.0f} ms")


def _reference(policy: Policy, stable: VersionMetrics | None, evidence: Evidence) -> VersionMetrics | None:
    """What the canary's cost is compared with: stable now, else its last measurement."""
    if stable is not None and stable.has_data and stable.request_count >= max(policy.min_requests, 1):
        return stable
    if evidence.baseline:
        return VersionMetrics.from_dict(evidence.baseline)
    return None


def mann_whitney_worse(stable: list[float], canary: list[float]) -> float:
    """One-sided p-value of 'canary samples tend to be larger than stable samples'."""
    try:
        from scipy.stats import mannwhitneyu
    except ImportError as exc:  # core install: say which extra brings scipy
        raise missing_extra(exc) or exc from None

    if not stable or not canary or len(set(stable) | set(canary)) == 1:  # all identical: no evidence
        return 1.0
    result = mannwhitneyu(canary, stable, alternative="greater", method="asymptotic")
    p = float(result.pvalue)
    return 1.0 if math.isnan(p) else p


def _cost(policy: Policy, stable: VersionMetrics | None, canary: VersionMetrics, reference: VersionMetrics | None,
          failures: list[str], passes: list[str], open_questions: list[str]) -> bool:
    """Cost per 1,000 inferences of both pools at the same load; returns "needs a person's confirmation"."""
    old = reference if reference is not None else stable
    load = (canary.requests_per_second or 0.0) + (stable.requests_per_second or 0.0 if stable is not None
                                                  and stable.has_data else 0.0)
    c_cost = canary.cost_at_load(load)
    s_cost = old.cost_at_load(load) if old is not None else None
    if c_cost is None or s_cost is None:
        open_questions.append("cost per 1,000 inferences unknown (need the pools' hourly prices and full-size "
                              "replica counts)")
        return False
    old_pool = old.pool if old is not None else "stable"
    figures = (f"${c_cost:.4f} per 1,000 inferences on {canary.pool} vs ${s_cost:.4f} on {old_pool}, both at "
               f"{load:.1f} req/s with full-size replicas")
    if c_cost < s_cost:
        passes.append(f"canary pool is cheaper: {figures}")
        return False
    if policy.cost_policy == "rollback":
        failures.append(f"canary pool costs more (cost policy: rollback): {figures}")
        return False
    if policy.cost_policy == "promote":
        passes.append(f"canary pool costs more but meets the SLO (cost policy: promote): {figures}")
        return False
    passes.append(f"canary pool costs more but meets the SLO (cost policy: confirm, a person decides): {figures}")
    return True
