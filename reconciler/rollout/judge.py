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
- **Early acceptance** (the other side of a two-sided sequential test, issue 21's "fast when healthy"): at the
  last weight, a look passes the rollout before the guard's full sample when every check's upper bound
  excludes the regression it must catch (2x errors, +30 % latency as a slow share, a limit), each at the
  level ``spending.accept_level`` gives this look out of ``spending.ACCEPT_SHARE`` of the miss budget
  ``1 - power``; the guard sizes the full sample for the rest of that budget, so the power holds.
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
from reconciler.rollout import spending
from reconciler.rollout.spending import check_names
from reconciler.rollout.checks import (Check, error_checks, limit_latency, line, relative_latency)
from reconciler.rollout.guard import Guard, guard
from reconciler.rollout.metrics import VersionMetrics
from reconciler.rollout.evidence import accumulate
from reconciler.rollout.state import Evidence, Policy

MIN_WINDOWS = 4      # kept for importers
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
    accepted: bool = False              # passed early: every check's upper bound excludes its regression to catch
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
    checks: list[Check] = []
    open_questions: list[str] = []
    passes: list[str] = []
    error_checks(policy, evidence, cross_pool, size, checks, open_questions)
    boundaries = dict(evidence.boundaries)
    if cross_pool:
        limit_latency(policy, evidence, "p95 vs SLO", policy.slo_p95_latency_ms or policy.max_p95_latency_ms,
                       size, checks, open_questions, passes, canary)
    else:
        reference = _reference(policy, stable, evidence)
        for q in policy.quantiles:
            relative_latency(policy, evidence, q, size, boundaries, checks, open_questions, passes, canary, reference)
        if policy.max_p95_latency_ms is not None:
            limit_latency(policy, evidence, "p95 vs limit", policy.max_p95_latency_ms, size, checks, open_questions,
                           passes, canary)

    # the spending rule: the information time is the canary's share of the sample the rollout will have
    # judged by its end: the guard's figure, or more where the remaining steps bring more (one interval
    # each at its weight), so a regression that starts at a later step still finds alpha to spend
    horizon = max(size.needed, evidence.canary_requests + _projected(policy, canary, canary_weight))
    t = evidence.canary_requests / horizon if horizon else 0.0
    spent = dict(evidence.spent)
    for c in checks:
        total = spending.spent_by(t, share)
        increment = max(total - spent.get(c.name, 0.0), 0.0)
        c.level = total if confirming else increment
        c.failed = c.pvalue < c.level and c.gate
        spent[c.name] = max(spent.get(c.name, 0.0), total)
    # the acceptance side (a two-sided sequential test): at the last weight, where it can promote, a check is
    # accepted when its upper confidence bound excludes the regression it must catch, at the share of the miss
    # budget (1 - power) this look spends (half of what is left: beta/2, beta/4, ...); each check has its own (a
    # regression fails the checks it touches, and promotion needs every check accepted)
    accept_spent = dict(evidence.accept_spent)
    if canary_weight >= policy.steps[-1]:
        beta = (1.0 - policy.power) * spending.ACCEPT_SHARE
        for c in checks:
            c.accept_level = spending.accept_level(accept_spent.get(c.name, 0.0), beta)
            c.accepted = c.accept_p < c.accept_level and not c.failed
            accept_spent[c.name] = accept_spent.get(c.name, 0.0) + c.accept_level
    budget_left = max(policy.alpha - sum(spent.get(n, 0.0) for n in names), 0.0)
    budget_left = 0.0 if budget_left < policy.alpha * 1e-9 else budget_left
    pvalues = {c.name: c.pvalue for c in checks}
    evidence = replace(evidence, spent=tuple(sorted(spent.items())), boundaries=tuple(sorted(boundaries.items())),
                       needed_requests=size.needed, detect=size.detect, budget_left=budget_left,
                       accept_spent=tuple(sorted(accept_spent.items())))

    needs_confirmation = False
    failures = [c for c in checks if c.failed]
    if cross_pool and not failures:
        cost_failures: list[str] = []
        needs_confirmation = _cost(policy, stable, canary, _reference(policy, stable, evidence), cost_failures,
                                   passes, open_questions)
        if cost_failures:
            return _verdict(Outcome.failed, cost_failures + [line(c) for c in checks], size, evidence, budget_left,
                            pvalues, decided_by=f"cost per 1,000 inferences (cost policy {policy.cost_policy})",
                            t=t)
    budget = (f"error budget left {budget_left:.2g} of alpha {policy.alpha:g} ({len(names)} checks, "
              f"spending at {min(t, 1.0):.0%} of the {horizon} requests the rollout plans to judge)")
    if failures:
        worst = min(failures, key=lambda c: c.pvalue / max(c.level, 1e-300))
        decided = (f"{worst.name} on {worst.requests} canary requests (p={worst.pvalue:.2g} < "
                   f"{worst.level:.2g}{' (confirming)' if confirming else ''}); {budget}")
        return _verdict(Outcome.failed, [f"decided by {decided}"] + [f"FAILED {line(c)}" for c in failures] +
                        [line(c) for c in checks if not c.failed] + [budget], size, evidence, budget_left, pvalues,
                        decided_by=decided, t=t)
    if open_questions or size.unknown:
        questions = (*open_questions, *((size.unknown,) if size.unknown else ()))
        return _verdict(Outcome.inconclusive, [q + ": inconclusive" for q in questions] + [line(c) for c in checks],
                        size, evidence, budget_left, pvalues, decided_by="; ".join(questions), t=t)
    have = evidence.canary_requests
    enough = have >= size.needed
    accepted = not enough and bool(checks) and all(c.accepted for c in checks)
    if accepted:
        decided = (f"accepted early on {have} canary requests (of the {size.needed} the guard sizes for): every "
                   "check's upper bound excludes the regression it must catch ("
                   + "; ".join(f"{c.name}: {c.target} excluded, p={c.accept_p:.2g} < {c.accept_level:.2g}"
                               for c in checks) + f"); {budget}")
    elif enough:
        decided = (f"all {len(checks)} checks within their levels on {have} canary requests, enough to detect "
                   f"{size.detect} with {policy.power:.0%} power; {budget}")
    else:
        decided = (f"no check failed on {have} canary requests; {size.needed - have} more needed to detect "
                   f"{size.detect} with {policy.power:.0%} power ({have} of {size.needed}"
                   + "".join(f"; {n}" for n in size.notes) + f"); {budget}")
    odd = [c for c in checks if c.gate and c.pvalue < HOLD_LEVEL]
    suspicious = "; ".join(f"{c.name} looks worse (p={c.pvalue:.2g} < {HOLD_LEVEL:g}, not yet beyond the budget's "
                           f"{c.level:.2g})" for c in odd) or None
    verdict = _verdict(Outcome.passed, [decided, *(line(c) for c in checks), *passes], size, evidence, budget_left,
                       pvalues, decided_by=decided, enough=enough, needs_confirmation=needs_confirmation, t=t)
    return replace(verdict, suspicious=suspicious, accepted=accepted)


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
