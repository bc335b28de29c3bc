"""Argo Workflows (rendered with Hera) and the step functions they run.

- `pipelines.steps`: train -> evaluate -> register of the example models (shared by the local
  runner `reconciler pipeline run train` and the Argo tasks, `python -m pipelines.steps ...`).
- `pipelines.train.train_workflow(...)`: that DAG as a Workflow.
- `pipelines.build_image.build_image_workflow(...)`: bento -> image (rootless BuildKit), digest out;
  for Inferentia pools with the memoized Neuron compilation of `pipelines.neuron_compile`.

Modules import hera inside functions, so importing `pipelines` stays cheap.
"""
