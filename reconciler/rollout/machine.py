"""The canary state machine: ``step(state, observations, now) -> (actions, new_state)``. Pure.

No I/O, no clock: the caller passes the time and what it observed; the machine returns what must
be done (idempotent actions) and the next state. The state records what was promoted, so running
the same step twice, or after a restart from persisted state, never promotes twice.

Flow for one canary revision (issue 21: every look judges the rollout's counts so far, see judge.py)::

    stable --(new revision)--> initializing (weight 0; stable's last hour read once as its baseline)
        --(canary ready)--> progressing step 0 (the first ``warmup`` seconds not judged)
    progressing --(no check fails, the step has minRequests, no check looks worse)--> next weight (warm-up again)
    progressing, last step --(no check fails, the guard's sample complete)--> promoting --> promoted
    progressing --(a check fails at the alpha this look spends)--> hold; failed_checks += 1
        --(confirmed by the next looks, >= failure_threshold)--> rolled_back; a look that does not confirm clears it
    progressing --(nothing wrong, more requests needed)--> wait (progress); paused with the figure when they
        would take longer than the progress deadline
    progressing --(inconclusive: no canary traffic ...)--> hold; inconclusive_checks += 1 --(>= inconclusive_limit)-->
        paused for a person, or rolled_back (policy.on_inconclusive)
    progressing --(measurement error: no metrics)--> hold; measurement_errors += 1 --(>= measurement_error_limit)-->
        paused, or rolled_back (policy.on_measurement_error); neither failed nor inconclusive
    any active --(no progress for progress_deadline)--> rolled_back
    any active --(another new revision)--> initializing again at weight 0 (analysis restarts)

A step only advances while the canary is ready (``Observations.canary_ready``): a canary with no
ready pod never gets more traffic. ``promoting`` keeps all traffic where it is while the promoted
version scales to its full size; only once it is ready at full size (``Observations.promoted_ready``)
is the old version let go (``Promote``), so a ``maxSurge: 0`` GPU pool never loses capacity.

Manual gates: a pause step (``policy.pauses``) and the cost policy ``confirm`` pause the rollout
with a reason; a confirm-promotion webhook (``Observations.promotion_confirmed`` False) holds the
last step. Pause freezes the machine (no analysis, no weight change, deadline clock stopped); resume
restarts the deadline and analysis clocks. Promote / abort requested by a user take effect on the
next step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from reconciler.rollout.actions import DeployCanary, Promote, Rollback, RolloutAction, ScaleUp, SetWeight
from reconciler.rollout.evidence import accumulate
from reconciler.rollout.judge import Verdict, judge
from reconciler.rollout.metrics import VersionMetrics
from reconciler.rollout.state import Evidence, Phase, Policy, RolloutState, StepRecord

MAX_HISTORY = 200


@dataclass(frozen=True)
class Observations:
    """What the controller saw this tick.

    ``revision`` is the revision the environment wants (model hash / image); ``canary_ready`` says
    the canary Deployment is available; ``stable``/``canary`` are the last interval's metrics (None
    when Prometheus had nothing). ``stable_pool``/``canary_pool`` name the pools serving each track.
    """

    revision: str
    canary_ready: bool = True
    stable: VersionMetrics | None = None
    canary: VersionMetrics | None = None
    stable_pool: str | None = None
    canary_pool: str | None = None
    achieved_weight: float | None = None     # the canary's real share of traffic (%), when the router knows it
    promoted_ready: bool = False             # promoting: the new version is ready at full size
    promotion_confirmed: bool | None = None  # the confirm-promotion webhook's answer (None: no webhook)
    metrics_error: str | None = None         # why there are no metrics this tick (Prometheus down ...)
    # stable's recent windows, oldest first (``history_layout``): read once, when a canary starts, so the
    # comparison and the dispersion estimate have stable's recent past and not one interval of it
    stable_history: tuple[VersionMetrics, ...] = ()


HISTORY_SECONDS = 3600  # stable's past read when a canary starts
HISTORY_WINDOWS = 24


def history_layout(interval_seconds: int) -> tuple[int, int]:
    """(windows, seconds each) of stable's history read when a canary starts: at least an interval or
    150 s each, at most 24, over the last hour."""
    seconds = max(int(interval_seconds), 150)
    return max(1, min(HISTORY_WINDOWS, HISTORY_SECONDS // seconds)), seconds




def _record(state: RolloutState, now: float, decision: str, reasons: tuple[str, ...] | list[str],
            obs: Observations | None = None) -> RolloutState:
    record = StepRecord(at=now, revision=state.canary_revision, step_index=state.step_index,
                        canary_weight=state.canary_weight, decision=decision, reasons=tuple(reasons),
                        stable=obs.stable.summary() if obs and obs.stable else None,
                        canary=obs.canary.summary() if obs and obs.canary else None,
                        achieved_weight=state.achieved_weight)
    history = (*state.history, record)[-MAX_HISTORY:]
    return state.evolve(history=history, generation=state.generation + 1)


def _start(state: RolloutState, obs: Observations, now: float) -> tuple[list[RolloutAction], RolloutState]:
    restarting = state.phase.active
    actions: list[RolloutAction] = []
    if state.canary_weight:
        actions.append(SetWeight(0))
    pool = obs.canary_pool or state.canary_pool or state.stable_pool
    actions.append(DeployCanary(obs.revision, pool))
    reason = (f"new revision {obs.revision} replaces canary {state.canary_revision}: analysis restarts at weight 0"
              if restarting else f"new revision {obs.revision}: canary starts at weight 0")
    new = state.evolve(phase=Phase.initializing, canary_revision=obs.revision, step_index=-1, canary_weight=0,
                       failed_checks=0, inconclusive_checks=0, measurement_errors=0, evidence=_fresh(state.evidence),
                       started_at=now, progress_at=now, last_analysis_at=None, achieved_weight=0.0,
                       requested=None, outcome=None, paused=False, pause_reason=None, pause_until=None,
                       stable_pool=obs.stable_pool or state.stable_pool, canary_pool=pool)
    return actions, _record(new, now, "restart" if restarting else "start", (reason,))


def _fresh(evidence: Evidence) -> Evidence:
    """Evidence for a new canary revision: counts start again, the stable's baseline stays."""
    return Evidence(baseline=evidence.baseline)


