"""The pure canary state machine over scripted observations (no server, no clock)."""

from __future__ import annotations

import json

import pytest

from reconciler.rollout.machine import (DeployCanary, Observations, Promote, Rollback, SetWeight, pause, request,
                                       resume, step)
from reconciler.rollout.metrics import VersionMetrics
from reconciler.rollout.state import Phase, Policy, RolloutState
from reconciler.catalog.effective import EffectiveCanary
from reconciler.catalog.specs import SLO

POLICY = Policy(steps=(10, 25, 50, 100), interval_seconds=60, failure_threshold=2,
                progress_deadline_seconds=600, max_error_rate=0.01, max_p95_latency_ms=250)


def metrics(track: str, error_rate: float = 0.001, p95: float = 120.0, rps: float = 50.0, **kw) -> VersionMetrics:
    return VersionMetrics(track=track, requests_per_second=rps, error_rate=error_rate, p95_ms=p95, **kw)


def healthy(revision: str = "r2", **kw) -> Observations:
    return Observations(revision=revision, stable=metrics("stable"), canary=metrics("canary"), **kw)


def initial(policy: Policy = POLICY, **kw) -> RolloutState:
    return RolloutState(model="iris", environment="prod", policy=policy, stable_revision="r1", **kw)


def run(state: RolloutState, observe, start: float, ticks: int, every: float = 60.0):
    """Step the machine `ticks` times, `every` seconds apart; collect every action with its time."""
    log: list[tuple[float, object]] = []
    now = start
    for _ in range(ticks):
        actions, state = step(state, observe(now), now)
        log.extend((now, a) for a in actions)
        now += every
    return state, log


def promotions(log) -> list[Promote]:
    return [a for _, a in log if isinstance(a, Promote)]


def test_policy_from_effective_canary_and_slo() -> None:
    canary = EffectiveCanary(enabled=True, steps=[5, 50, 100], interval_seconds=300, failure_threshold=3,
                             progress_deadline_seconds=1800, max_error_rate=0.02, max_p95_latency_ms=None,
                             judge="mann-whitney", router="istio", queries={})
    policy = Policy.from_spec(canary, SLO(p95LatencyMs=200, errorRate=0.005))
    assert policy.steps == (5, 50, 100) and policy.interval_seconds == 300 and policy.failure_threshold == 3
    assert policy.judge == "mann-whitney" and policy.router == "istio"
    assert policy.slo_p95_latency_ms == 200 and policy.slo_error_rate == 0.005


def test_healthy_canary_walks_every_step_then_promotes_once() -> None:
    state, log = run(initial(), lambda now: healthy(), start=1000, ticks=12)
    weights = [a.canary_weight for _, a in log if isinstance(a, SetWeight)]
    assert weights == [10, 25, 50, 100]
    assert isinstance(log[0][1], DeployCanary) and log[0][1].revision == "r2"
    assert promotions(log) == [Promote("r2", None)]
    # promotion happens at the analysis after the last step (100 %), not before
    promote_at = next(t for t, a in log if isinstance(a, Promote))
    last_weight_at = max(t for t, a in log if isinstance(a, SetWeight))
    assert promote_at == last_weight_at + POLICY.interval_seconds
    assert state.phase is Phase.promoted and state.stable_revision == "r2" and state.promotions == 1
    decisions = [r.decision for r in state.history]
    assert decisions == ["start", "advance", "advance", "advance", "advance", "promote"]


def test_error_spike_rolls_back_within_interval_times_threshold() -> None:
    spike_at = 1000 + 60 * 2 + 1  # just after an analysis: the worst case for detection delay

    def observe(now: float) -> Observations:
        if now < spike_at:
            return healthy()
        return Observations("r2", stable=metrics("stable"), canary=metrics("canary", error_rate=0.2))

    state, log = run(initial(), observe, start=1000, ticks=20)
    rollbacks = [(t, a) for t, a in log if isinstance(a, Rollback)]
    assert len(rollbacks) == 1
    when, action = rollbacks[0]
    assert when - spike_at <= POLICY.interval_seconds * POLICY.failure_threshold
    assert "threshold" in action.reason and "error rate 20.00%" in action.reason
    assert state.phase is Phase.rolled_back and state.stable_revision == "r1" and state.canary_weight == 0
    assert (when, SetWeight(0)) in log
    assert not promotions(log)
    assert [r.decision for r in state.history][-2:] == ["hold", "rollback"]
    assert state.failed_checks == POLICY.failure_threshold


