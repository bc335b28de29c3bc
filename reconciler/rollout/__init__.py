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

Elsewhere: the rollout report (JSON, matplotlib PNG) is reconciler.report.rollout; the commands
``reconciler rollout status|promote|abort|pause|resume MODEL ENV`` are reconciler.cli.rollout.
May import: the shared vocabulary (errors, labels, results), catalog and cluster; never sync, run or cli.

Importing this package is light: nothing here imports kubernetes, httpx, scipy or matplotlib at
module level.
"""