def _promote(state: RolloutState, now: float, reasons: list[str] | tuple[str, ...],
             obs: Observations | None) -> tuple[list[RolloutAction], RolloutState]:
    """Judged good: scale the new version to full size first (phase promoting); traffic stays."""
    revision = state.canary_revision
    assert revision is not None
    if state.promoted_revision == revision:  # already promoted: never twice
        return [], state
    pool = state.canary_pool or state.stable_pool
    new = state.evolve(phase=Phase.promoting, requested=None, paused=False, pause_reason=None, pause_until=None,
                       progress_at=now, outcome=f"promoting {revision}: " + "; ".join(reasons))
    return [ScaleUp(revision, pool)], _record(new, now, "promoting", (
        *reasons, f"{revision} scales to full size in {pool}; the old version stays until it is ready"), obs)


def _promoted(state: RolloutState, now: float, obs: Observations) -> tuple[list[RolloutAction], RolloutState]:
    revision = state.canary_revision
    assert revision is not None
    reasons = (state.outcome or "").removeprefix(f"promoting {revision}: ")
    new = state.evolve(phase=Phase.promoted, stable_revision=revision, promoted_revision=revision,
                       replaced_revision=state.stable_revision, replaced_pool=state.stable_pool,
                       promotions=state.promotions + 1, canary_weight=0, achieved_weight=None, requested=None,
                       stable_pool=state.canary_pool or state.stable_pool, progress_at=now,
                       outcome=f"promoted {revision}: {reasons}")
    return [Promote(revision, new.stable_pool)], _record(new, now, "promote", (
        f"{revision} is ready at full size: traffic moves to it and the old version is removed",), obs)


def _rollback(state: RolloutState, now: float, reasons: list[str] | tuple[str, ...],
              obs: Observations | None) -> tuple[list[RolloutAction], RolloutState]:
    revision = state.canary_revision or ""
    summary = "; ".join(reasons)
    new = state.evolve(phase=Phase.rolled_back, canary_weight=0, achieved_weight=0.0, requested=None,
                       paused=False, pause_reason=None, pause_until=None,
                       outcome=f"rolled back {revision}: {summary}")
    return [SetWeight(0), Rollback(revision, summary)], _record(new, now, "rollback", reasons, obs)