@pytest.mark.parametrize("canary", [None, VersionMetrics(track="canary"),
                                    VersionMetrics(track="canary", requests_per_second=10.0,
                                                   error_rate=float("nan"), p95_ms=100.0)])
def test_no_data_never_promotes(canary) -> None:
    state, log = run(initial(), lambda now: Observations("r2", stable=metrics("stable"), canary=canary),
                     start=0, ticks=30)
    assert not promotions(log)
    assert state.phase is Phase.rolled_back
    assert state.canary_weight == 0 and state.step_index == 0  # it never went past the first step
    assert any("no data" in reason for reason in state.history[-1].reasons)


def test_restart_mid_canary_resumes_at_the_same_step_and_never_promotes_twice() -> None:
    state, log_a = run(initial(), lambda now: healthy(), start=0, ticks=3)  # start, 10 %, 25 %
    assert state.step_index == 1 and state.canary_weight == 25
    # a restarted reconciler: the state went through JSON (the ConfigMap) and comes back identical
    restored = RolloutState.from_json(json.loads(json.dumps(state.to_json())))
    assert restored == state
    actions, again = step(restored, healthy(), 3 * 60 - 30)  # half an interval later: nothing to redo
    assert actions == [] and again == restored
    state, log_b = run(restored, lambda now: healthy(), start=3 * 60, ticks=10)
    weights = [a.canary_weight for _, a in log_a + log_b if isinstance(a, SetWeight)]
    assert weights == [10, 25, 50, 100]  # no step taken twice
    assert len(promotions(log_a + log_b)) == 1
    # restart after promotion, then keep stepping with the same revision: no second promotion
    restored = RolloutState.from_dict(json.loads(state.to_json()))
    again, log_c = run(restored, lambda now: healthy(), start=10_000, ticks=5)
    assert promotions(log_c) == [] and again.promotions == 1


def test_new_commit_mid_canary_restarts_analysis_at_weight_zero() -> None:
    state, _ = run(initial(), lambda now: healthy("r2"), start=0, ticks=4)
    assert state.canary_weight == 50 and state.canary_revision == "r2"
    state = state.evolve(failed_checks=1)
    actions, state = step(state, healthy("r3"), 4 * 60)
    assert actions == [SetWeight(0), DeployCanary("r3", None)]
    assert state.canary_revision == "r3" and state.canary_weight == 0 and state.step_index == -1
    assert state.failed_checks == 0 and state.phase is Phase.initializing
    assert state.history[-1].decision == "restart"
    state, log = run(state, lambda now: healthy("r3"), start=5 * 60, ticks=8)
    assert [a.canary_weight for _, a in log if isinstance(a, SetWeight)] == [10, 25, 50, 100]
    assert promotions(log) == [Promote("r3", None)]


def test_canary_not_ready_waits_at_weight_zero() -> None:
    actions, state = step(initial(), healthy(canary_ready=False), 0)
    actions, state = step(state, healthy(canary_ready=False), 60)
    assert actions == [] and state.canary_weight == 0 and state.phase is Phase.initializing
    actions, state = step(state, healthy(), 120)
    assert actions == [SetWeight(10)]


def test_pause_freezes_and_resume_continues() -> None:
    state, _ = run(initial(), lambda now: healthy(), start=0, ticks=2)
    assert state.canary_weight == 10
    state = pause(state, 120)
    # paused far beyond the progress deadline: no analysis, no weight change, no rollback
    for now in range(180, 5000, 60):
        actions, state = step(state, healthy(), now)
        assert actions == []
    assert state.canary_weight == 10 and state.phase is Phase.progressing
    state = resume(state, 5000)
    actions, state = step(state, healthy(), 5000 + 30)
    assert actions == []  # the analysis clock restarted at resume
    actions, state = step(state, healthy(), 5000 + 60)
    assert actions == [SetWeight(25)]
    assert [r.decision for r in state.history][-3:] == ["pause", "resume", "advance"]


