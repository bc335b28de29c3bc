"""Wine cultivar: 13 chemical measurements (scikit-learn's wine data set, in its column order) to class 0-2.

BentoML 1.4 service on PyTorch. It loads `model.pt` (DVC-tracked; `reconciler pipeline run train --model
wine-classifier`) with the network definition of train.py, on the GPU when the image was built for one and a
device is present, else on the CPU. Every response carries the X-Model-Version header (content hash, commit,
weights md5).

torch is imported where the service runs (the image, or `bentoml serve` in an environment of the model's
lock), not at module level: `bentoml build` imports this module only to read the service's definition.
"""

from __future__ import annotations

import os
from pathlib import Path

import bentoml
import numpy as np

from pipelines.serving import KIND_ENV, load_accelerated, traced

HERE = Path(__file__).resolve().parent
FEATURES = 13


def _load_torchscript(path: Path):
    """The module compiled for Inferentia (torch-neuronx-trace recipe: traced for inputShapes [[1, 13]])."""
    import torch
    import torch_neuronx  # noqa: F401 - registers the Neuron ops with TorchScript

    return torch.jit.load(str(path))


@bentoml.service(resources={"cpu": "1"}, traffic={"timeout": 10})
class WineClassifier:
    def __init__(self) -> None:
        import torch

        from train import load

        weights = HERE / "model.pt"
        if not weights.is_file():
            raise RuntimeError(f"{weights} is missing: run `dvc pull` (or `reconciler pipeline run train "
                               "--model wine-classifier`) before serving or building")
        torch.set_num_threads(1)
        # gpu: the CUDA build of the image; inferentia: the compiled model.neuron.pt of the -neuron image
        self.neuron, self.accelerator = load_accelerated(_load_torchscript if _on_inferentia() else None)
        self.device = "cuda" if self.accelerator.kind == "gpu" and torch.cuda.is_available() else "cpu"
        self.model = load(weights).to(self.device)

    def __is_ready__(self) -> bool:
        """/readyz: false while the device is present and the compiled artifact could not be loaded."""
        return self.accelerator.ready

    @bentoml.api
    def predict(self, measurements: np.ndarray) -> np.ndarray:
        """The cultivar per row of shape (n, 13)."""
        import torch

        if not self.accelerator.ready:  # never answer from the CPU while holding the accelerator
            raise RuntimeError(f"not ready: {self.accelerator.error}")
        x = torch.tensor(np.asarray(measurements, dtype=np.float32).reshape(-1, FEATURES), device=self.device)
        with torch.no_grad():
            if self.neuron is not None:  # traced for batch 1: row by row
                return torch.cat([self.neuron(row[None, :]) for row in x]).argmax(dim=1).numpy()
            return self.model(x).argmax(dim=1).cpu().numpy()


def _on_inferentia() -> bool:
    return os.environ.get(KIND_ENV) == "inferentia"


traced(WineClassifier, HERE)
