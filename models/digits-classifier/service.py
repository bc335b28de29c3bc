"""Handwritten digits: 8x8 images (64 pixel intensities 0..16, row-major) to the digit 0-9.

BentoML 1.4 service. The image built for an Inferentia (inf2) pool also holds `model.neuron.pt`, the
same network compiled by torch-neuronx in the image-build workflow (pipelines/neuron_compile.py), and
says where (MODEL_ACCELERATOR_ARTIFACT). With a Neuron device present the service runs on the
NeuronCore; if the artifact is missing or does not load there, the pod is NOT ready (/readyz fails
with the reason) instead of quietly using the CPU (pipelines/serving.py). Without a device (a laptop,
a cpu pool) it uses `model.pkl` (DVC-tracked; `reconciler pipeline run train --model digits-classifier`).
Every response carries the X-Model-Version header (content hash, commit, weights md5).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import bentoml
import numpy as np

from pipelines.serving import batching, load_accelerated, traced

HERE = Path(__file__).resolve().parent
PIXELS = 64


def _load_torchscript(path: Path):
    """The compiled TorchScript module (runs on the NeuronCore)."""
    import torch
    import torch_neuronx  # noqa: F401 - registers the Neuron ops with TorchScript

    return torch.jit.load(str(path))


@bentoml.service(resources={"cpu": "1"}, traffic={"timeout": 10})
class DigitsClassifier:
    def __init__(self) -> None:
        weights = HERE / "model.pkl"
        if not weights.is_file():
            raise RuntimeError(f"{weights} is missing: run `dvc pull` (or `reconciler pipeline run train "
                               "--model digits-classifier`) before serving or building")
        self.model = pickle.loads(weights.read_bytes())  # noqa: S301 - our own, DVC-tracked artifact
        self.neuron, self.accelerator = load_accelerated(_load_torchscript)

    def __is_ready__(self) -> bool:
        """/readyz: false while the device is present and the compiled artifact could not be loaded."""
        return self.accelerator.ready

    @property
    def backend(self) -> str:
        return self.accelerator.backend

    @bentoml.api(**batching())  # batchable when model.yaml declares serving.batching
    def predict(self, images: np.ndarray) -> np.ndarray:
        """The digit per row of shape (n, 64)."""
        if not self.accelerator.ready:  # never answer from the CPU while holding the accelerator
            raise RuntimeError(f"not ready: {self.accelerator.error}")
        x = np.asarray(images, dtype=float).reshape(-1, PIXELS)
        if self.neuron is not None:
            import torch

            # the module was traced for batch 1: run row by row
            rows = [self.neuron(torch.tensor(row[None, :], dtype=torch.float32)).numpy() for row in x]
            return np.concatenate(rows).argmax(axis=1)
        return self.model.predict(x)


traced(DigitsClassifier, HERE)
