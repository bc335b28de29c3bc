"""Verdicts: what one analysis interval says about the canary. Pure functions of policy and metrics.

Three outcomes, as Argo Rollouts' AnalysisRun: ``passed``, ``failed`` and ``inconclusive``.
Inconclusive means "not enough to decide": no data (Prometheus unreachable, NaN), fewer canary
requests than ``policy.min_requests`` in the interval, or nothing to compare with. It never passes
and never counts as a failure; the machine holds the step and, past ``inconclusive_limit``, pauses
or rolls back as the policy says.

The minimum-sample guard is power-based (``guard``): from the effect the policy wants detected
(``detect_error_increase``, default 2x stable's error rate; ``detect_latency_increase``, +30 % p95),
stable's measured error rate and latency histogram, alpha and the target ``power`` (0.95), it computes
the canary requests the step needs (``stats.requests_for_rate_power`` / ``requests_for_tail_power``).
Evidence accumulates over the step's analyses (one non-overlapping interval each). Until the step has
that many canary requests, an analysis that finds nothing wrong is *waiting* (``Verdict.waiting``):
inconclusive, holding the step, but traffic is arriving (at least ``min_requests`` this interval), so
the machine counts it neither against ``inconclusive_limit`` nor as a stall for the progress deadline.
A check may FAIL before the guard is met (a significant result is significant at any sample size,
and alpha is spent per look); it may PASS only once the step has the power. So "the first analysis
with enough traffic" is where the guard first lets a pass through, and a regression of the sized
effect is then caught with the stated power.

Both judges compare the canary with stable, with an effect-size tolerance, and keep the fixed
limits (``maxErrorRate``, ``maxP95LatencyMs``) as a second, absolute check:

- errors, both judges: the step's accumulated counts (``Evidence``; against stable's counts over the
  revision when stable serves nothing in the step), by the conditional binomial test of two Poisson
  rates (``stats.rate_ratio_pvalue``). Fails when the canary is significantly worse (p < alpha / number
  of steps) AND its observed rate is above ``1 + error_rate_tolerance`` times stable's.
- latency, ``threshold``: the step's canary requests slower than stable's p95 x (1 + latency_tolerance),
  from the accumulated duration histograms, by an exact binomial test against the 5 % a p95 allows.
- latency, ``mann-whitney``: Kayenta-style, a one-sided Mann-Whitney U on the p95 of non-overlapping
  sub-windows (so the samples are independent and the p-value means what it says), with the same
  effect-size gate on the medians. With fewer than ``MIN_WINDOWS`` windows it uses the histogram test.
- across pools (GPU -> Inferentia): latency against the SLO only (the pools may differ within it),
  errors compared as above, and cost per 1,000 inferences at equal load (``VersionMetrics.cost_at_load``):
  cheaper passes; costs more but meets the SLO follows ``policy.cost_policy`` (promote / rollback /
  confirm, the default: a person decides).

When stable serves nothing (a 100 % step, or a cross-pool move), the comparison uses the stable's
last measurement with enough traffic, kept in ``Evidence.baseline``: an empty stable is never
"missing data".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from enum import Enum
from statistics import median

from reconciler.extras import missing_extra
from reconciler.rollout import stats
from reconciler.rollout.guard import TAIL_SHARE, guard, stable_counts
from reconciler.rollout.metrics import VersionMetrics
from reconciler.rollout.state import Evidence, Policy

MIN_WINDOWS = 4
# before the step has the guard's sample, a failure needs stronger evidence: the alpha of an early look
# is alpha x (share of the sample)^EARLY_RHO (a spending rule in the O'Brien-Fleming spirit), so the
# repeated looks of a waiting step add little to the false rollbacks, while a gross regression still
# fails before the guard is met
EARLY_RHO = 6.0


class Outcome(str, Enum):
    passed = "passed"
    failed = "failed"
    inconclusive = "inconclusive"


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    reasons: tuple[str, ...]
    needs_confirmation: bool = False  # passed, but a person must confirm (cost policy "confirm")
    pvalues: dict[str, float] = field(default_factory=dict)
    waiting: bool = False              # inconclusive only because the step lacks the guard's requests
    needed_requests: int | None = None  # the guard: canary requests the step needs ...
    detect: str | None = None           # ... to detect this ("+100 % errors, +30 % p95")

    @property
    def passed(self) -> bool:
        return self.outcome is Outcome.passed

    @property
    def failed(self) -> bool:
        return self.outcome is Outcome.failed

    @property
    def inconclusive(self) -> bool:
        return self.outcome is Outcome.inconclusive

    @property
    def no_data(self) -> bool:  # the name earlier callers used
        return self.inconclusive


def accumulate(evidence: Evidence, stable: VersionMetrics | None, canary: VersionMetrics | None,
               min_requests: int) -> Evidence:
    """The evidence after one more analysed interval (pure): the step's counts and histograms grow,
    stable's revision counts too; stable's measurement becomes the baseline when it had enough traffic."""
    c_req = canary.request_count if canary is not None and canary.has_data else 0
    s_req = stable.request_count if stable is not None and stable.has_data else 0
    if not c_req and not s_req:
        return evidence
    baseline = evidence.baseline
    if stable is not None and s_req >= max(min_requests, 1):
        baseline = stable.as_dict()
    s_err = stable.error_count if s_req and stable else 0
    s_buckets = stable.latency_buckets if s_req and stable else ()
    return replace(evidence,
                   canary_requests=evidence.canary_requests + c_req,
                   canary_errors=evidence.canary_errors + (canary.error_count if c_req and canary else 0),
                   stable_requests=evidence.stable_requests + s_req,
                   stable_errors=evidence.stable_errors + s_err,
                   canary_buckets=stats.add_buckets(evidence.canary_buckets,
                                                    canary.latency_buckets if c_req and canary else ()),
                   stable_buckets=stats.add_buckets(evidence.stable_buckets, s_buckets),
                   reference_requests=evidence.reference_requests + s_req,
                   reference_errors=evidence.reference_errors + s_err,
                   reference_buckets=stats.add_buckets(evidence.reference_buckets, s_buckets),
                   intervals=evidence.intervals + 1, baseline=baseline)


def judge(policy: Policy, stable: VersionMetrics | None, canary: VersionMetrics | None, *,
          evidence: Evidence | None = None, cross_pool: bool = False, canary_weight: int = 0) -> Verdict:
    """The verdict of one interval. ``evidence`` already includes this interval (see ``accumulate``);
    without it, this interval's counts alone are the evidence."""
    if canary is None or not canary.has_data:
        missing = ", ".join(canary.missing()) if canary is not None else "all metrics"
        return Verdict(Outcome.inconclusive, (f"no data for the canary ({missing}): inconclusive, "
                                              "never promoted on missing data",))
    if evidence is None:
        evidence = accumulate(Evidence(), stable, canary, policy.min_requests)
    n = canary.request_count
    if n < policy.min_requests:
        return Verdict(Outcome.inconclusive, (f"canary served {n} requests this interval, fewer than the "
                                              f"minimum {policy.min_requests}: inconclusive",))
    reference = _reference(policy, stable, evidence)
    size = guard(policy, evidence, cross_pool=cross_pool, canary_weight=canary_weight, reference=reference)
    failures: list[str] = []
    passes: list[str] = []
    open_questions: list[str] = []
    pvalues: dict[str, float] = {}
    _limits(policy, canary, cross_pool, failures, passes, open_questions)
    _errors(policy, evidence, failures, passes, open_questions, pvalues, share=evidence.canary_requests / size.needed)
    if cross_pool:
        _slo_latency(policy, canary, failures, passes, open_questions)
    elif reference is None:
        open_questions.append("no stable measurement with enough traffic to compare latency with")
    elif policy.judge == "mann-whitney" and len(_finite(canary.latency_samples)) >= MIN_WINDOWS \
            and len(_finite(reference.latency_samples)) >= MIN_WINDOWS:
        _latency_mann_whitney(policy, reference, canary, failures, passes, pvalues)
    else:
        _latency_tail(policy, _step_reference(policy, evidence, reference), _step_canary(canary, evidence),
                      failures, passes, open_questions, pvalues)
    needs_confirmation = False
    if cross_pool and not failures:
        needs_confirmation = _cost(policy, stable, canary, reference, failures, passes, open_questions)
    needed, detect = size.needed, size.detect
    if failures:
        return Verdict(Outcome.failed, (*failures, *passes), pvalues=pvalues, needed_requests=needed, detect=detect)
    if open_questions or size.unknown:
        questions = (*open_questions, *((size.unknown,) if size.unknown else ()))
        return Verdict(Outcome.inconclusive, (*(q + ": inconclusive" for q in questions), *passes),
                       pvalues=pvalues, needed_requests=needed, detect=detect)
    have = evidence.canary_requests
    if have < size.needed:
        more = size.needed - have
        return Verdict(Outcome.inconclusive, (
            f"waiting for {more} more canary requests to detect {size.detect} with {policy.power:.0%} power "
            f"({have} of {size.needed} in this step" + "".join(f"; {n}" for n in size.notes) + ")",
            *passes), pvalues=pvalues, waiting=True, needed_requests=needed, detect=detect)
    return Verdict(Outcome.passed, (f"the step's {have} canary requests detect {size.detect} with "
                                    f"{policy.power:.0%} power", *passes), needs_confirmation, pvalues,
                   needed_requests=needed, detect=detect)


