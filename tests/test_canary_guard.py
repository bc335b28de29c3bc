"""The power-based minimum-sample guard, pure: its arithmetic (checked against the exact test it sizes
for, by simulation), the judge's "waiting" verdict, and the machine's hold, which is neither an
inconclusive check nor a stall."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from reconciler.errors import ReconcilerError
from reconciler.report.github import report_markdown
from reconciler.report.rollout import guard_line, report_json
from reconciler.rollout import spending
from reconciler.rollout.guard import guard
from reconciler.rollout.evidence import accumulate
from reconciler.rollout.judge import judge
from reconciler.rollout.machine import Observations, SetWeight, step
from reconciler.rollout.metrics import VersionMetrics
from reconciler.rollout.state import Evidence, Phase, Policy, RolloutState
from reconciler.rollout.stats import (rate_ratio_power, rate_ratio_pvalue, requests_for_rate_power,
                                      requests_for_tail_power, z_upper)

POLICY = Policy(steps=(10, 25, 50, 100), interval_seconds=300, failure_threshold=2, max_error_rate=0.01)


def counts(track: str, requests: int, errors: int) -> VersionMetrics:
    return VersionMetrics(track=track, requests_per_second=requests / 300, error_rate=errors / max(requests, 1),
                          p95_ms=120.0, requests=requests, errors=errors)


# --------------------------------------------------------------------------- arithmetic


def test_rate_power_matches_the_normal_approximation_by_hand() -> None:
    # 2x at 0.2 %, 12,600 canary vs 113,400 stable requests: T = 0.002 x (25,200 + 113,400) = 277.2 errors,
    # pi0 = 0.1, pi1 = 25,200 / 138,600; in counts, continuity-corrected:
    # z = (T(pi1 - pi0) - z_a sqrt(T pi0 q0) - 0.5) / sqrt(T pi1 q1)
    pi1, t = 25_200 / 138_600, 277.2
    z = (t * (pi1 - 0.1) - z_upper(0.0025) * math.sqrt(t * 0.09) - 0.5) / math.sqrt(t * pi1 * (1 - pi1))
    assert rate_ratio_power(12_600, 113_400, 0.002, 2.0, 0.0025) == pytest.approx(0.5 * math.erfc(-z / math.sqrt(2)))


def test_the_sample_it_asks_for_gives_the_power_it_claims_with_the_exact_test() -> None:
    """Simulate the exact conditional test at the guard's sample: 2x errors at 0.2 %, 10 % weight."""
    size = requests_for_rate_power(0.002, 2.0, 0.0025, 0.95, stable_requests=0, stable_per_canary=9)
    assert size is not None and not size.capped
    n_c, n_s = size.requests, 9 * size.requests
    rng = np.random.default_rng(12)
    trials = 3000
    c = rng.binomial(n_c, 0.004, trials)
    s = rng.binomial(n_s, 0.002, trials)
    caught = np.mean([rate_ratio_pvalue(int(a), n_c, int(b), n_s) < 0.0025 for a, b in zip(c, s, strict=True)])
    assert 0.93 <= caught <= 0.98, caught  # the exact test is discrete: the approximation is close, not exact
    # and half the sample is clearly short of it
    half = n_c // 2
    c = rng.binomial(half, 0.004, trials)
    s = rng.binomial(9 * half, 0.002, trials)
    assert np.mean([rate_ratio_pvalue(int(a), half, int(b), 9 * half) < 0.0025 for a, b in zip(c, s, strict=True)]) < 0.8


def test_sample_size_moves_the_right_way() -> None:
    def n(rate=0.002, ratio=2.0, power=0.95, per=9.0) -> int:
        size = requests_for_rate_power(rate, ratio, 0.0025, power, stable_requests=0, stable_per_canary=per)
        assert size is not None
        return size.requests

    assert n(rate=0.001) > n() > n(rate=0.01)        # rarer errors need more requests
    assert n(ratio=1.5) > n() > n(ratio=4.0)         # a smaller effect needs more
    assert n(power=0.99) > n() > n(power=0.8)
    assert n(per=1.0) > n(per=9.0)                   # a canary at 50 % has less stable traffic to lean on
    assert requests_for_rate_power(0.0, 2.0, 0.0025, 0.95, stable_requests=1000, stable_per_canary=1) is None


