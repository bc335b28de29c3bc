"""Stage 1, source: every read and write of git (trees, blobs, diffs, fetch, branches and commits),
and the model content hashes computed from a tree.

May import: reconciler.errors, reconciler.labels, reconciler.results. Nothing above it."""
