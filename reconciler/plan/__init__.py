"""Stage, plan: what a change does to each environment, as data (pure), from the desired states of two
revisions (reconciler.desired).

May import: the shared vocabulary, source, catalog, render, build, desired."""
