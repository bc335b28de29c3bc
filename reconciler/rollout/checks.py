"""The checks of one look (issue 21): each builds one test from the rollout's evidence. Pure.

"errors vs stable", "errors vs limit" (or SLO), "pN vs stable" at a bucket boundary, "p95 vs limit" (or SLO):
each has a p-value for "the canary is worse" (the failing side) and one for "the regression it must catch is
there" (the accepting side), both on counts divided by the dispersion stable's windows show. A check vs stable
is read twice, each at half its level (contrast.both): pooled over the revision, and stratified within the
windows both tracks served, where a shock on both at once cancels (a loaded node must not blind the
comparison). Split from judge.py by verb: this module measures, the judge spends the budget and decides.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from reconciler.rollout import contrast, stats
from reconciler.rollout.guard import Guard, choose_boundary, latency_windows, survival
from reconciler.rollout.metrics import VersionMetrics
from reconciler.rollout.state import Evidence, Policy

TAIL_SHARE = 0.05    # the share of requests a p95 leaves above itself
SLOW_GATE = 2.5      # a slow share fails only above stable's x (1 + SLOW_GATE x latencyTolerance)


def qname(q: float) -> str:
    return f"p{q * 100:g}"


@dataclass
class Check:
    name: str
    pvalue: float
    gate: bool          # the effect is beyond the tolerance
    text: str           # the figures, in words
    requests: int       # canary requests it was computed on
    level: float = 0.0
    failed: bool = False
    accept_p: float = 1.0   # p-value of "the regression to catch" (``target``) against the counts: the acceptance side
    target: str = ""        # the regression this check must catch, in words
    accept_level: float = 0.0
    accepted: bool = False


def line(c: Check) -> str:
    verdict = "fails" if c.failed else "within"
    line = f"{c.name}: {c.text}; p={c.pvalue:.2g}, level {c.level:.2g} at this look: {verdict}"
    if c.accept_level > 0:
        line += (f"; {c.target} {'excluded' if c.accepted else 'not yet excluded'} "
                 f"(p={c.accept_p:.2g}, level {c.accept_level:.2g})")
    return line


def error_checks(policy: Policy, ev: Evidence, cross_pool: bool, size: Guard, checks: list[Check],
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
        catch = 1.0 + policy.detect_error_increase
        read = contrast.both(stats.quasi_rate_pvalue(kc, nc, ks, ns, phi), contrast.error_pairs(ev))
        checks.append(Check("errors vs stable", read.pvalue, c_rate > s_rate * ratio,
                             f"canary {c_rate:.3%} ({kc}/{nc}) vs stable {s_rate:.3%} ({ks}/{ns}), dispersion "
                             f"{phi:.2g}, tolerance {ratio:.2f}x{read.text}", nc,
                             accept_p=stats.quasi_rate_pvalue_below(kc, nc, ks, ns, catch, phi),
                             target=f"{catch:g}x stable's error rate"))
    slo = cross_pool and policy.slo_error_rate is not None
    limit = policy.slo_error_rate if slo and policy.slo_error_rate is not None else policy.max_error_rate
    name = "errors vs " + ("SLO" if slo else "limit")
    p = stats.quasi_share_pvalue(kc, nc, limit, phi) if limit > 0 else (0.0 if kc > 0 else 1.0)
    checks.append(Check(name, p, c_rate > limit, f"canary {c_rate:.3%} ({kc}/{nc}) vs {limit:.3%}", nc,
                         accept_p=stats.quasi_share_pvalue_below(kc, nc, limit, phi),
                         target=f"an error rate above {limit:.3%}"))


def relative_latency(policy: Policy, ev: Evidence, q: float, size: Guard, boundaries: dict[str, float],
                      checks: list[Check], open_questions: list[str], passes: list[str],
                      canary: VersionMetrics, reference: VersionMetrics | None) -> None:
    name = f"{qname(q)} vs stable"
    if not ev.reference_buckets or not ev.canary_buckets:
        _no_histogram(policy, name, canary, reference, q, None, passes, open_questions)
        return
    bound = boundaries.get(name)
    if bound is None:
        bound = choose_boundary(ev.reference_buckets, q, policy.detect_latency_increase)
        if bound is None:
            open_questions.append(f"{name}: stable's histogram has no bucket boundary near its {qname(q)}")
            return
        boundaries[name] = bound
    c = stats.share_above(ev.canary_buckets, bound)
    s = stats.share_above(ev.reference_buckets, bound)
    if c is None or s is None or c[1] <= 0 or s[1] <= 0:
        open_questions.append(f"{name}: {bound * 1000:g} ms is no longer a bucket boundary of the metrics")
        return
    phi = stats.dispersion(latency_windows(ev, bound))[0]
    c_share, s_share = c[0] / c[1], s[0] / s[1]
    gate = c_share > s_share * (1 + SLOW_GATE * policy.latency_tolerance)
    # the regression to catch: +detect latency, read as the slow share it gives at this boundary
    slower = survival(ev.reference_buckets, bound / (1 + policy.detect_latency_increase))
    catch = slower / s_share if slower is not None and s_share > 0 else 0.0
    accept_p = stats.quasi_rate_pvalue_below(c[0], c[1], s[0], s[1], catch, phi) if catch > 1.0 else 1.0
    read = contrast.both(stats.quasi_rate_pvalue(c[0], c[1], s[0], s[1], phi), contrast.latency_pairs(ev, bound))
    checks.append(Check(name, read.pvalue, gate, f"canary {c_share:.2%} of {c[1]:.0f} requests slower than "
                                                 f"{bound * 1000:g} ms vs stable {s_share:.2%} of {s[1]:.0f} (exact at "
                                                 f"a bucket boundary), dispersion {phi:.2g}{read.text}", int(c[1]),
                        accept_p=accept_p,
                        target=f"+{policy.detect_latency_increase:.0%} {qname(q)} ({catch:.2g}x stable's slow share)"))


def limit_latency(policy: Policy, ev: Evidence, name: str, threshold_ms: float | None, size: Guard,
                   checks: list[Check], open_questions: list[str], passes: list[str],
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
    checks.append(Check(name, p, share > TAIL_SHARE, f"canary {share:.2%} of {total:.0f} requests slower than "
                                                      f"{threshold_ms:g} ms vs the {TAIL_SHARE:.0%} a p95 allows"
                                                      f"{note}, dispersion {phi:.2g}", int(total),
                         accept_p=stats.quasi_share_pvalue_below(slow, total, TAIL_SHARE, phi),
                         target=f"a p95 above {threshold_ms:g} ms"))


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
