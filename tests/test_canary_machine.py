"""The pure canary state machine over scripted observations (no server, no clock)."""

from __future__ import annotations

import json
import math
from statistics import NormalDist

import pytest

from reconciler.rollout.machine import (DeployCanary, Observations, Promote, Rollback, ScaleUp, SetWeight, pause,
                                       request, resume, step)
from reconciler.rollout.metrics import VersionMetrics
from reconciler.rollout.state import Pause, Phase, Policy, RolloutState
from reconciler.catalog.effective import EffectiveCanary
from reconciler.catalog.specs import SLO
from reconciler.catalog.buckets import duration_buckets

# the minimum-sample guard is sized for a 10x error regression at 60 % power here, so every scripted
# 3,000-request interval below has enough (the guard itself: test_canary_guard.py)
POLICY = Policy(steps=(10, 25, 50, 100), interval_seconds=60, failure_threshold=2,
                progress_deadline_seconds=600, max_error_rate=0.01, max_p95_latency_ms=250,
                detect_error_increase=9.0, power=0.6)


def metrics(track: str, error_rate: float = 0.001, p95: float = 120.0, rps: float = 50.0, **kw) -> VersionMetrics:
    """One interval (60 s) of a track: counts as PromQL increase() gives them, no histogram (so latency
    is compared on the p95 figures)."""
    requests = rps * 60
    return VersionMetrics(track=track, requests_per_second=rps, error_rate=error_rate, p95_ms=p95,
                          requests=requests, errors=error_rate * requests, **kw)


def healthy(revision: str = "r2", **kw) -> Observations:
    kw.setdefault("promoted_ready", True)
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


# read elsewhere than the Policy: `enabled` (the controller decides whether to canary at all), the router's options
# (traffic.base), the PromQL queries (rollout.prometheus) and the latency buckets (render, catalog.buckets)
NOT_POLICY = {"enabled", "router_options", "queries", "latency_buckets"}


def _every_field_declared() -> EffectiveCanary:
    from reconciler.catalog.canary import ABHeader
    from reconciler.catalog.effective import EffectivePause

    return EffectiveCanary(
        enabled=True, steps=[5, 50, 100], interval_seconds=300, failure_threshold=3, progress_deadline_seconds=900,
        max_error_rate=0.02, max_p95_latency_ms=250.0, judge="mann-whitney", router="istio", queries={},
        pauses=[EffectivePause(after=0, seconds=None)], min_requests=50, inconclusive_limit=5,
        on_inconclusive="rollback", cost_policy="promote", error_rate_tolerance=0.3, latency_tolerance=0.2,
        detect_error_increase=1.5, detect_latency_increase=0.4, power=0.9,
        ab_header=ABHeader(name="x-canary", value="1"), mirror_percent=20, confirm_url="https://confirm.example/",
        route_domain="models.example", warmup_seconds=45, quantiles=[0.99, 0.95], measurement_error_limit=7,
        on_measurement_error="rollback")


def test_every_canary_setting_reaches_the_policy_by_its_name() -> None:
    """Every field of the catalog's EffectiveCanary is either a Policy field of the same name, carrying the
    declared value, or named in NOT_POLICY: a field added to or renamed in the catalog shows up here."""
    canary = _every_field_declared()
    policy = Policy.from_spec(canary)
    policy_fields = set(Policy.__dataclass_fields__)
    assert set(EffectiveCanary.model_fields) - policy_fields == NOT_POLICY
    converted = {"steps": (5, 50, 100), "pauses": (Pause(0, None),), "ab_header": ("x-canary", "1"),
                 "quantiles": (0.95, 0.99)}
    for name in set(EffectiveCanary.model_fields) - NOT_POLICY:
        assert getattr(policy, name) == converted.get(name, getattr(canary, name)), name
        assert getattr(policy, name) != getattr(Policy(), name), f"{name}: the test must declare a non-default value"


