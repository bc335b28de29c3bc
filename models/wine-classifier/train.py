"""Training entry point of wine-classifier: a small PyTorch network (the contract is in docs/model-spec.md).

Wine cultivar (3 classes) from 13 chemical measurements, scikit-learn's wine data set (it ships with the
library: nothing is downloaded). The platform runs train() and evaluate() in this model's own environment
(requirements.lock beside this file), under its numeric profile (pipelines/numerics.py), on a laptop and in
Argo alike. Deterministic: a fixed seed, deterministic algorithms, one thread, full-batch training on the CPU,
so the same lock retrains the same bytes of model.pt.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

QUALITY_GATE = {"accuracy": 0.9}  # evaluate() must reach these, or the pipeline stops before register
INPUT_SHAPE = (1, 13)  # one request's input, batch first
HIDDEN = 16
EPOCHS = 150
TEST_SIZE = 0.25
ARTIFACT = "model.pt"  # as model.yaml declares it (artifacts: [model.pt.dvc])


def network(sizes: list[int]) -> Any:
    """The network for `sizes` (inputs, hidden..., classes): Linear + ReLU layers. The service builds it too."""
    import torch

    layers: list[Any] = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        layers.append(torch.nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


def _split(seed: int) -> tuple[Any, Any, Any, Any]:
    from sklearn.datasets import load_wine
    from sklearn.model_selection import train_test_split

    x, y = load_wine(return_X_y=True)
    return train_test_split(x, y, test_size=TEST_SIZE, random_state=seed, stratify=y)


def _deterministic(seed: int) -> None:
    import torch

    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)


def train(out_dir: Path, *, seed: int) -> Path:
    """Fit on the training split and write `out_dir/model.pt`; return its path."""
    import numpy as np
    import torch

    _deterministic(seed)
    x_train, _, y_train, _ = _split(seed)
    mean, scale = x_train.mean(axis=0), x_train.std(axis=0)
    x = torch.tensor((x_train - mean) / scale, dtype=torch.float32)
    y = torch.tensor(np.asarray(y_train), dtype=torch.long)
    sizes = [x.shape[1], HIDDEN, int(y.max()) + 1]
    model = network(sizes)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    loss = torch.nn.CrossEntropyLoss()
    for _ in range(EPOCHS):  # full batch: no shuffling order to depend on
        optimizer.zero_grad()
        loss(model(x), y).backward()
        optimizer.step()
    out = Path(out_dir) / ARTIFACT
    torch.save({"sizes": sizes, "state": model.state_dict(),
                "mean": torch.tensor(mean, dtype=torch.float32), "scale": torch.tensor(scale, dtype=torch.float32)},
               out)
    return out


def load(path: Path) -> Any:
    """The trained module with its input scaling folded in (what the service serves and Neuron traces)."""
    import torch

    saved = torch.load(path, map_location="cpu", weights_only=True)
    model = network(saved["sizes"])
    model.load_state_dict(saved["state"])
    mean, scale = saved["mean"], saved["scale"]

    class Scaled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = model
            self.register_buffer("mean", mean)
            self.register_buffer("scale", scale)

        def forward(self, x: Any) -> Any:
            return self.net((x - self.mean) / self.scale)

    return Scaled().eval()


def evaluate(out_dir: Path, *, seed: int) -> dict[str, Any]:
    """Score `out_dir/model.pt` on the held-out split; the metrics go to metrics.json."""
    import torch
    from sklearn.metrics import accuracy_score, f1_score

    _deterministic(seed)
    model = load(Path(out_dir) / ARTIFACT)
    _, x_test, _, y_test = _split(seed)
    with torch.no_grad():
        predicted = model(torch.tensor(x_test, dtype=torch.float32)).argmax(dim=1).numpy()
    return {
        "accuracy": round(float(accuracy_score(y_test, predicted)), 4),
        "f1_macro": round(float(f1_score(y_test, predicted, average="macro")), 4),
        "test_samples": int(len(y_test)),
        "dataset": "wine",
    }
