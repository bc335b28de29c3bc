"""The error budget over a rollout's looks (issue 21): how much of it each look may spend. Pure.

Two sides, as a two-sided group-sequential design: the failing side spends the rollout's ``alpha`` (the chance
of rolling back a healthy canary) over the information time with a Lan-DeMets function, part linear and part
O'Brien-Fleming; the accepting side spends a share of the miss budget ``1 - power`` (the chance of promoting a
regression of the size the policy wants caught) over the looks at the last weight, front-loaded, so a healthy
canary is promoted as soon as every check's upper bound excludes its regression. Split from stats.py by verb:
stats tests counts, this module rations the tests' levels; judge.py combines them.
"""

from __future__ import annotations

import math

from reconciler.rollout.state import Policy
from reconciler.rollout.stats import NORMAL, z_upper

LINEAR_SHARE = 0.3  # of a check's alpha spent in proportion to information (the rest O'Brien-Fleming)


def spent_by(t: float, alpha: float) -> float:
    """The spending function the judge uses: ``LINEAR_SHARE`` of ``alpha`` spent linearly in the information
    time (a Pocock-like part, so a gross regression fails at the first looks) and the rest with the
    O'Brien-Fleming shape (so most of the budget waits for the full sample). Monotone, ``alpha`` at t = 1."""
    t = min(max(t, 0.0), 1.0)
    return LINEAR_SHARE * alpha * t + obrien_fleming_spent(t, (1.0 - LINEAR_SHARE) * alpha)


def obrien_fleming_spent(t: float, alpha: float) -> float:
    """Alpha spent by information time ``t`` (Lan-DeMets, O'Brien-Fleming shape, one-sided): about
    nothing at the first looks, all of ``alpha`` at ``t = 1``."""
    if t <= 0.0:
        return 0.0
    t = min(t, 1.0)
    return min(alpha, 2.0 * (1.0 - NORMAL.cdf(z_upper(alpha / 2.0) / math.sqrt(t))))


ACCEPT_SHARE = 0.6  # of the miss budget (1 - power): what early acceptance may spend; the guard sizes for the rest


ACCEPT_HALVING = 0.5  # each look at the last weight spends this share of the acceptance budget still unspent


def accept_level(spent: float, beta: float) -> float:
    """The acceptance side's level at the next look at the last weight: half of ``beta`` not yet spent
    (beta/2, beta/4, ...: front-loaded, so a healthy canary is accepted at the first looks that can show it,
    and the levels over all looks sum to at most ``beta``)."""
    return max(beta - spent, 0.0) * ACCEPT_HALVING


def check_names(policy: Policy, cross_pool: bool) -> tuple[str, ...]:
    """The checks of a rollout, fixed by its policy (the error budget is split over them)."""
    names = ["errors vs stable", "errors vs " + ("SLO" if cross_pool and policy.slo_error_rate is not None
                                                 else "limit")]
    if cross_pool:
        names.append("p95 vs SLO")
    else:
        names += [f"p{q * 100:g} vs stable" for q in policy.quantiles]
        if policy.max_p95_latency_ms is not None:
            names.append("p95 vs limit")
    return tuple(names)