def test_a_canary_setting_the_policy_cannot_read_fails_loudly() -> None:
    """The policy reads each setting by name: one that is gone (renamed in the catalog) is an AttributeError
    naming it (and a mypy error in tests/test_static.py), never a silent default."""
    canary = _every_field_declared()
    del canary.__dict__["warmup_seconds"]  # as if the catalog had renamed it
    with pytest.raises(AttributeError, match="warmup_seconds"):
        Policy.from_spec(canary)


def test_healthy_canary_walks_every_step_then_promotes_once() -> None:
    state, log = run(initial(), lambda now: healthy(), start=1000, ticks=12)
    weights = [a.canary_weight for _, a in log if isinstance(a, SetWeight)]
    assert weights == [10, 25, 50, 100]
    assert isinstance(log[0][1], DeployCanary) and log[0][1].revision == "r2"
    assert promotions(log) == [Promote("r2", None)]
    # promotion starts at the analysis after the last step (100 %): scale up first, let go of the old after
    scale_at = next(t for t, a in log if isinstance(a, ScaleUp))
    promote_at = next(t for t, a in log if isinstance(a, Promote))
    last_weight_at = max(t for t, a in log if isinstance(a, SetWeight))
    assert scale_at == last_weight_at + POLICY.interval_seconds and promote_at > scale_at
    assert state.phase is Phase.promoted and state.stable_revision == "r2" and state.promotions == 1
    decisions = [r.decision for r in state.history]
    assert decisions == ["start", "advance", "advance", "advance", "advance", "promoting", "promote"]


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
    assert "threshold" in action.reason and "FAILED errors vs limit" in action.reason
    assert "error budget left" in action.reason  # which test decided, on how many requests, with what budget
    assert state.phase is Phase.rolled_back and state.stable_revision == "r1" and state.canary_weight == 0
    assert (when, SetWeight(0)) in log
    assert not promotions(log)
    assert [r.decision for r in state.history][-2:] == ["hold", "rollback"]
    assert state.failed_checks == POLICY.failure_threshold


@pytest.mark.parametrize("canary", [None, VersionMetrics(track="canary"),
                                    VersionMetrics(track="canary", requests_per_second=10.0,
                                                   error_rate=float("nan"), p95_ms=100.0)])
def test_no_data_is_inconclusive_never_promotes_and_pauses_at_the_limit(canary) -> None:
    state, log = run(initial(), lambda now: Observations("r2", stable=metrics("stable"), canary=canary),
                     start=0, ticks=30)
    assert not promotions(log) and not [a for _, a in log if isinstance(a, Rollback)]
    assert state.paused and state.pause_reason == "inconclusive" and state.phase is Phase.progressing
    assert state.canary_weight == 10 and state.step_index == 0 and state.failed_checks == 0
    decisions = [r.decision for r in state.history]
    assert decisions[-POLICY.inconclusive_limit:] == ["inconclusive"] * (POLICY.inconclusive_limit - 1) + ["pause"]
    assert any("no data" in reason for reason in state.history[-1].reasons)


def test_inconclusive_limit_can_roll_back_instead() -> None:
    policy = Policy(**{**POLICY.__dict__, "on_inconclusive": "rollback", "inconclusive_limit": 2})
    state, log = run(initial(policy), lambda now: Observations("r2", stable=metrics("stable"), canary=None),
                     start=0, ticks=10)
    assert state.phase is Phase.rolled_back and "2 inconclusive analyses reached the limit 2" in state.outcome


def outage(start: float, end: float):
    def observe(now: float) -> Observations:
        if start <= now < end:
            return Observations("r2", metrics_error="Prometheus at http://prom:9090 is unreachable")
        return healthy()
    return observe