def _step_canary(canary: VersionMetrics, ev: Evidence) -> VersionMetrics:
    """The canary as the step measured it: its accumulated histogram (this interval's without one)."""
    if ev.canary_buckets and canary.latency_buckets:
        q = stats.histogram_quantile(0.95, ev.canary_buckets)
        return replace(canary, latency_buckets=ev.canary_buckets, p95_ms=canary.p95_ms if q is None else q * 1000.0)
    return canary


def _step_reference(policy: Policy, ev: Evidence, reference: VersionMetrics) -> VersionMetrics:
    """Stable's latency over the same step when it served in it, else over the revision so far."""
    if not reference.latency_buckets:
        return reference
    _, _, same_period = stable_counts(policy, ev)
    buckets = ev.stable_buckets if same_period else ev.reference_buckets
    return replace(reference, latency_buckets=buckets) if buckets else reference


def _finite(values: tuple[float, ...]) -> list[float]:
    return [float(v) for v in values if v is not None and not math.isnan(v) and not math.isinf(v)]


def _reference(policy: Policy, stable: VersionMetrics | None, evidence: Evidence) -> VersionMetrics | None:
    """What the canary's latency and cost are compared with: stable now, else its last measurement."""
    if stable is not None and stable.has_data and stable.request_count >= max(policy.min_requests, 1):
        return stable
    if evidence.baseline:
        return VersionMetrics.from_dict(evidence.baseline)
    return None


