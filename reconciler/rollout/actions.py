"""What a rollout step asks the controller to do: the machine's (machine.step) outputs, as data.

The controller (controller.py) turns each into writes through the traffic router and the cluster; the
report (report/github.py) reads Promote and Rollback. Split from machine.py by verb: these are the
nouns the machine and the controller share.
"""

from __future__ import annotations

from dataclasses import dataclass


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
class ScaleUp:
    """Promoting: run ``revision`` as the stable version at full size (in ``pool``); traffic stays."""

    revision: str
    pool: str | None = None


@dataclass(frozen=True)
class Promote:
    """``revision`` (in ``pool``) is ready at full size: all traffic to it, remove the old version."""

    revision: str
    pool: str | None = None


@dataclass(frozen=True)
class Rollback:
    """All traffic back to the stable version; remove the canary of ``revision``."""

    revision: str
    reason: str


RolloutAction = SetWeight | DeployCanary | ScaleUp | Promote | Rollback