def test_a_fixed_stable_sample_caps_the_power_and_the_guard_says_so() -> None:
    # a 100 % step: stable's 5,000 requests (10 errors) are all there is; no canary traffic reaches 95 %
    size = requests_for_rate_power(0.002, 2.0, 0.01, 0.95, stable_requests=5_000, stable_per_canary=0)
    assert size is not None and size.capped and size.power < 0.95
    # with a day of stable behind it the same step is not capped
    big = requests_for_rate_power(0.002, 2.0, 0.01, 0.95, stable_requests=1_000_000, stable_per_canary=0)
    assert big is not None and not big.capped and big.requests < size.requests


def test_latency_sample_size_by_hand() -> None:
    # 5 % vs 12.1 % above the bound, alpha 0.01, power 0.95: ((2.326*0.218 + 1.645*0.326) / 0.071)^2 = 216
    assert requests_for_tail_power(0.05, 0.121, 0.01, 0.95) == pytest.approx(216, abs=2)
    assert requests_for_tail_power(0.05, 0.05, 0.01, 0.95) is None


def test_guard_per_look_power_and_error_floor() -> None:
    ev = Evidence(reference_requests=150_000, reference_errors=300, stable_requests=13_500, stable_errors=27,
                  canary_requests=1500, canary_errors=3)
    two = guard(POLICY, ev, canary_weight=10)
    three = guard(Policy(**{**POLICY.__dict__, "failure_threshold": 3}), ev, canary_weight=10)
    assert three.needed > two.needed  # three failed looks in a row must each be likelier
    assert two.detect == "+100% errors" and not two.notes
    # a model that makes no errors is sized at a tenth of the limit, not at zero (which would need for ever)
    clean = guard(POLICY, Evidence(reference_requests=150_000, stable_requests=13_500, canary_requests=1500),
                  canary_weight=10)
    assert clean.unknown is None and clean.needed < 10 ** 6 and "sized as 0.100%" in clean.notes[0]


def test_overdispersed_stable_windows_ask_for_more_requests() -> None:
    rng = np.random.default_rng(4)
    plain, bursty = Evidence(), Evidence()
    for _ in range(12):
        plain = accumulate(plain, counts("stable", 15_000, int(rng.binomial(15_000, 0.002))), None, 200)
        bursty = accumulate(bursty, counts("stable", 15_000, int(rng.binomial(15_000, 0.002 * (6 if rng.random() < 0.3
                                                                                                 else 0.3)))), None, 200)
    a, b = guard(POLICY, plain, canary_weight=10), guard(POLICY, bursty, canary_weight=10)
    assert b.phi_errors > 2 and b.needed > 1.5 * a.needed and any("overdispersed" in n for n in b.notes)


# --------------------------------------------------------------------------- the judge


def test_a_healthy_rollout_passes_at_every_look_and_is_enough_once_it_has_the_sample() -> None:
    ev = Evidence()
    for _ in range(6):
        ev = accumulate(ev, counts("stable", 15_000, 30), None, 200)  # stable's history
    verdicts = []
    for _ in range(40):
        ev = accumulate(ev, counts("stable", 13_500, 27), counts("canary", 1500, 3), 200)
        v = judge(POLICY, counts("stable", 13_500, 27), counts("canary", 1500, 3), evidence=ev, canary_weight=10)
        ev = v.evidence or ev
        verdicts.append(v)
        if v.enough:
            break
    first = verdicts[0]
    assert first.passed and not first.enough and first.needed_requests > 1500
    assert first.reasons[0].startswith("no check failed on 1500 canary requests; ")
    assert "more needed to detect +100% errors with 95% power" in first.reasons[0]
    assert all(v.passed for v in verdicts) and verdicts[-1].enough, verdicts[-1].reasons
    assert ev.canary_requests >= verdicts[-1].needed_requests > 1500
    assert "error budget left" in verdicts[-1].decided_by


