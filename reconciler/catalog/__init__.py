"""Stage 2, catalog: the files people write (model.yaml, environment.yaml, pools) parsed and
validated, and the catalog of every model, environment and pool in a repository tree.

May import: the shared vocabulary (errors, labels, results) and source."""
