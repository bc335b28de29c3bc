"""The replica router: no mesh. The model's Service ``<model>`` selects both tracks, so kube-proxy spreads
requests by ready pods; the controller sizes the canary Deployment alone (``rollout.objects.canary_replicas``,
never the stable's replicas, which an HPA may own) and reports the weight the ready pods achieve (its
``verify``). Whole replicas make weights coarse, so the weight shown is the achieved one. No header
routing, no mirroring, no options.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from reconciler.errors import ReconcilerError
from reconciler.traffic.base import Backends, Change, RouterKind, Traffic, register, with_capability


@dataclass(frozen=True)
class ReplicaRouter:
    name: str = "replicas"

    def changes(self, backends: Backends, traffic: Traffic) -> list[Change]:
        if traffic.header is not None or traffic.mirror_percent:
            raise ReconcilerError("the replica-ratio router cannot route by header or mirror traffic",
                                  fix="set canary.router to one of " + ", ".join(with_capability("header_routing"))
                                      + " in the model or environment spec")
        return []  # no route object: the canary Deployment's size is the weight


def achieved_by_ready_pods(weight: int, stable_ready: int, canary_ready: int) -> float:
    """The share of requests kube-proxy gives the canary: its share of the ready pods (%)."""
    total = stable_ready + canary_ready
    return 100.0 * canary_ready / total if total else 0.0


def _make(options: Any, domain: str | None) -> ReplicaRouter:
    return ReplicaRouter()


register(RouterKind("replicas", weight_by="replicas", header_routing=False, mirroring=False, make=_make,
                    verify=achieved_by_ready_pods))
