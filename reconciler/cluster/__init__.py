"""The cluster adapter: the only code that talks to a Kubernetes API server (KubeClient).

May import: the shared vocabulary (errors, labels, results). Used by sync, rollout and run."""
