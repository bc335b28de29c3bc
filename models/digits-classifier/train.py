"""Training entry point of digits-classifier (the contract is in docs/model-spec.md, "train.py").

The platform calls these two functions, on a laptop (`reconciler pipeline run train`) and in the
Argo train workflow alike; it pins the library versions (pipelines/requirements.lock), limits BLAS
to one thread, writes metrics.json and DVC-registers the weights. Nothing here knows about either.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

QUALITY_GATE = {"accuracy": 0.9}  # evaluate() must reach these, or the pipeline stops before register
INPUT_SHAPE = (1, 64)  # one request's input, batch first (used to trace the model for Inferentia)
TEST_SIZE = 0.25


def _split(seed: int) -> tuple[Any, Any, Any, Any]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    return train_test_split(x, y, test_size=TEST_SIZE, random_state=seed, stratify=y)


def train(out_dir: Path, *, seed: int) -> Path:
    """Fit on the training split and write `out_dir/model.pkl`; return its path."""
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x_train, _, y_train, _ = _split(seed)
    # scaler + one hidden ReLU layer: small enough to train in ~1 s, and both halves map onto
    # torch ops one to one (pipelines/neuron.py traces them for Inferentia)
    estimator = make_pipeline(StandardScaler(),
                              MLPClassifier(hidden_layer_sizes=(64,), max_iter=400, random_state=seed))
    estimator.fit(x_train, y_train)
    out = Path(out_dir) / "model.pkl"
    out.write_bytes(pickle.dumps(estimator, protocol=4))
    return out


def evaluate(out_dir: Path, *, seed: int) -> dict[str, Any]:
    """Score `out_dir/model.pkl` on the held-out split; the metrics go to metrics.json."""
    from sklearn.metrics import accuracy_score, f1_score

    estimator = pickle.loads((Path(out_dir) / "model.pkl").read_bytes())  # noqa: S301 - our own artifact
    _, x_test, _, y_test = _split(seed)
    predicted = estimator.predict(x_test)
    return {
        "accuracy": round(float(accuracy_score(y_test, predicted)), 4),
        "f1_macro": round(float(f1_score(y_test, predicted, average="macro")), 4),
        "test_samples": int(len(y_test)),
        "dataset": "digits",
    }
