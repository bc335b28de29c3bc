"""Stage, build: build only what changed (BentoML, DVC artifacts, registry look-ups, the Argo
hand-off and the local pipeline runner).

May import: the shared vocabulary, source, catalog."""
