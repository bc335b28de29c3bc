"""Canary rollouts: a pure state machine, judges, traffic routers, Prometheus analysis, persistence.

Layout (decisions pure, I/O at the edges):
- ``state``       RolloutState / Policy / StepRecord, serialisable to a plain dict (JSON)
- ``metrics``     VersionMetrics: what analysis observed for one version (stable or canary) of a model
- ``judge``       threshold, Mann-Whitney U (Kayenta-style) and cross-pool (SLO + cost) verdicts
- ``machine``     ``step(state, observations, now) -> (actions, new_state)`` and the user commands
- ``routers``     HTTPRoute / VirtualService / replica-ratio: desired object changes as dicts
- ``prometheus``  PromQL defaults and an httpx client (errors -> MetricsError)
- ``store``       the state persisted in a ConfigMap ``rollout-<model>`` per environment
- ``controller``  ``reconcile_rollout(...)``: the entry point the sync engine calls
- ``report``      the rollout report (rich table, JSON, matplotlib PNG)
- ``cli``         ``reconciler rollout status|promote|abort|pause|resume MODEL ENV``

Importing this package is light: nothing here imports kubernetes, httpx, scipy or matplotlib at
module level.
"""