def _limits(policy: Policy, canary: VersionMetrics, cross_pool: bool, failures: list[str],
            passes: list[str], open_questions: list[str]) -> None:
    """The absolute checks: fixed limits within a pool, the SLO across pools."""
    k, n = canary.error_count, canary.request_count
    err = k / n
    limit = policy.max_error_rate
    if cross_pool and policy.slo_error_rate is not None:
        limit = policy.slo_error_rate
    word = "SLO" if cross_pool and policy.slo_error_rate is not None else "limit"
    # a handful of errors on few requests is not evidence of a breach: above the limit AND significantly so
    p = stats.tail_pvalue(k, n, limit) if limit > 0 else 0.0
    if err > limit and p < policy.alpha:
        failures.append(f"canary error rate {err:.2%} is above the {word} {limit:.2%} ({k} of {n} requests)")
    elif err > limit:
        open_questions.append(f"canary error rate {err:.2%} is above the {word} {limit:.2%} on too few requests to "
                              f"tell ({k} of {n}, p={p:.2g})")
    else:
        passes.append(f"canary error rate {err:.2%} is within the {word} {limit:.2%}")
    p95_limit = policy.max_p95_latency_ms
    if p95_limit is not None and not cross_pool:
        p95 = canary.p95_ms or 0.0
        if p95 > p95_limit:
            failures.append(f"canary p95 {p95:.0f} ms is above the limit {p95_limit:.0f} ms")
        else:
            passes.append(f"canary p95 {p95:.0f} ms is within the limit {p95_limit:.0f} ms")


def _errors(policy: Policy, ev: Evidence, failures: list[str], passes: list[str], open_questions: list[str],
            pvalues: dict[str, float], share: float = 1.0) -> None:
    s_req, s_err, same_period = stable_counts(policy, ev)
    if s_req <= 0:
        open_questions.append("stable has served no requests since the canary started: no error rate to compare")
        return
    c_rate = ev.canary_errors / ev.canary_requests if ev.canary_requests else 0.0
    s_rate = s_err / s_req
    ratio = 1.0 + policy.error_rate_tolerance
    p = stats.rate_ratio_pvalue(ev.canary_errors, ev.canary_requests, s_err, s_req)
    pvalues["errors"] = p
    # every step is looked at on its own counts: spend alpha over the planned steps (Bonferroni), or a
    # rollout with many steps would roll back good canaries more often
    alpha = policy.alpha / max(len(policy.steps), 1)
    if share < 1.0:  # before the guard's sample: a failure needs stronger evidence (alpha spent as share^RHO)
        alpha *= share ** EARLY_RHO
    counts = (f"{ev.canary_errors}/{ev.canary_requests} canary vs {s_err}/{s_req} stable requests "
              + (f"over this step's {ev.intervals} interval(s)" if same_period else "(stable: over the revision so far)"))
    if p < alpha and c_rate > s_rate * ratio:
        failures.append(f"canary error rate {c_rate:.3%} is significantly above stable {s_rate:.3%} "
                        f"({counts}; p={p:.2g} < {alpha:.2g}, beyond {ratio:.2f}x)")
    else:
        passes.append(f"canary error rate {c_rate:.3%} vs stable {s_rate:.3%}: no significant increase "
                      f"({counts}; p={p:.2g})")


