"""Stage, desired: what a revision says each environment should run (source -> catalog -> model hashes ->
images -> render), the one desired state plan, sync (the pass in reconciler.run.reconcile), run and status read.

May import: the shared vocabulary, source, catalog, render."""
