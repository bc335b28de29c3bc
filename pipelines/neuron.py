"""Compile a trained model for AWS Inferentia (inf2) with torch-neuronx, in two steps.

1. `export` (the `neuron-export` template of pipelines/neuron_compile.py, in the ordinary step image with
   the training lock, so the pickle is read by the scikit-learn that wrote it): unpickles model.pkl,
   checks its architecture against the ones this conversion accepts (`ARCHITECTURES`, the
   `torch-neuronx-dense` recipe's, which the plan checks model.yaml against), and writes its dense layers
   (StandardScaler folded in as layer 0) as a framework-neutral artifact: `layers.npz` (weight_<i>,
   bias_<i>, float64) and `layers.json` (activations, input shape, architecture).
2. `compile` (the `neuron-compile` template, in the Neuron SDK image: Python 3.10, torch-neuronx, numpy;
   nothing of the training lock is installed there): builds the equivalent torch module from the npz,
   traces it with `torch_neuronx.trace` for the fixed input shape and saves it with `torch.jit.save`.

Everything but `compile_model` is plain numpy (and the standard library), so it is tested here without
torch; torch and torch_neuronx are imported only by `compile_model`, on the inf2 node.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pickle
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import StepError

if TYPE_CHECKING:
    from reconciler.catalog.accelerators import NeuronSDK

# the same name as reconciler.catalog.accelerators.COMPILED_FILE (a test holds them equal): this module runs
# in the step image (export: numpy + scikit-learn of the lock) and in the Neuron image (compile: numpy + torch),
# neither of which has the reconciler's dependencies, so it imports nothing of reconciler
COMPILED_FILE = "model.neuron.pt"
LAYERS_FILE = "layers.npz"  # the export artifact: a directory holding these two files
MANIFEST_FILE = "layers.json"
EXPORT_FORMAT = 1
# what this conversion compiles: the architectures of its registry entry, pipelines/recipes/torch-neuronx-dense.yaml
# (a test holds them equal), checked by the plan against model.yaml and here against the pickle itself
ARCHITECTURES = frozenset({"sklearn-mlp", "sklearn-scaler-mlp"})
ACTIVATIONS = ("relu", "tanh", "logistic", "identity", "softmax")
# the files whose content decides the compiled artifact besides the weights and the SDK: this module (export
# and compile) and the lock the export unpickles with; all of them are in every cache key (the registry entry's
# `code:` lists them: a recipe names its own)
CONVERSION_FILES = ("pipelines/neuron.py", "pipelines/requirements.lock")
_ESTIMATOR_NAMES = {"StandardScaler": "scaler", "MLPClassifier": "mlp", "LogisticRegression": "logistic-regression"}


@dataclass(frozen=True)
class Dense:
    weight: Any  # numpy (in, out)
    bias: Any  # numpy (out,)
    activation: str  # relu | tanh | logistic | identity | softmax


def cache_key(model_hash: str, sdk: "NeuronSDK", input_shapes: list[tuple[int, ...]] | tuple[tuple[int, ...], ...],
              code_hash: str, input_dtypes: tuple[str, ...] = ()) -> str:
    """The memoization key of one compilation: same weights, same SDK release (and so the same compile
    image and compiler, derived from it), same shapes and same conversion code = same artifact.

    Returned as `neuron-<sdk>-<24 hex>`: a valid ConfigMap key and S3 path segment.
    """
    shapes = ";".join("x".join(str(d) for d in shape) for shape in input_shapes)
    parts = [model_hash, sdk.version, sdk.compile_image, sdk.neuronx_cc, sdk.torch_neuronx, shapes, code_hash]
    if input_dtypes and set(input_dtypes) != {"float32"}:  # float32 is the default: those keys stay as they were
        parts.append(",".join(input_dtypes))
    digest = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:24]
    version = "".join(c if c.isalnum() else "-" for c in sdk.version)
    return f"neuron-{version}-{digest}"


def conversion_code_hash(root: Path | None = None, files: tuple[str, ...] | list[str] = CONVERSION_FILES) -> str:
    """sha256 over a recipe's code `files` (names and bytes; default this recipe's CONVERSION_FILES) of the
    repository at `root` (default: this checkout): the export code, its training lock and the compile code,
    part of every cache key."""
    base = Path(__file__).resolve().parents[1] if root is None else Path(root)
    digest = hashlib.sha256()
    for name in files:
        data = (base / name).read_bytes()
        digest.update(f"{name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def architecture_of(model: Any) -> str:
    """The architecture name of a fitted estimator, in model.yaml's vocabulary: `sklearn-` and its steps,
    e.g. StandardScaler -> MLPClassifier is `sklearn-scaler-mlp`, StandardScaler -> LogisticRegression is
    `sklearn-scaler-logistic-regression`; another estimator is named after its class (kebab-case)."""
    steps = [s for _, s in model.steps] if hasattr(model, "steps") else [model]
    names = [_ESTIMATOR_NAMES.get(type(s).__name__) or re.sub(r"(?<!^)(?=[A-Z])", "-", type(s).__name__).lower()
             for s in steps]
    return "sklearn-" + "-".join(names)


def dense_layers(model: Any) -> list[Dense]:
    """The affine layers of a (StandardScaler ->) MLPClassifier pipeline, scaler folded in as layer 0."""
    import numpy as np  # noqa: PLC0415 - numpy only in the step: the reconciler imports this module (neuron_compile) without it

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
    import numpy as np  # noqa: PLC0415 - numpy only in the step: the reconciler imports this module (neuron_compile) without it

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


def export_model(model_pkl: Path, out_dir: Path, input_shape: tuple[int, ...],
                 declared: str | None = None) -> Path:
    """Write model.pkl's dense layers as the framework-neutral export artifact (`out_dir`/layers.npz +
    layers.json). Runs where the model was trained (the training lock). Raises StepError, with a fix, for a
    model this conversion cannot compile (the recipe's rule, on the pickle itself), a pickle that is not
    what model.yaml declares, or an input shape that does not fit the first layer."""
    import numpy as np  # noqa: PLC0415 - numpy only in the step: the reconciler imports this module (neuron_compile) without it

    if not model_pkl.is_file():
        raise StepError(f"no trained model at {model_pkl}", fix="export the bento of a trained model (model.pkl in its src/)")
    estimator = pickle.loads(model_pkl.read_bytes())  # our own artifact, read by the lock that wrote it
    found = architecture_of(estimator)
    if declared and declared != found:
        raise StepError(f"{model_pkl.name} is a {found}, but model.yaml declares architecture {declared!r}",
                        fix=f"set `architecture: {found}` in model.yaml (the plan then checks where it may be "
                            "served), or retrain the model model.yaml describes")
    if found not in ARCHITECTURES:
        raise StepError(f"cannot compile {model_pkl.name} for inferentia: it is a {found}, and the compile recipe "
                        f"torch-neuronx-dense accepts {', '.join(sorted(ARCHITECTURES))}",
                        fix="serve the model from a cpu or gpu pool (accelerator: in model.yaml), or add a recipe "
                            f"accepting {found!r} to pipelines/recipes/ (an entry <name>.yaml and its conversion module)")
    layers = dense_layers(estimator)
    width = int(layers[0].weight.shape[0])
    if len(input_shape) < 2 or input_shape[-1] != width or any(d < 1 for d in input_shape):
        raise StepError(f"input shape {list(input_shape)} does not fit {model_pkl.name}: its first layer takes "
                        f"{width} features", fix=f"set images.inferentia.inputShapes: [[1, {width}]] in model.yaml")
    out_dir.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, Any] = {}
    for i, layer in enumerate(layers):
        arrays[f"weight_{i}"] = np.asarray(layer.weight, dtype=np.float64)
        arrays[f"bias_{i}"] = np.asarray(layer.bias, dtype=np.float64)
    with (out_dir / LAYERS_FILE).open("wb") as handle:
        np.savez(handle, **arrays)
    manifest = {"format": EXPORT_FORMAT, "architecture": found, "input_shape": list(input_shape),
                "activations": [layer.activation for layer in layers]}
    (out_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return out_dir


def read_layers(export_dir: Path) -> tuple[list[Dense], tuple[int, ...]]:
    """(layers, input shape) of an export artifact, checked: numpy only (no pickle, allow_pickle=False), so it
    reads in the Neuron image whatever scikit-learn wrote the model. ValueError for a malformed artifact."""
    import numpy as np  # noqa: PLC0415 - numpy only in the step: the reconciler imports this module (neuron_compile) without it

    try:
        manifest = json.loads((export_dir / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{export_dir / MANIFEST_FILE}: not a readable export manifest ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != EXPORT_FORMAT:
        raise ValueError(f"{export_dir / MANIFEST_FILE}: export format {manifest.get('format') if isinstance(manifest, dict) else None!r}, "
                         f"this code reads format {EXPORT_FORMAT}: export and compile from the same commit")
    activations, shape = manifest.get("activations"), manifest.get("input_shape")
    if (not isinstance(activations, list) or not activations or any(a not in ACTIVATIONS for a in activations)
            or not isinstance(shape, list) or not all(isinstance(d, int) and d > 0 for d in shape)):
        raise ValueError(f"{export_dir / MANIFEST_FILE}: activations must be a list of {', '.join(ACTIVATIONS)} "
                         "and input_shape a list of positive integers")
    with np.load(export_dir / LAYERS_FILE, allow_pickle=False) as data:
        expected = {f"{k}_{i}" for i in range(len(activations)) for k in ("weight", "bias")}
        if set(data.files) != expected:
            raise ValueError(f"{export_dir / LAYERS_FILE}: holds {sorted(data.files)}, the manifest's "
                             f"{len(activations)} layers need {sorted(expected)}")
        layers = [Dense(data[f"weight_{i}"], data[f"bias_{i}"], a) for i, a in enumerate(activations)]
    width = shape[-1] if shape else None
    for i, layer in enumerate(layers):
        if layer.weight.ndim != 2 or layer.weight.shape[0] != width or layer.bias.shape != (layer.weight.shape[1],):
            raise ValueError(f"{export_dir / LAYERS_FILE}: layer {i} is {layer.weight.shape} + {layer.bias.shape}, "
                             f"which does not take {width} inputs")
        width = layer.weight.shape[1]
    return layers, tuple(shape)


def compile_model(export_dir: Path, output: Path) -> Path:  # pragma: no cover - inf2 only
    """Trace the exported layers with torch-neuronx and save the compiled TorchScript module."""
    import torch
    import torch_neuronx  # noqa: PLC0415 - only in the Neuron SDK image, on the inf2 node

    layers, input_shape = read_layers(export_dir)
    modules: list[torch.nn.Module] = []
    for layer in layers:
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.neuron")
    sub = parser.add_subparsers(dest="command", required=True)
    # the recipe contract (pipelines/recipes/): export --bento-src DIR --artifact NAME --output-dir DIR --input-shape S
    # --input-dtype T [--architecture A]; compile --export-dir DIR --output FILE --input-shape S --input-dtype T
    p = sub.add_parser("export", help="model.pkl -> layers.npz + layers.json (in the training environment)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--model-pkl", type=Path)
    where.add_argument("--bento-src", type=Path, help="the Bento's src/, holding --artifact")
    p.add_argument("--artifact", default="model.pkl")
    p.add_argument("--output-dir", required=True, type=Path)
    p.add_argument("--input-shape", required=True, help="comma-separated, batch first, e.g. 1,64")
    p.add_argument("--input-dtype", default="float32", choices=["float32"], help="the layers take float32")
    p.add_argument("--architecture", default="", help="what model.yaml declares (checked against the pickle)")
    p = sub.add_parser("compile", help="layers.npz -> model.neuron.pt (in the Neuron SDK image, on inf2)")
    p.add_argument("--layers", "--export-dir", dest="layers", required=True, type=Path, help="the export's directory")
    p.add_argument("--output", required=True, type=Path)
    p.add_argument("--input-shape", help="checked against the export's (it records the shape it was made for)")
    p.add_argument("--input-dtype", default="float32", choices=["float32"])
    args = parser.parse_args(argv)
    try:
        if args.command == "export":
            shape = tuple(int(d) for d in args.input_shape.split(","))
            model_pkl = args.model_pkl or args.bento_src / args.artifact
            print(export_model(model_pkl, args.output_dir, shape, args.architecture or None))
        else:  # pragma: no cover - inf2 only
            print(compile_model(args.layers, args.output))
    except (StepError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
