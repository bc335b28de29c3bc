"""The canary's warm-up, derived from the model (issue 21): how long after a weight increase is not judged.

Argo Rollouts calls it ``initialDelay``. A new pod that has just become ready still serves its first
requests slowly (caches, lazy loads, CUDA or Neuron graphs), and a cold start is not a regression; a canary
that stays slow after its warm-up is. The model says how long that is:

- ``canary.warmup`` in its spec (or its environment's defaults) when declared;
- else from the probes rendered for its Deployment: at least the time its readiness probe takes to vouch for
  a pod (``periodSeconds`` x ``failureThreshold``: within it, a pod that turns unready again is still being
  routed to), and a tenth of its startup budget (the startupProbe's ``periodSeconds`` x ``failureThreshold``,
  i.e. ``serving.startup`` or its pool kind's default): a model allowed minutes to load (an accelerator
  loading weights into device memory or compiling graphs) also warms for longer once it serves.

With the template's probes: a CPU model (startup budget 120 s, readiness every 5 s) gets 15 s, a GPU or
Inferentia model (600 s) 60 s.
"""

from __future__ import annotations

import math
from typing import Any

READINESS_FAILURES = 3   # Kubernetes' default readiness failureThreshold
STARTUP_SHARE = 0.1      # of the startup budget


def default_warmup(readiness_period: float, startup_budget: float, readiness_failures: int = READINESS_FAILURES) -> int:
    """Seconds not judged after a weight increase, from the probes' figures (see the module docstring)."""
    return int(math.ceil(max(readiness_period * readiness_failures, startup_budget * STARTUP_SHARE, 0.0)))


def _budget(probe: Any, default_period: int) -> tuple[float, int]:
    if not isinstance(probe, dict):
        return 0.0, 0
    period = float(probe.get("periodSeconds") or default_period)
    failures = int(probe.get("failureThreshold") or READINESS_FAILURES)
    return period, failures


def warmup_from_deployment(deployment: dict) -> int | None:
    """The warm-up of a rendered Deployment's pods (its first container's probes); None without probes."""
    containers = (((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or []
    if not containers or not isinstance(containers[0], dict):
        return None
    container = containers[0]
    ready_period, ready_failures = _budget(container.get("readinessProbe"), 10)
    start_period, start_failures = _budget(container.get("startupProbe"), 10)
    if not ready_period and not start_period:
        return None
    return default_warmup(ready_period, start_period * start_failures + float(
        (container.get("startupProbe") or {}).get("initialDelaySeconds") or 0), ready_failures or READINESS_FAILURES)


def model_warmup(declared: int | None, deployments: list[dict]) -> tuple[int, str]:
    """(seconds, where they come from): the declared ``canary.warmup``, else the longest of the model's
    Deployments' derived warm-ups, else 60 s (no probes to read)."""
    if declared is not None:
        return declared, "canary.warmup"
    derived = [w for w in (warmup_from_deployment(d) for d in deployments) if w is not None]
    if derived:
        return max(derived), "the model's readiness and startup probes"
    return FALLBACK_WARMUP, "no probes to derive it from"


FALLBACK_WARMUP = 60
