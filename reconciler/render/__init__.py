"""Stage, render: models x environment -> validated, labelled, hashed Kubernetes objects
(manifests, kustomize, offline schemas) and hydration of rendered manifests into git.

May import: the shared vocabulary, source, catalog."""