def test_prometheus_outage_is_a_measurement_error_not_a_failure_nor_inconclusive() -> None:
    # a 10-minute outage: measurement errors (Argo Rollouts' Error), neither failed nor inconclusive checks;
    # the canary continues afterwards
    policy = Policy(**{**POLICY.__dict__, "measurement_error_limit": 20, "progress_deadline_seconds": 1800})
    state, log = run(initial(policy), outage(150, 750), start=0, ticks=30)
    assert promotions(log) == [Promote("r2", None)] and state.failed_checks == 0
    errors = [r for r in state.history if r.decision == "error"]
    assert errors and all("unreachable" in r.reasons[0] and "not a failure" in r.reasons[0] for r in errors)
    assert not [r for r in state.history if r.decision == "inconclusive"]


@pytest.mark.parametrize("on_error, phase", [("pause", Phase.progressing), ("rollback", Phase.rolled_back)])
def test_consecutive_measurement_errors_pause_or_roll_back_as_the_policy_says(on_error, phase) -> None:
    policy = Policy(**{**POLICY.__dict__, "measurement_error_limit": 3, "on_measurement_error": on_error})
    state, log = run(initial(policy), outage(150, 10_000), start=0, ticks=12)
    assert state.phase is phase and not promotions(log)
    assert [r.decision for r in state.history].count("error") == 2
    if on_error == "pause":
        assert state.paused and state.pause_reason == "measurement error" and state.measurement_errors == 3
        state = resume(state, 20_000)
        assert not state.paused and state.measurement_errors == 0


def test_low_traffic_ends_on_its_own_paused_with_the_figure_it_waits_for() -> None:
    # 5 requests per interval: never promoted on that; after a few looks it pauses and says how many
    # requests it waits for and how long they would take
    def observe(now: float) -> Observations:
        return Observations("r2", stable=metrics("stable", error_rate=0.002, rps=45 / 60,
                                                 latency_buckets=hist(45, 120)),
                            canary=metrics("canary", error_rate=0.0, rps=5 / 60, latency_buckets=hist(5, 120)))
    state, log = run(initial(), observe, start=0, ticks=30)
    assert not promotions(log) and state.paused and state.pause_reason == "not enough traffic"
    why = " ".join(state.history[-1].reasons)
    assert "more canary requests are needed for the step's minimum of 200" in why and "beyond the progress" in why


def test_a_canary_that_is_not_ready_never_gets_more_traffic() -> None:
    state, _ = run(initial(), lambda now: healthy(), start=0, ticks=2)
    assert state.canary_weight == 10
    state, log = run(state, lambda now: healthy(canary_ready=False), start=120, ticks=5)
    assert [a for _, a in log if isinstance(a, SetWeight)] == [] and state.canary_weight == 10
    assert "canary not ready" in state.history[-1].reasons[0]


def test_achieved_weight_is_recorded_with_each_decision() -> None:
    state, _ = run(initial(), lambda now: healthy(achieved_weight=25.0), start=0, ticks=3)
    assert state.achieved_weight == 25.0 and state.history[-1].achieved_weight == 25.0
    assert state.to_dict()["history"][-1]["achieved_weight"] == 25.0


def test_promotion_waits_until_the_new_version_is_ready_at_full_size() -> None:
    state, log = run(initial(), lambda now: healthy(promoted_ready=False), start=0, ticks=12)
    assert state.phase is Phase.promoting and not promotions(log)
    assert [a for _, a in log if isinstance(a, ScaleUp)] == [ScaleUp("r2", None)]  # once
    actions, state = step(state, healthy(promoted_ready=True), 10_000)
    assert actions == [Promote("r2", None)] and state.phase is Phase.promoted


def test_pause_step_holds_before_the_next_weight_until_resumed() -> None:
    policy = Policy(**{**POLICY.__dict__, "pauses": (Pause(after=1),)})  # after 25 %
    state, log = run(initial(policy), lambda now: healthy(), start=0, ticks=12)
    assert state.paused and state.canary_weight == 25 and state.pause_reason == "pause step"
    state = resume(state, 2000)
    actions, state = step(state, healthy(), 2001)
    assert actions == [SetWeight(50)]  # the gate is passed once: the next analysis advances
    state, log = run(state, lambda now: healthy(), start=2100, ticks=6)
    assert promotions(log) == [Promote("r2", None)]