def test_a_gross_regression_fails_before_the_sample_is_complete() -> None:
    # ~5x stable's errors, within the 1 % limit: significant long before the sample sized for 2x is complete
    stable, canary = counts("stable", 13_500, 27), counts("canary", 1500, 14)
    ev = Evidence()
    for _ in range(6):
        ev = accumulate(ev, counts("stable", 15_000, 30), None, 200)
    v = None
    for _ in range(12):
        ev = accumulate(ev, stable, canary, 200)
        v = judge(POLICY, stable, canary, evidence=ev, canary_weight=10)
        ev = v.evidence or ev
        if v.failed:
            break
    assert v is not None and v.failed and ev.canary_requests < v.needed_requests, v


def test_detect_must_exceed_the_tolerance() -> None:
    from reconciler.catalog.effective import EffectiveCanary

    canary = EffectiveCanary(enabled=True, steps=[10, 100], interval_seconds=60, failure_threshold=2,
                             progress_deadline_seconds=600, max_error_rate=0.01, max_p95_latency_ms=None,
                             judge="threshold", router="replicas", queries={}, error_rate_tolerance=0.5,
                             detect_error_increase=0.4)
    with pytest.raises(ReconcilerError) as err:
        Policy.from_spec(canary)
    assert "canary.detectErrorIncrease 0.4 is not above canary.errorRateTolerance 0.5" in str(err.value)
    assert "fix:" in str(err.value)


# --------------------------------------------------------------------------- the machine


def state_at_first_step(policy: Policy = POLICY) -> RolloutState:
    state = RolloutState(model="iris", environment="prod", policy=policy, stable_revision="r1")
    _, state = step(state, Observations("r2", canary_ready=False), 0)
    history = tuple(counts("stable", 15_000, 30) for _ in range(6))
    _, state = step(state, Observations("r2", stable=counts("stable", 15_000, 30), stable_history=history), 300)
    assert state.phase is Phase.progressing and state.canary_weight == policy.steps[0]
    assert state.evidence.reference_requests == 90_000  # stable's recent past, read once
    return state


def test_the_last_step_waits_for_the_sample_without_counting_against_the_limit_or_the_deadline(monkeypatch) -> None:
    # without early acceptance (its budget set to nothing): the healthy canary here would be accepted at the first
    # look (test_canary_judge.py tests that side); this test is about waiting for the guard's full sample
    monkeypatch.setattr(spending, "ACCEPT_SHARE", 0.0)
    policy = Policy(**{**POLICY.__dict__, "steps": (100,), "progress_deadline_seconds": 600, "inconclusive_limit": 2})
    state = state_at_first_step(policy)
    now, decisions = 300.0, []
    for _ in range(40):
        now += 300
        actions, state = step(state, Observations("r2", stable=VersionMetrics("stable", requests_per_second=0.0),
                                                  canary=counts("canary", 7_000, 14), promoted_ready=True), now)
        decisions.append(state.history[-1].decision)
        if state.phase is not Phase.progressing:
            break
    waits = decisions[:-1]
    # more waits than inconclusiveLimit (2), past the progress deadline (600 s), and still not paused
    assert len(waits) > 2 and set(waits) == {"wait"} and 300 * len(waits) > 600, decisions
    assert decisions[-1] == "promoting" and not state.paused and state.inconclusive_checks == 0
    assert "more canary requests needed for the guard's" in state.history[-2].reasons[0]


def test_a_step_advances_after_one_look_with_its_minimum_requests() -> None:
    state = state_at_first_step()
    _, state = step(state, Observations("r2", stable=counts("stable", 13_500, 27), canary=counts("canary", 150, 0)),
                    600)
    assert state.history[-1].decision == "wait" and state.canary_weight == 10  # 150 < minRequests 200
    actions, state = step(state, Observations("r2", stable=counts("stable", 13_500, 27),
                                              canary=counts("canary", 150, 0)), 900)
    assert SetWeight(25) in actions and state.evidence.step_requests == 0 and state.evidence.canary_requests == 300


