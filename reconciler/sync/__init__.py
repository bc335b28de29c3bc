"""Stage, sync: make one environment in the cluster match what git renders for it (server-side
apply, health, inventory and prune), driving rollouts for canary environments.

May import: every stage below it (source, catalog, cluster, render, build, plan, rollout)."""