def test_timed_pause_step_resumes_by_itself() -> None:
    policy = Policy(**{**POLICY.__dict__, "pauses": (Pause(after=0, seconds=300),)})
    state, log = run(initial(policy), lambda now: healthy(), start=0, ticks=20)
    assert promotions(log) == [Promote("r2", None)]
    assert "resume" in [r.decision for r in state.history]


def test_confirm_promotion_webhook_holds_the_last_step() -> None:
    state, log = run(initial(), lambda now: healthy(promotion_confirmed=False), start=0, ticks=12)
    assert not promotions(log) and state.canary_weight == 100 and state.phase is Phase.progressing
    assert "confirm-promotion webhook" in state.history[-1].reasons[0]
    state, log = run(state, lambda now: healthy(promotion_confirmed=True), start=720, ticks=3)
    assert promotions(log) == [Promote("r2", None)]


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
    assert actions == [ScaleUp("r2", None)] and promoted.phase is Phase.promoting
    actions, promoted = step(promoted, healthy(), 112)
    assert actions == [Promote("r2", None)] and promoted.phase is Phase.promoted
    actions, promoted = step(promoted, healthy(), 113)
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
               max_error_rate=0.01, slo_p95_latency_ms=200, slo_error_rate=0.01, detect_error_increase=9.0, power=0.6)


LAYOUT = duration_buckets([200])  # the template's buckets for a 200 ms SLO


def hist(requests: float, p95_ms: float, sigma: float = 0.35) -> tuple:
    """Expected bucket counts (cumulative, +Inf last) of log-normal latencies with this p95."""
    median = p95_ms / 1000 / math.exp(1.6448536 * sigma)
    dist = NormalDist(math.log(median), sigma)
    return (*((le, requests * dist.cdf(math.log(le))) for le in LAYOUT), (math.inf, requests))


def cross_obs(canary_p95: float, weight: int, canary_price: float = 0.758, replicas: int = 4) -> Observations:
    """stable on 4 x g5.xlarge ($1.006/h), canary on 4 x inf2.xlarge: traffic split by the weight, and
    BOTH pools keep their full replica count (the Gateway API router), as measured on main."""
    total = 100.0
    stable = metrics("stable", p95=90, rps=total * (100 - weight) / 100, pool="gpu-a10g", replicas=replicas,
                     hourly_price=1.006, full_replicas=replicas,
                     latency_buckets=hist(total * (100 - weight) / 100 * 60, 90)) if weight < 100 else \
        VersionMetrics("stable", pool="gpu-a10g", requests_per_second=0.0, requests=0.0, replicas=replicas,
                       hourly_price=1.006, full_replicas=replicas)
    canary = metrics("canary", p95=canary_p95, rps=total * weight / 100, pool="inf2", replicas=replicas,
                     hourly_price=canary_price, full_replicas=replicas, latency_buckets=hist(total * weight / 100 * 60,
                                                                                            canary_p95))
    return Observations("r2", stable=stable, canary=canary, stable_pool="gpu-a10g", canary_pool="inf2",
                        promoted_ready=True)


@pytest.mark.parametrize("steps", [(5, 25, 50, 100), (25, 50, 100), (50, 100), (100,)])
def test_cross_pool_cheaper_pool_meeting_the_slo_is_promoted_at_any_weight_schedule(steps) -> None:
    # measured on main: at 100 % the empty stable read as "no data" (30 of 30 rolled back), and at 5 %
    # with 4 replicas a side inf2 cost $0.319 per 1k against $0.023 for g5 ("not cheaper", 30 of 30)
    policy = Policy(**{**CROSS.__dict__, "steps": steps})
    state = initial(policy, stable_pool="gpu-a10g")
    _, state = step(state, Observations("r2", canary_ready=False, stable_pool="gpu-a10g", canary_pool="inf2"), 0)
    _, state = step(state, Observations("r2", canary_ready=True, stable_pool="gpu-a10g", canary_pool="inf2",
                                        stable=metrics("stable", p95=90, rps=40, pool="gpu-a10g", replicas=4,
                                                       hourly_price=1.006, full_replicas=4)), 60)
    log = []
    now = 120.0
    for _ in range(12):
        actions, state = step(state, cross_obs(150, state.canary_weight), now)
        log.extend((now, a) for a in actions)
        now += 60
    assert promotions(log) == [Promote("r2", "inf2")], [r.reasons for r in state.history]
    assert state.stable_pool == "inf2" and state.phase is Phase.promoted
    judged = [r for r in state.history if r.decision in ("advance", "promoting") and r.canary]
    assert judged and all("canary pool is cheaper" in " ".join(r.reasons) for r in judged)