def test_no_canary_traffic_is_inconclusive_and_pauses_at_the_limit() -> None:
    state = state_at_first_step()
    now = 300.0
    for _ in range(POLICY.inconclusive_limit):
        now += 300
        _, state = step(state, Observations("r2", stable=counts("stable", 13_500, 27),
                                            canary=VersionMetrics("canary", requests_per_second=0.0)), now)
    assert state.paused and state.pause_reason == "inconclusive"
    assert [r.decision for r in state.history[-3:]] == ["inconclusive", "inconclusive", "pause"]


def test_warm_up_after_each_weight_increase_is_not_judged() -> None:
    policy = Policy(**{**POLICY.__dict__, "warmup_seconds": 90})
    state = state_at_first_step(policy)
    assert state.last_analysis_at == 300 + 90 and "warm-up" in state.history[-1].reasons[0]
    slow = Observations("r2", stable=counts("stable", 13_500, 27), canary=counts("canary", 1500, 300))
    actions, after = step(state, slow, 300 + 300)  # an interval after the weight change: still in warm-up
    assert actions == [] and after == state
    _, after = step(state, slow, 300 + 90 + 300)  # the first interval wholly after the warm-up is judged
    assert after.history[-1].decision in ("hold", "rollback")


def test_status_report_and_comment_say_which_test_decided_on_how_many_requests_with_what_budget() -> None:
    state = state_at_first_step()
    _, state = step(state, Observations("r2", stable=counts("stable", 13_500, 27),
                                        canary=counts("canary", 1500, 3)), 600)
    line = guard_line(state)
    assert line is not None and line.startswith("no check failed on 1500 canary requests; ")
    assert "error budget left" in line
    data = report_json(state)
    assert data["guard"]["waiting_for"] == state.evidence.waiting_for > 0
    assert data["guard"]["budget_left"] is not None and data["guard"]["decided_by"] == line
    assert data["guard"]["accepted_early"] is False
    assert "**Last judgement:** no check failed on 1500 canary requests" in report_markdown(state)
    # the evidence (with its +Inf histogram bound and windows) survives the ConfigMap's JSON
    ev = Evidence(canary_buckets=((0.1, 5.0), (math.inf, 9.0)), needed_requests=10, detect="+100% errors",
                  windows=((1.0, 0.0, 2.0, 0.0, 1.0, 0.0),), window_bounds=(0.1,), spent=(("errors vs stable", 1e-4),),
                  accept_spent=(("errors vs stable", 0.015),))
    back = RolloutState.from_json(state.evolve(evidence=ev).to_json()).evidence
    assert back == ev and json.loads(state.evolve(evidence=ev).to_json())  # strict JSON: no Infinity


def test_an_early_acceptance_is_what_status_the_report_and_the_comment_show() -> None:
    """A healthy canary at the last weight promoted before the guard's full sample: the last judgement says so,
    with the regression each check excluded, and the report JSON marks it (waiting_for stays above 0)."""
    policy = Policy(**{**POLICY.__dict__, "steps": (100,)})
    state = state_at_first_step(policy)
    _, state = step(state, Observations("r2", stable=VersionMetrics("stable", requests_per_second=0.0),
                                        canary=counts("canary", 7_000, 14), promoted_ready=True), 600)
    assert state.phase is Phase.promoting, state.history[-1].reasons
    line = guard_line(state)
    assert line is not None and line.startswith("accepted early on 7000 canary requests (of the ")
    assert "2x stable's error rate excluded" in line and "error budget left" in line
    data = report_json(state)
    assert data["guard"]["accepted_early"] is True and data["guard"]["waiting_for"] > 0
    assert "**Last judgement:** accepted early on 7000 canary requests" in report_markdown(state)
