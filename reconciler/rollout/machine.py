"""The canary state machine: ``step(state, observations, now) -> (actions, new_state)``. Pure.

No I/O, no clock: the caller passes the time and what it observed; the machine returns what must
be done (idempotent actions) and the next state. The state records what was promoted, so running
the same step twice, or after a restart from persisted state, never promotes twice.

Flow for one canary revision::

    stable --(new revision)--> initializing (weight 0) --(canary ready)--> progressing step 0
    progressing --(check passes)--> next step ... --(last step passes)--> promoted
    progressing --(check fails)--> hold; failed_checks += 1 --(>= failure_threshold)--> rolled_back
    any active --(no progress for progress_deadline)--> rolled_back
    any active --(another new revision)--> initializing again at weight 0 (analysis restarts)

Pause freezes the machine (no analysis, no weight change, deadline clock stopped); resume restarts
the deadline and analysis clocks. Promote / abort requested by a user take effect on the next step.
"""

from __future__ import annotations

from dataclasses import dataclass

from reconciler.rollout.judge import judge
from reconciler.rollout.metrics import VersionMetrics
from reconciler.rollout.state import Phase, RolloutState, StepRecord

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


@dataclass(frozen=True)
class SetWeight:
    """Send ``canary_weight`` % of traffic to the canary and the rest to the stable version."""

    canary_weight: int


@dataclass(frozen=True)
class DeployCanary:
    """Make the canary Deployment run ``revision`` (in ``pool``), receiving no traffic yet."""

    revision: str
    pool: str | None = None


@dataclass(frozen=True)
class Promote:
    """Make ``revision`` the stable version (in ``pool``), all traffic to it, remove the canary."""

    revision: str
    pool: str | None = None


@dataclass(frozen=True)
class Rollback:
    """All traffic back to the stable version; remove the canary of ``revision``."""

    revision: str
    reason: str


RolloutAction = SetWeight | DeployCanary | Promote | Rollback


def _record(state: RolloutState, now: float, decision: str, reasons: tuple[str, ...] | list[str],
            obs: Observations | None = None) -> RolloutState:
    record = StepRecord(at=now, revision=state.canary_revision, step_index=state.step_index,
                        canary_weight=state.canary_weight, decision=decision, reasons=tuple(reasons),
                        stable=obs.stable.summary() if obs and obs.stable else None,
                        canary=obs.canary.summary() if obs and obs.canary else None)
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
                       failed_checks=0, started_at=now, progress_at=now, last_analysis_at=None,
                       requested=None, outcome=None,
                       stable_pool=obs.stable_pool or state.stable_pool, canary_pool=pool)
    return actions, _record(new, now, "restart" if restarting else "start", (reason,))


def _promote(state: RolloutState, now: float, reasons: list[str] | tuple[str, ...],
             obs: Observations | None) -> tuple[list[RolloutAction], RolloutState]:
    revision = state.canary_revision
    assert revision is not None
    if state.promoted_revision == revision:  # already promoted: never twice
        return [], state
    new = state.evolve(phase=Phase.promoted, stable_revision=revision, promoted_revision=revision,
                       promotions=state.promotions + 1, canary_weight=0, requested=None,
                       stable_pool=state.canary_pool or state.stable_pool, progress_at=now,
                       outcome=f"promoted {revision}: " + "; ".join(reasons))
    return [Promote(revision, new.stable_pool)], _record(new, now, "promote", reasons, obs)


def _rollback(state: RolloutState, now: float, reasons: list[str] | tuple[str, ...],
              obs: Observations | None) -> tuple[list[RolloutAction], RolloutState]:
    revision = state.canary_revision or ""
    summary = "; ".join(reasons)
    new = state.evolve(phase=Phase.rolled_back, canary_weight=0, requested=None,
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
    if state.requested == "promote":
        return _promote(state, now, ["promoted by a user"], obs)
    if state.paused:
        return [], state

    policy = state.policy
    deadline = policy.progress_deadline_seconds
    if state.progress_at is not None and now - state.progress_at > deadline:
        return _rollback(state, now, [f"no progress for {now - state.progress_at:.0f}s, beyond the progress "
                                      f"deadline of {deadline}s"], obs)

    if state.phase is Phase.initializing:
        if not obs.canary_ready:
            return [], state
        weight = policy.steps[0]
        new = state.evolve(phase=Phase.progressing, step_index=0, canary_weight=weight,
                           progress_at=now, last_analysis_at=now)
        return [SetWeight(weight)], _record(new, now, "advance", (f"canary ready: weight {weight}%",))

    if state.last_analysis_at is not None and now - state.last_analysis_at < policy.interval_seconds:
        return [], state  # not yet time for the next analysis

    verdict = judge(policy, obs.stable, obs.canary, cross_pool=state.cross_pool,
                    canary_weight=state.canary_weight)
    state = state.evolve(last_analysis_at=now)
    if verdict.passed:
        if state.step_index >= len(policy.steps) - 1:
            return _promote(state, now, [f"all {len(policy.steps)} steps passed", *verdict.reasons], obs)
        index = state.step_index + 1
        weight = policy.steps[index]
        new = state.evolve(step_index=index, canary_weight=weight, progress_at=now)
        return [SetWeight(weight)], _record(new, now, "advance", (f"weight {weight}%", *verdict.reasons), obs)
    failed = state.failed_checks + 1
    state = state.evolve(failed_checks=failed)
    if failed >= policy.failure_threshold:
        return _rollback(state, now, [f"{failed} failed checks reached the threshold {policy.failure_threshold}",
                                      *verdict.reasons], obs)
    return [], _record(state, now, "hold", (f"failed check {failed}/{policy.failure_threshold}: weight stays "
                                             f"{state.canary_weight}%", *verdict.reasons), obs)


# --------------------------------------------------------------------------- user commands (pure)


def pause(state: RolloutState, now: float) -> RolloutState:
    if state.paused or not state.phase.active:
        return state
    return _record(state.evolve(paused=True), now, "pause", ("paused by a user",))


def resume(state: RolloutState, now: float) -> RolloutState:
    if not state.paused:
        return state
    # restart both clocks: time spent paused counts neither against the deadline nor as analysis
    new = state.evolve(paused=False, progress_at=now, last_analysis_at=now if state.last_analysis_at else None)
    return _record(new, now, "resume", ("resumed by a user",))


def request(state: RolloutState, command: str, now: float) -> RolloutState:
    """Record a user's promote / abort; the next ``step`` acts on it (also when paused)."""
    if command not in ("promote", "abort"):
        raise ValueError(f"unknown rollout command {command!r}")
    if not state.phase.active:
        return state
    new = state.evolve(requested=command, paused=False)
    return _record(new, now, f"request-{command}", (f"{command} requested by a user",))