def _cross(policy: Policy, canary_p95: float, canary_price: float = 0.758) -> tuple[RolloutState, list]:
    state = initial(policy, stable_pool="gpu-a10g")
    _, state = step(state, Observations("r2", canary_ready=False, stable_pool="gpu-a10g", canary_pool="inf2"), 0)
    log: list = []
    now = 60.0
    for _ in range(14):
        actions, state = step(state, cross_obs(canary_p95, state.canary_weight, canary_price), now)
        log.extend((now, a) for a in actions)
        now += 60
    return state, log


def test_cross_pool_missing_the_slo_is_rolled_back() -> None:
    state, log = _cross(CROSS, canary_p95=320)
    assert not promotions(log)
    assert state.phase is Phase.rolled_back and state.stable_pool == "gpu-a10g"
    assert "FAILED p95 vs SLO" in state.outcome and "slower than 200 ms" in state.outcome


@pytest.mark.parametrize("cost_policy, phase", [("rollback", Phase.rolled_back), ("promote", Phase.promoted),
                                                ("confirm", Phase.progressing)])
def test_cross_pool_meeting_the_slo_but_dearer_follows_the_cost_policy(cost_policy, phase) -> None:
    state, log = _cross(Policy(**{**CROSS.__dict__, "cost_policy": cost_policy}), canary_p95=150, canary_price=1.30)
    assert state.phase is phase, state.history[-1].reasons
    why = " ".join(r for record in state.history for r in record.reasons)
    assert "costs more" in why
    if cost_policy == "confirm":  # the default: a person decides with `reconciler rollout promote`
        assert state.paused and state.pause_reason == "confirm promotion" and not promotions(log)
        state = request(state, "promote", 5000)
        _, state = step(state, cross_obs(150, 100, 1.30), 5001)
        assert state.phase is Phase.promoting


def test_default_cost_policy_is_confirm() -> None:
    assert Policy().cost_policy == "confirm"


def test_a_measurement_error_of_one_model_stays_its_own_and_of_several_is_one_outage() -> None:
    """rollout/outage.py: the same error in two or more models' ticks is one Outage for the environment (naming
    them, and those it paused); one model's error stays in its own line."""
    from types import SimpleNamespace

    from reconciler.rollout.outage import POINTER, shared_outage

    def result(model: str, error: str | None, paused: bool = False):
        state = SimpleNamespace(paused=paused, pause_reason="measurement error" if paused else None)
        message = f"metrics unavailable: {error}" if error else "advance: weight 20%"
        return SimpleNamespace(model=model, message=message, metrics_error=error, state=state)

    down = "Prometheus at http://p:9090 is unreachable: ConnectError"
    alone, messages = shared_outage([result("a", down), result("b", None)])
    assert alone is None and messages["a"] == f"metrics unavailable: {down}"
    outage, messages = shared_outage([result("c", down, paused=True), result("a", down), result("b", None)])
    assert outage is not None and outage.models == ("a", "c") and outage.paused == ("c",)
    assert down in outage.line() and "2 models (a, c)" in outage.line()
    assert messages == {"a": f"metrics unavailable: {POINTER}", "c": f"metrics unavailable: {POINTER}",
                        "b": "advance: weight 20%"}
