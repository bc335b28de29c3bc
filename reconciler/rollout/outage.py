"""A shared metrics outage, reported once for the environment (issue 21). Pure.

Every model of an environment is analysed through one Prometheus. When it cannot be asked, each model's tick
gets the same measurement error (Argo Rollouts' Error, apart from Inconclusive): each holds its weight, and
pauses at its ``measurementErrorLimit``, as it must. What must not happen is one alarm per model for one
cause: the pass reports the outage once, for the environment, naming the models it holds, and each model's own
line points at it instead of repeating it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

POINTER = "the environment's metrics outage (reported once for the environment)"


@dataclass(frozen=True)
class Outage:
    error: str                  # the measurement error, as the models got it
    models: tuple[str, ...]     # the models it held this pass
    paused: tuple[str, ...]     # of those, the ones now paused by it (their measurementErrorLimit reached)

    def line(self) -> str:
        held = ", ".join(self.models)
        paused = (f"; paused (measurementErrorLimit reached): {', '.join(self.paused)}" if self.paused else "")
        return (f"metrics outage: {self.error}. It holds the canaries of {len(self.models)} models ({held}) at their "
                f"weights: a measurement error, neither a pass nor a failure{paused}. They go on when Prometheus "
                "answers (`reconciler rollout resume` for a paused one)")


def shared_outage(results: Sequence[Any]) -> tuple[Outage | None, dict[str, str]]:
    """(the outage, each model's message): when two or more models' ticks got the same measurement error, one
    Outage for the environment, and those models' messages with the error replaced by a pointer to it. ``results``
    are controller.RolloutResult (``model``, ``message``, ``metrics_error``, ``state``)."""
    messages = {r.model: r.message for r in results}
    by_error: dict[str, list[Any]] = {}
    for r in results:
        if getattr(r, "metrics_error", None):
            by_error.setdefault(r.metrics_error, []).append(r)
    if not by_error:
        return None, messages
    error, hit = max(by_error.items(), key=lambda item: len(item[1]))
    if len(hit) < 2:
        return None, messages
    for r in hit:
        messages[r.model] = r.message.replace(error, POINTER)
    paused = tuple(sorted(r.model for r in hit if r.state.paused and r.state.pause_reason == "measurement error"))
    return Outage(error, tuple(sorted(r.model for r in hit)), paused), messages