def _latency_tail(policy: Policy, reference: VersionMetrics, canary: VersionMetrics, failures: list[str],
                  passes: list[str], open_questions: list[str], pvalues: dict[str, float]) -> None:
    ref_p95 = reference.p95_ms
    if reference.latency_buckets and canary.latency_buckets:  # read both sides through the same histogram lens
        q = stats.histogram_quantile(0.95, reference.latency_buckets)
        ref_p95 = None if q is None else q * 1000.0
    if ref_p95 is None or not math.isfinite(ref_p95) or ref_p95 <= 0:
        open_questions.append("stable p95 unknown: no latency to compare with")
        return
    bound_ms = ref_p95 * (1 + policy.latency_tolerance)
    if not canary.latency_buckets:
        # no histogram (a custom query): compare the p95 figures themselves
        p95 = canary.p95_ms or 0.0
        if p95 > bound_ms:
            failures.append(f"canary p95 {p95:.0f} ms is above stable {ref_p95:.0f} ms + "
                            f"{policy.latency_tolerance:.0%}")
        else:
            passes.append(f"canary p95 {p95:.0f} ms vs stable {ref_p95:.0f} ms: within {policy.latency_tolerance:.0%}")
        return
    slower, total = stats.fraction_above(canary.latency_buckets, bound_ms / 1000.0)
    k, n = int(round(slower)), int(round(total))
    p = stats.tail_pvalue(k, n, TAIL_SHARE)
    pvalues["latency"] = p
    share = k / n if n else 0.0
    if p < policy.alpha:
        failures.append(f"canary p95 {canary.p95_ms or 0:.0f} ms is significantly above stable {ref_p95:.0f} ms: "
                        f"{share:.1%} of {n} canary requests are slower than {bound_ms:.0f} ms (stable p95 + "
                        f"{policy.latency_tolerance:.0%}), more than the {TAIL_SHARE:.0%} a p95 allows (p={p:.2g})")
    else:
        passes.append(f"canary p95 {canary.p95_ms or 0:.0f} ms vs stable {ref_p95:.0f} ms: {share:.1%} of {n} "
                      f"requests slower than {bound_ms:.0f} ms, no significant increase (p={p:.2g})")


def _latency_mann_whitney(policy: Policy, reference: VersionMetrics, canary: VersionMetrics,
                          failures: list[str], passes: list[str], pvalues: dict[str, float]) -> None:
    s_lat, c_lat = _finite(reference.latency_samples), _finite(canary.latency_samples)
    p = mann_whitney_worse(s_lat, c_lat)
    pvalues["latency"] = p
    s_med, c_med = median(s_lat), median(c_lat)
    if p < policy.alpha and c_med > s_med * (1 + policy.latency_tolerance):
        failures.append(f"canary latency {c_med:.0f} ms is significantly above stable {s_med:.0f} ms "
                        f"(Mann-Whitney over {len(c_lat)}+{len(s_lat)} windows, p={p:.2g}, beyond "
                        f"{policy.latency_tolerance:.0%})")
    else:
        passes.append(f"canary latency {c_med:.0f} ms vs stable {s_med:.0f} ms: no significant increase (p={p:.2g})")


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


def _slo_latency(policy: Policy, canary: VersionMetrics, failures: list[str], passes: list[str],
                 open_questions: list[str]) -> None:
    slo = policy.slo_p95_latency_ms or policy.max_p95_latency_ms
    if slo is None:
        failures.append("a cross-pool canary needs a p95 latency SLO (slo.p95LatencyMs) to judge against")
        return
    p95 = canary.p95_ms or 0.0
    if p95 > slo:
        failures.append(f"canary pool {canary.pool} p95 {p95:.0f} ms misses the SLO {slo:.0f} ms")
    else:
        passes.append(f"canary pool {canary.pool} p95 {p95:.0f} ms meets the SLO {slo:.0f} ms")


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