def step(state: RolloutState, observations: Observations, now: float) -> tuple[list[RolloutAction], RolloutState]:
    """Advance the rollout by one tick. Returns idempotent actions and the new state."""
    obs = observations
    if obs.revision == state.stable_revision:
        if state.phase.active:  # desired went back to the stable revision (a revert): drop the canary
            return _rollback(state, now, [f"desired revision is the stable {obs.revision} again"], obs)
        return [], state
    if state.stable_revision is None:  # first deployment ever: nothing to compare with, adopt directly
        new = state.evolve(phase=Phase.stable, stable_revision=obs.revision, stable_pool=obs.canary_pool
                           or obs.stable_pool, canary_pool=None, canary_weight=0)
        return [Promote(obs.revision, new.stable_pool)], _record(
            new, now, "adopt", (f"first revision {obs.revision}: no stable version to compare with",))
    if obs.revision != state.canary_revision:
        return _start(state, obs, now)
    if not state.phase.active:  # promoted or rolled back: terminal for this revision
        return [], state

    if state.requested == "abort":
        return _rollback(state, now, ["aborted by a user"], obs)
    if state.phase is Phase.promoting:
        if obs.promoted_ready:
            return _promoted(state, now, obs)
        return [], state  # traffic stays where it is until the new version is ready at full size
    if state.requested == "promote":
        return _promote(state, now, ["promoted by a user"], obs)
    if state.paused:
        if state.pause_until is not None and now >= state.pause_until:
            state = _record(state.evolve(paused=False, pause_reason=None, pause_until=None, progress_at=now,
                                         last_analysis_at=None, gate_cleared=state.step_index), now, "resume",
                            ("timed pause step is over",))
        else:
            return [], state

    policy = state.policy
    deadline = policy.progress_deadline_seconds
    if state.progress_at is not None and now - state.progress_at > deadline:
        return _rollback(state, now, [f"no progress for {now - state.progress_at:.0f}s, beyond the progress "
                                      f"deadline of {deadline}s"], obs)

    if state.phase is Phase.initializing:
        if obs.stable_history and not state.evidence.windows:
            evidence = state.evidence
            for window in obs.stable_history:
                evidence = accumulate(evidence, window, None, policy.min_requests)
            state = state.evolve(evidence=evidence, last_analysis_at=now)
        elif obs.stable is not None and obs.stable.has_data and (
                state.last_analysis_at is None or now - state.last_analysis_at >= policy.interval_seconds):
            # stable serves everything now: its windows are the baseline the canary is compared with
            state = state.evolve(evidence=accumulate(state.evidence, obs.stable, None, policy.min_requests),
                                 last_analysis_at=now)
        if not obs.canary_ready:
            return [], state
        weight = policy.steps[0]
        new = state.evolve(phase=Phase.progressing, step_index=0, canary_weight=weight,
                           progress_at=now, last_analysis_at=now + policy.warmup_seconds,
                           evidence=state.evidence.next_step())
        return [SetWeight(weight)], _record(new, now, "advance", (f"canary ready: weight {weight}%" + _warmup(policy),))

    if state.last_analysis_at is not None and now - state.last_analysis_at < policy.interval_seconds:
        return [], state  # not yet time for the next analysis (or still in the warm-up after a weight change)

    if obs.achieved_weight is not None:  # what the router really gave the canary over this interval
        state = state.evolve(achieved_weight=obs.achieved_weight)
    if obs.canary is None and obs.metrics_error:
        return _measurement_error(state.evolve(last_analysis_at=now), now, obs)
    evidence = accumulate(state.evidence, obs.stable, obs.canary, policy.min_requests)
    state = state.evolve(last_analysis_at=now, evidence=evidence, measurement_errors=0)
    verdict = judge(policy, obs.stable, obs.canary, evidence=evidence, cross_pool=state.cross_pool,
                    canary_weight=state.canary_weight, confirming=state.failed_checks > 0)
    if verdict.evidence is not None:  # the spending of this look, the guard's answer, which test decided
        state = state.evolve(evidence=verdict.evidence)
    if verdict.inconclusive:
        return _inconclusive(state, now, verdict, obs)
    if verdict.failed:
        failed = state.failed_checks + 1
        state = state.evolve(failed_checks=failed, inconclusive_checks=0)
        if failed >= policy.failure_threshold:
            return _rollback(state, now, [f"{failed} failed looks in a row reached the threshold "
                                          f"{policy.failure_threshold}", *verdict.reasons], obs)
        return [], _record(state, now, "hold", (f"failed look {failed}/{policy.failure_threshold}: weight stays "
                                                 f"{state.canary_weight}%; the next look confirms or clears it",
                                                 *verdict.reasons), obs)
    # nothing wrong: a failure is cleared by a look that does not confirm it
    state = state.evolve(inconclusive_checks=0, failed_checks=0)
    if not obs.canary_ready:
        return [], _record(state, now, "hold", (f"canary not ready: weight stays {state.canary_weight}%",
                                                 *verdict.reasons), obs)
    last = state.step_index >= len(policy.steps) - 1
    if last and not (verdict.enough or verdict.accepted):
        return _wait(state, now, verdict, obs, (verdict.needed_requests or 0) - state.evidence.canary_requests,
                     f"the guard's {verdict.needed_requests} canary requests (to detect {verdict.detect})")
    if not last and verdict.suspicious:  # exposure: no more weight while a check looks worse
        # not a failure: it never rolls back (neither itself nor through the progress deadline); held for
        # twice the progress deadline in a row (the looks meanwhile fail or clear it), a person decides
        held, since = 1, now
        for record in reversed(state.history):
            if record.decision != "hold" or not record.reasons or "looks worse" not in record.reasons[0]:
                break
            held, since = held + 1, record.at
        if held > 1 and now - since >= 2 * policy.progress_deadline_seconds:
            new = state.evolve(paused=True, pause_reason="looks worse", progress_at=now)
            return [], _record(new, now, "pause", (
                f"paused after {held} looks in a row where {verdict.suspicious}: a person decides (resume, promote "
                "or abort)", *verdict.reasons), obs)
        state = state.evolve(progress_at=now)
        return [], _record(state, now, "hold", (f"weight stays {state.canary_weight}%: {verdict.suspicious}",
                                                 *verdict.reasons), obs)
    if not last and state.evidence.step_requests < policy.min_requests:
        return _wait(state, now, verdict, obs, policy.min_requests - state.evidence.step_requests,
                     f"the step's minimum of {policy.min_requests} canary requests (minRequests)")
    if last:
        return _last_step_passed(state, now, verdict, obs)
    index = state.step_index + 1
    weight = policy.steps[index]
    new = state.evolve(step_index=index, canary_weight=weight, progress_at=now,
                       last_analysis_at=now + policy.warmup_seconds, evidence=state.evidence.next_step())
    actions: list[RolloutAction] = [SetWeight(weight)]
    gate = policy.pause_after(state.step_index)
    if gate is not None and state.gate_cleared != state.step_index:  # a pause step: hold before the next weight
        new = state.evolve(progress_at=now, paused=True, pause_until=None if gate.seconds is None else now + gate.seconds,
                           pause_reason="pause step" + ("" if gate.seconds is None else f" of {gate.seconds}s"))
        how = ("until `reconciler rollout resume`" if gate.seconds is None else f"for {gate.seconds}s")
        return [], _record(new, now, "pause", (f"pause step after {state.canary_weight}%: holding {how}",
                                               *verdict.reasons), obs)
    return actions, _record(new, now, "advance", (f"weight {weight}%" + _warmup(policy), *verdict.reasons), obs)


