"""Compile a trained model for AWS Inferentia (inf2) with torch-neuronx.

Runs inside the Neuron SDK image on an inf2 node (the `neuron-compile` template of
pipelines/neuron_compile.py runs `python -m pipelines.neuron compile ...`). The scikit-learn
pipeline (StandardScaler -> MLPClassifier) is rewritten as the equivalent torch module, traced
with `torch_neuronx.trace` for a fixed input shape, and saved with `torch.jit.save`.

The layer extraction (`dense_layers`, `forward`) is plain numpy, so it is tested here without
torch; torch and torch_neuronx are imported only by `compile_model`, on the inf2 node.
"""

from __future__ import annotations

import argparse
import hashlib
import pickle
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reconciler.catalog.accelerators import NeuronSDK

# the same name as reconciler.catalog.accelerators.COMPILED_FILE (a test holds them equal): this module
# runs in the Neuron image with numpy and scikit-learn only, so it imports nothing of reconciler
COMPILED_FILE = "model.neuron.pt"


@dataclass(frozen=True)
class Dense:
    weight: Any  # numpy (in, out)
    bias: Any  # numpy (out,)
    activation: str  # relu | tanh | logistic | identity | softmax


def cache_key(model_hash: str, sdk: "NeuronSDK", input_shapes: list[tuple[int, ...]] | tuple[tuple[int, ...], ...],
              code_hash: str) -> str:
    """The memoization key of one compilation: same weights, same SDK release (and so the same compile
    image and compiler, derived from it), same shapes and same conversion code = same artifact.

    Returned as `neuron-<sdk>-<24 hex>`: a valid ConfigMap key and S3 path segment.
    """
    shapes = ";".join("x".join(str(d) for d in shape) for shape in input_shapes)
    parts = [model_hash, sdk.version, sdk.compile_image, sdk.neuronx_cc, sdk.torch_neuronx, shapes, code_hash]
    digest = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:24]
    version = "".join(c if c.isalnum() else "-" for c in sdk.version)
    return f"neuron-{version}-{digest}"


def conversion_code_hash() -> str:
    """sha256 of this module: the conversion code, part of every cache key."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


def dense_layers(model: Any) -> list[Dense]:
    """The affine layers of a (StandardScaler ->) MLPClassifier pipeline, scaler folded in as layer 0."""
    import numpy as np

    steps = [s for _, s in model.steps] if hasattr(model, "steps") else [model]
    layers: list[Dense] = []
    for step in steps:
        kind = type(step).__name__
        if kind == "StandardScaler":
            scale = step.scale_ if step.scale_ is not None else np.ones_like(step.mean_)
            layers.append(Dense(np.diag(1.0 / scale), -step.mean_ / scale, "identity"))
        elif kind == "MLPClassifier":
            count = len(step.coefs_)
            for i, (w, b) in enumerate(zip(step.coefs_, step.intercepts_)):
                last = i == count - 1
                layers.append(Dense(w, b, step.out_activation_ if last else step.activation))
        else:
            raise ValueError(f"cannot compile a {kind} for Neuron: only StandardScaler and MLPClassifier "
                             "pipelines are supported")
    return layers


def forward(layers: list[Dense], x: Any) -> Any:
    """Numpy reference of the traced module: class probabilities for a batch."""
    import numpy as np

    for layer in layers:
        x = x @ layer.weight + layer.bias
        if layer.activation == "relu":
            x = np.maximum(x, 0)
        elif layer.activation == "tanh":
            x = np.tanh(x)
        elif layer.activation == "logistic":
            x = 1 / (1 + np.exp(-x))
        elif layer.activation == "softmax":
            x = np.exp(x - x.max(axis=1, keepdims=True))
            x = x / x.sum(axis=1, keepdims=True)
    return x


def compile_model(model_pkl: Path, output: Path, input_shape: tuple[int, ...]) -> Path:  # pragma: no cover - inf2 only
    """Trace the model with torch-neuronx and save the compiled TorchScript module."""
    import torch
    import torch_neuronx

    estimator = pickle.loads(model_pkl.read_bytes())  # noqa: S301 - our own artifact
    modules: list[torch.nn.Module] = []
    for layer in dense_layers(estimator):
        linear = torch.nn.Linear(*layer.weight.shape)
        with torch.no_grad():
            linear.weight.copy_(torch.tensor(layer.weight.T, dtype=torch.float32))
            linear.bias.copy_(torch.tensor(layer.bias, dtype=torch.float32))
        modules.append(linear)
        modules.append({"relu": torch.nn.ReLU(), "tanh": torch.nn.Tanh(), "logistic": torch.nn.Sigmoid(),
                        "softmax": torch.nn.Softmax(dim=1), "identity": torch.nn.Identity()}[layer.activation])
    module = torch.nn.Sequential(*modules).eval()
    traced = torch_neuronx.trace(module, torch.zeros(*input_shape, dtype=torch.float32))
    output.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(traced, str(output))
    return output


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - inf2 only
    parser = argparse.ArgumentParser(prog="python -m pipelines.neuron")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("compile")
    p.add_argument("--model-pkl", required=True, type=Path)
    p.add_argument("--output", required=True, type=Path)
    p.add_argument("--input-shape", required=True, help="comma-separated, batch first, e.g. 1,64")
    args = parser.parse_args(argv)
    shape = tuple(int(d) for d in args.input_shape.split(","))
    print(compile_model(args.model_pkl, args.output, shape))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
