"""Wine cultivar: 13 chemical measurements (scikit-learn's wine data set, in its column order) to class 0-2.

BentoML 1.4 service on PyTorch. It loads `model.pt` (DVC-tracked; `reconciler pipeline run train --model
wine-classifier`) with the network definition of train.py, on the GPU when the image was built for one and a
device is present, else on the CPU. Every response carries the X-Model-Version header (content hash, commit,
weights md5).

torch is imported where the service runs (the image, or `bentoml serve` in an environment of the model's
lock), not at module level: `bentoml build` imports this module only to read the service's definition.
"""

from __future__ import annotations

from pathlib import Path

import bentoml
import numpy as np

from pipelines.serving import load_accelerated, traced

HERE = Path(__file__).resolve().parent
FEATURES = 13


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
        _, self.accelerator = load_accelerated(None)
        self.device = "cuda" if self.accelerator.kind == "gpu" and torch.cuda.is_available() else "cpu"
        self.model = load(weights).to(self.device)

    @bentoml.api
    def predict(self, measurements: np.ndarray) -> np.ndarray:
        """The cultivar per row of shape (n, 13)."""
        import torch

        x = torch.tensor(np.asarray(measurements, dtype=np.float32).reshape(-1, FEATURES), device=self.device)
        with torch.no_grad():
            return self.model(x).argmax(dim=1).cpu().numpy()


traced(WineClassifier, HERE)