def _warmup(policy: Policy) -> str:
    return (f"; the first {policy.warmup_seconds}s (warm-up of the new pods) are not judged"
            if policy.warmup_seconds else "")


def _wait(state: RolloutState, now: float, verdict: Verdict, obs: Observations, missing: int,
          what: str) -> tuple[list[RolloutAction], RolloutState]:
    """Nothing wrong, more requests needed: hold the weight while they come (progress), unless at the
    canary's present rate they would take longer than the progress deadline: then pause with the figure."""
    policy = state.policy
    rate = obs.canary.requests_per_second if obs.canary is not None else None
    eta = missing / rate if rate and rate > 0 else math.inf
    # the guard's figure settles as stable's and the canary's counts grow: judge the projection only after
    # inconclusive_limit looks in a row that waited (a canary with no traffic at all pauses at once)
    waited = 0
    for record in reversed(state.history):
        if record.decision != "wait":
            break
        waited += 1
    if eta > policy.progress_deadline_seconds and (waited + 1 >= policy.inconclusive_limit or math.isinf(eta)):
        how_long = "never at no traffic" if math.isinf(eta) else f"about {_duration(eta)} at {rate:.2g} req/s"
        new = state.evolve(paused=True, pause_reason="not enough traffic", progress_at=now)
        return [], _record(new, now, "pause", (
            f"paused: {missing} more canary requests are needed for {what}, {how_long}, beyond the progress "
            f"deadline of {_duration(policy.progress_deadline_seconds)}; `reconciler rollout promote` accepts the "
            f"evidence so far, `abort` rolls back", *verdict.reasons), obs)
    state = state.evolve(progress_at=now)
    return [], _record(state, now, "wait", (f"weight stays {state.canary_weight}%: {missing} more canary requests "
                                            f"needed for {what}, about {_duration(eta)} at {rate:.2g} req/s",
                                            *verdict.reasons), obs)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _measurement_error(state: RolloutState, now: float, obs: Observations) -> tuple[list[RolloutAction], RolloutState]:
    """Prometheus could not be asked: not a verdict on the canary (Argo Rollouts' Error, apart from
    Inconclusive). Consecutive ones past the limit pause, or roll back where the policy says."""
    policy = state.policy
    count = state.measurement_errors + 1
    state = state.evolve(measurement_errors=count)
    why = f"measurement error {count}/{policy.measurement_error_limit}: {obs.metrics_error}"
    if count < policy.measurement_error_limit:
        return [], _record(state, now, "error", (f"{why}: weight stays {state.canary_weight}%, not a failure",), obs)
    if policy.on_measurement_error == "rollback":
        return _rollback(state, now, [f"{why}: the limit is reached and onMeasurementError is rollback"], obs)
    new = state.evolve(paused=True, pause_reason="measurement error", progress_at=now)
    return [], _record(new, now, "pause", (f"{why}: paused until metrics come back (resume), or promote/abort",), obs)