def test_user_promote_and_abort() -> None:
    state, _ = run(initial(), lambda now: healthy(), start=0, ticks=2)
    promoted = request(pause(state, 100), "promote", 110)
    actions, promoted = step(promoted, healthy(), 111)
    assert actions == [Promote("r2", None)] and promoted.phase is Phase.promoted
    actions, promoted = step(promoted, healthy(), 112)
    assert actions == []
    aborted = request(state, "abort", 110)
    actions, aborted = step(aborted, healthy(), 111)
    assert actions == [SetWeight(0), Rollback("r2", "aborted by a user")]
    assert aborted.stable_revision == "r1"


def test_progress_deadline_exceeded_rolls_back() -> None:
    # the canary never becomes ready: it sits at weight 0 until the deadline passes
    state, log = run(initial(), lambda now: healthy(canary_ready=False), start=0, ticks=15)
    rollbacks = [(t, a) for t, a in log if isinstance(a, Rollback)]
    assert len(rollbacks) == 1
    assert rollbacks[0][0] > POLICY.progress_deadline_seconds
    assert rollbacks[0][0] <= POLICY.progress_deadline_seconds + 60
    assert "progress deadline" in rollbacks[0][1].reason
    assert state.phase is Phase.rolled_back


def test_rolled_back_revision_is_not_retried_but_a_newer_one_is() -> None:
    state = initial(phase=Phase.rolled_back, canary_revision="r2")
    assert step(state, healthy("r2"), 0) == ([], state)
    actions, state = step(state, healthy("r3"), 0)
    assert actions == [DeployCanary("r3", None)]


def test_revert_to_stable_during_canary_drops_the_canary() -> None:
    state, _ = run(initial(), lambda now: healthy("r2"), start=0, ticks=3)
    actions, state = step(state, healthy("r1"), 200)
    assert actions == [SetWeight(0), Rollback("r2", "desired revision is the stable r1 again")]


# --------------------------------------------------------------------------- across pools

CROSS = Policy(steps=(25, 50, 100), interval_seconds=60, failure_threshold=2, progress_deadline_seconds=900,
               max_error_rate=0.01, slo_p95_latency_ms=200, slo_error_rate=0.01)


def cross_obs(canary_p95: float, canary_replicas: int = 2) -> Observations:
    # stable on 2 x g5.xlarge ($1.006/h) and canary on inf2.xlarge ($0.758/h), the same traffic each
    stable = metrics("stable", p95=90, rps=40, pool="gpu-a10g", replicas=2, hourly_price=1.006)
    canary = metrics("canary", p95=canary_p95, rps=40, pool="inf2", replicas=canary_replicas, hourly_price=0.758)
    return Observations("r2", stable=stable, canary=canary, stable_pool="gpu-a10g", canary_pool="inf2")


def test_cross_pool_cheaper_pool_meeting_the_slo_is_promoted() -> None:
    state = initial(CROSS, stable_pool="gpu-a10g")
    state, log = run(state, lambda now: cross_obs(canary_p95=150), start=0, ticks=8)
    assert promotions(log) == [Promote("r2", "inf2")]
    assert state.stable_pool == "inf2" and state.phase is Phase.promoted
    why = " ".join(state.history[-1].reasons)
    assert "meets the SLO" in why and "cheaper than gpu-a10g" in why
    assert state.history[-1].canary["cost_per_1000"] < state.history[-1].stable["cost_per_1000"]


def test_cross_pool_missing_the_slo_is_rolled_back() -> None:
    state = initial(CROSS, stable_pool="gpu-a10g")
    state, log = run(state, lambda now: cross_obs(canary_p95=320), start=0, ticks=8)
    assert not promotions(log)
    assert state.phase is Phase.rolled_back and state.stable_pool == "gpu-a10g"
    assert "misses the SLO 200 ms" in state.outcome


def test_cross_pool_meeting_the_slo_but_dearer_is_rolled_back() -> None:
    state = initial(CROSS, stable_pool="gpu-a10g")
    state, log = run(state, lambda now: cross_obs(canary_p95=150, canary_replicas=4), start=0, ticks=8)
    assert not promotions(log) and state.phase is Phase.rolled_back
    assert "not cheaper" in state.outcome
