"""Handwritten digits: 8x8 images (64 pixel intensities 0..16, row-major) to the digit 0-9.

BentoML 1.4 service. On an Inferentia (inf2) pool the image also holds `model.neuron.pt`, the same
network compiled by torch-neuronx in the image-build workflow (pipelines/neuron_compile.py); when it
and `torch_neuronx` are present the service runs on the NeuronCore, otherwise it uses `model.pkl`
(DVC-tracked; `reconciler pipeline run train --model digits-classifier` trains it).
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import bentoml
import numpy as np

HERE = Path(__file__).resolve().parent
PIXELS = 64


def _load_neuron(path: Path):
    """The compiled TorchScript module, or None off Inferentia (no file, or no torch_neuronx)."""
    if os.environ.get("DIGITS_DISABLE_NEURON") or not path.is_file():
        return None
    try:
        import torch
        import torch_neuronx  # noqa: F401 - registers the Neuron ops with TorchScript
    except ImportError:
        return None
    return torch.jit.load(str(path))


@bentoml.service(resources={"cpu": "1"}, traffic={"timeout": 10})
class DigitsClassifier:
    def __init__(self) -> None:
        weights = HERE / "model.pkl"
        if not weights.is_file():
            raise RuntimeError(f"{weights} is missing: run `dvc pull` (or `reconciler pipeline run train "
                               "--model digits-classifier`) before serving or building")
        self.model = pickle.loads(weights.read_bytes())  # noqa: S301 - our own, DVC-tracked artifact
        self.neuron = _load_neuron(HERE / "model.neuron.pt")

    @property
    def backend(self) -> str:
        return "neuron" if self.neuron is not None else "cpu"

    @bentoml.api
    def predict(self, images: np.ndarray) -> np.ndarray:
        """The digit per row of shape (n, 64)."""
        x = np.asarray(images, dtype=float).reshape(-1, PIXELS)
        if self.neuron is not None:
            import torch

            # the module was traced for batch 1: run row by row
            rows = [self.neuron(torch.tensor(row[None, :], dtype=torch.float32)).numpy() for row in x]
            return np.concatenate(rows).argmax(axis=1)
        return self.model.predict(x)