def _last_step_passed(state: RolloutState, now: float, verdict: Verdict,
                      obs: Observations) -> tuple[list[RolloutAction], RolloutState]:
    policy = state.policy
    reasons = [f"all {len(policy.steps)} steps passed", *verdict.reasons]
    if obs.promotion_confirmed is False:
        return [], _record(state, now, "hold", ("the confirm-promotion webhook has not confirmed: waiting",
                                                 *verdict.reasons), obs)
    if verdict.needs_confirmation:
        new = state.evolve(paused=True, pause_reason="confirm promotion", progress_at=now)
        return [], _record(new, now, "pause", ("the canary pool costs more: waiting for a person to run "
                                               "`reconciler rollout promote` (or abort)", *verdict.reasons), obs)
    return _promote(state, now, reasons, obs)


def _inconclusive(state: RolloutState, now: float, verdict: Verdict,
                  obs: Observations) -> tuple[list[RolloutAction], RolloutState]:
    policy = state.policy
    count = state.inconclusive_checks + 1
    state = state.evolve(inconclusive_checks=count)
    if count < policy.inconclusive_limit:
        return [], _record(state, now, "inconclusive", (
            f"inconclusive {count}/{policy.inconclusive_limit}: weight stays {state.canary_weight}%",
            *verdict.reasons), obs)
    why = f"{count} inconclusive analyses reached the limit {policy.inconclusive_limit}"
    if policy.on_inconclusive == "rollback":
        return _rollback(state, now, [why, *verdict.reasons], obs)
    new = state.evolve(paused=True, pause_reason="inconclusive", progress_at=now)
    return [], _record(new, now, "pause", (f"{why}: paused for a person (resume, promote or abort)",
                                           *verdict.reasons), obs)


# --------------------------------------------------------------------------- user commands (pure)


def pause(state: RolloutState, now: float) -> RolloutState:
    if state.paused or not state.phase.active:
        return state
    return _record(state.evolve(paused=True, pause_reason="paused by a user", pause_until=None), now, "pause",
                   ("paused by a user",))


def resume(state: RolloutState, now: float) -> RolloutState:
    if not state.paused:
        return state
    # restart both clocks: time spent paused counts neither against the deadline nor as analysis
    gate = state.pause_reason is not None and state.pause_reason.startswith("pause step")
    # a pause step that is over lets the next analysis advance at once; otherwise a whole interval is measured
    new = state.evolve(paused=False, pause_reason=None, pause_until=None, inconclusive_checks=0, measurement_errors=0,
                       progress_at=now,
                       last_analysis_at=None if gate else (now if state.last_analysis_at else None),
                       gate_cleared=state.step_index if gate else state.gate_cleared)
    return _record(new, now, "resume", ("resumed by a user",))


def request(state: RolloutState, command: str, now: float) -> RolloutState:
    """Record a user's promote / abort; the next ``step`` acts on it (also when paused)."""
    if command not in ("promote", "abort"):
        raise ValueError(f"unknown rollout command {command!r}")
    if not state.phase.active:
        return state
    new = state.evolve(requested=command, paused=False)
    return _record(new, now, f"request-{command}", (f"{command} requested by a user",))
