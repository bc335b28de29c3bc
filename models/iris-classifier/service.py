"""Iris species from four measurements (cm): sepal length, sepal width, petal length, petal width.

BentoML 1.4 service. The weights (`model.pkl`, DVC-tracked) sit next to this file, in the model
folder and in the bento's `src/`; train them with `reconciler pipeline run train --model iris-classifier`.
Every response carries the X-Model-Version header (content hash, commit, weights md5; pipelines/serving.py).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import bentoml
import numpy as np

from pipelines.serving import batching, traced

HERE = Path(__file__).resolve().parent
SPECIES = ("setosa", "versicolor", "virginica")


@bentoml.service(resources={"cpu": "1"}, traffic={"timeout": 10})
class IrisClassifier:
    def __init__(self) -> None:
        weights = HERE / "model.pkl"
        if not weights.is_file():
            raise RuntimeError(f"{weights} is missing: run `dvc pull` (or `reconciler pipeline run train "
                               "--model iris-classifier`) before serving or building")
        self.model = pickle.loads(weights.read_bytes())  # noqa: S301 - our own, DVC-tracked artifact

    def classes(self, features: np.ndarray) -> np.ndarray:
        """Class index per row: a plain method, so every endpoint calls it in process (an endpoint calling
        another `@bentoml.api` method goes through BentoML's internal HTTP routing instead)."""
        return self.model.predict(np.asarray(features, dtype=float).reshape(-1, 4))

    @bentoml.api(**batching())  # batchable when model.yaml declares serving.batching
    def predict(self, features: np.ndarray) -> np.ndarray:
        """Class index (0 setosa, 1 versicolor, 2 virginica) per row of shape (n, 4)."""
        return self.classes(features)

    @bentoml.api
    def species(self, features: np.ndarray) -> list[str]:
        """Species name per row."""
        return [SPECIES[int(i)] for i in self.classes(features)]


traced(IrisClassifier, HERE)
