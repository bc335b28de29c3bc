"""Stage, plan: what a change does to each environment, as data (pure), and the desired state
that git says each environment should run.

May import: the shared vocabulary, source, catalog, render, build."""
