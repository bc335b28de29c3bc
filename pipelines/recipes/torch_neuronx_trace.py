"""The `torch-neuronx-trace` compile recipe: a PyTorch model traced for AWS Inferentia (inf2) with static shapes.

The model's `train.py` defines `load(path) -> torch.nn.Module` (the module it serves, built from the trained
artifact); `model.yaml` declares the input shapes and dtypes (`images.inferentia.inputShapes`, `inputDtypes`).
Neuron compiles one static graph per input shape: `torch_neuronx.trace` records the operations run on the
example inputs, so a Python branch on a tensor's value (data-dependent control flow) is frozen into whichever
side the example took, and a shape that depends on the values (boolean masks, `nonzero`) cannot be compiled.

Three commands, one rule:
- `check` (the plan's PR check, in the model's own environment, on CPU): `torch.export` with the declared
  shapes (it refuses data-dependent control flow), the exported outputs' shapes must be static, and
  `torch.jit.trace` (what torch_neuronx.trace builds on) must not warn that the trace may be wrong. Prints one
  JSON document: the problems (message, fix, file, line) and the output shapes.
- `export` (the workflow's `neuron-export` step, in the step image with the model's lock): the same check on the
  trained artifact of the Bento, then the artifact, train.py and a manifest into the export folder.
- `compile` (the `neuron-compile` step, in the Neuron SDK image on an inf2 node): `torch_neuronx.trace` with the
  declared shapes and dtypes, saved with `torch.jit.save` as the compiled artifact of the `-neuron` image.

torch is imported inside the functions (the plan never imports this module; it runs it in a subprocess).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import shutil
import sys
import traceback
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

DTYPES = ("float32", "float16", "bfloat16", "int64", "int32")
MANIFEST = "export.json"
EXPORT_FORMAT = 1
MODEL_CODE = "train.py"
CONTROL_FLOW_FIX = ("compute both branches and pick with torch.where(condition, a, b) (or use torch.cond), so one "
                    "static graph serves every input; or serve the model from a cpu or gpu pool (accelerator: in "
                    "model.yaml)")
DYNAMIC_SHAPE_FIX = ("keep every shape static: mask with torch.where instead of boolean indexing or nonzero(), and pad "
                     "to a fixed size; Neuron compiles for the declared inputShapes only")


@dataclass(frozen=True)
class Problem:
    message: str
    fix: str
    file: str = ""
    line: int = 0


def parse_shape(text: str) -> tuple[int, ...]:
    """'1,13' -> (1, 13); ValueError unless positive integers."""
    shape = tuple(int(d) for d in text.split(","))
    if not shape or any(d < 1 for d in shape):
        raise ValueError(f"input shape {text!r}: positive integers, batch first, e.g. 1,13")
    return shape


def load_module(model_dir: Path, artifact: Path) -> Any:
    """`load(artifact)` of the model's train.py, imported by path, in eval mode."""
    path = Path(model_dir) / MODEL_CODE
    spec = importlib.util.spec_from_file_location("model_code_under_trace", path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"{path} cannot be imported")
    code = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(Path(model_dir).resolve()))
    spec.loader.exec_module(code)
    load = getattr(code, "load", None)
    if not callable(load):
        raise LookupError(f"{path.name} defines no load(path) returning the torch.nn.Module it serves")
    module = load(Path(artifact))
    return module.eval() if hasattr(module, "eval") else module


def example_inputs(shapes: list[tuple[int, ...]], dtypes: list[str]) -> tuple[Any, ...]:
    import torch

    return tuple(torch.zeros(*shape, dtype=getattr(torch, dtype)) for shape, dtype in zip(shapes, dtypes))


def _user_frame(exc: BaseException, model_dir: Path) -> tuple[str, int]:
    """The innermost frame of the model's own code in an exception's traceback: (file name, line)."""
    folder = str(Path(model_dir).resolve())
    found = ("", 0)
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename.startswith(folder):
            found = (Path(frame.filename).name, frame.lineno or 0)
    return found


def check(module: Any, inputs: tuple[Any, ...], model_dir: Path) -> tuple[list[Problem], list[list[Any]]]:
    """The problems that keep `module` from being traced with these static inputs, and its output shapes."""
    import torch

    shown = ", ".join(f"{list(x.shape)} {str(x.dtype).removeprefix('torch.')}" for x in inputs)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            exported = torch.export.export(module, inputs, strict=False)
    except Exception as exc:  # torch raises many kinds; every one means "not one static graph"
        file, line = _user_frame(exc, model_dir)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        data_dependent = "data-dependent" in str(exc) or type(exc).__name__.startswith("GuardOnDataDependent")
        what = "data-dependent control flow (a Python branch on a tensor's value)" if data_dependent else \
            f"{type(exc).__name__}"
        return [Problem(f"the model cannot be traced with static shapes ({shown}): {what}"
                        + (f" at {file}:{line}" if file else "") + f": {first}",
                        CONTROL_FLOW_FIX if data_dependent else
                        "make forward() traceable by torch.export with the declared inputShapes / inputDtypes",
                        file, line)], []
    outputs = [node for node in exported.graph.nodes if node.op == "output"][0].args[0]
    shapes: list[list[Any]] = []
    problems: list[Problem] = []
    for i, node in enumerate(outputs if isinstance(outputs, (list, tuple)) else [outputs]):
        value = getattr(node, "meta", {}).get("val")
        shape = [d if isinstance(d, int) else str(d) for d in getattr(value, "shape", [])]
        shapes.append(shape)
        if any(not isinstance(d, int) for d in shape):
            problems.append(Problem(f"output {i} has a dynamic shape {shape} for the static inputs ({shown}): its size "
                                    "depends on the input's values", DYNAMIC_SHAPE_FIX))
    if problems:
        return problems, shapes
    with warnings.catch_warnings(record=True) as caught:  # what torch_neuronx.trace builds on
        warnings.simplefilter("always")
        torch.jit.trace(module, inputs, check_trace=False)
    for warning in caught:
        if type(warning.message).__name__ == "TracerWarning":
            inside = str(Path(warning.filename).resolve()).startswith(str(Path(model_dir).resolve()))
            problems.append(Problem(f"torch.jit.trace warns that the trace may not generalize ({shown})"
                                    + (f" at {Path(warning.filename).name}:{warning.lineno}" if inside else "")
                                    + f": {str(warning.message).splitlines()[0][:200]}", CONTROL_FLOW_FIX,
                                    Path(warning.filename).name if inside else "", warning.lineno if inside else 0))
    return problems, shapes


def run_check(model_dir: Path, artifact: Path, shapes: list[tuple[int, ...]], dtypes: list[str]) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    # torch logs a failed guard with the whole graph at WARNING: the problem below says it in one line
    logging.getLogger("torch.fx.experimental.symbolic_shapes").setLevel(logging.ERROR)
    try:
        module = load_module(model_dir, artifact)
    except Exception as exc:  # the model's own code: any error is its to fix
        file, line = _user_frame(exc, model_dir)
        return {"problems": [asdict(Problem(f"{MODEL_CODE}'s load({artifact.name}) failed: {type(exc).__name__}: {exc}",
                                            f"define load(path) in {MODEL_CODE} returning the torch.nn.Module the "
                                            "model serves, built from its trained artifact", file, line))],
                "outputs": []}
    problems, outputs = check(module, example_inputs(shapes, dtypes), model_dir)
    return {"problems": [asdict(p) for p in problems], "outputs": outputs}


def _shapes_and_dtypes(args: argparse.Namespace) -> tuple[list[tuple[int, ...]], list[str]]:
    shapes = [parse_shape(s) for s in args.input_shape]
    dtypes = list(args.input_dtype or []) or ["float32"] * len(shapes)
    if len(dtypes) != len(shapes) or any(d not in DTYPES for d in dtypes):
        raise ValueError(f"one input dtype per input shape, each one of {', '.join(DTYPES)}")
    return shapes, dtypes


def export(bento_src: Path, artifact: str, output_dir: Path, shapes: list[tuple[int, ...]], dtypes: list[str]) -> Path:
    """Check the trained module of a Bento's src/ and write the export folder (artifact, train.py, manifest)."""
    weights = Path(bento_src) / artifact
    if not weights.exists() or not (Path(bento_src) / MODEL_CODE).is_file():
        raise FileNotFoundError(f"{bento_src} holds no {artifact} and {MODEL_CODE}: the Bento must include both "
                                "(bentofile.yaml include:)")
    result = run_check(Path(bento_src), weights, shapes, dtypes)
    if result["problems"]:
        problem = result["problems"][0]
        raise ValueError(f"{problem['message']}\n  fix: {problem['fix']}")
    output_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy2(weights, output_dir / artifact)
    shutil.copy2(Path(bento_src) / MODEL_CODE, output_dir / MODEL_CODE)
    manifest = {"format": EXPORT_FORMAT, "artifact": artifact, "input_shapes": [list(s) for s in shapes],
                "input_dtypes": dtypes, "outputs": result["outputs"]}
    (output_dir / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return output_dir


def compile_model(export_dir: Path, output: Path, shapes: list[tuple[int, ...]],
                  dtypes: list[str]) -> Path:  # pragma: no cover - inf2 only (the Neuron SDK image)
    """torch_neuronx.trace of the exported module with the declared static inputs, saved as TorchScript."""
    import torch
    import torch_neuronx  # noqa: PLC0415 - only in the Neuron SDK image, on the inf2 node

    manifest = json.loads((Path(export_dir) / MANIFEST).read_text(encoding="utf-8"))
    if manifest.get("format") != EXPORT_FORMAT or [tuple(s) for s in manifest["input_shapes"]] != shapes \
            or manifest["input_dtypes"] != dtypes:
        raise ValueError(f"{export_dir}/{MANIFEST} was exported for {manifest.get('input_shapes')} "
                         f"{manifest.get('input_dtypes')}, not {shapes} {dtypes}: export and compile from one workflow")
    module = load_module(Path(export_dir), Path(export_dir) / manifest["artifact"])
    traced = torch_neuronx.trace(module, example_inputs(shapes, dtypes))
    output.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(traced, str(output))
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.recipes.torch_neuronx_trace")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("check", "export", "compile"):
        p = sub.add_parser(name)
        p.add_argument("--input-shape", action="append", required=True, help="batch first, e.g. 1,13 (per input)")
        p.add_argument("--input-dtype", action="append", help=f"per input: {', '.join(DTYPES)} (default float32)")
        if name == "check":
            p.add_argument("--model-dir", required=True, type=Path, help="where the model's train.py is")
            p.add_argument("--artifact", required=True, type=Path, help="the trained artifact load() reads")
        elif name == "export":
            p.add_argument("--bento-src", required=True, type=Path, help="the Bento's src/ (train.py + the artifact)")
            p.add_argument("--artifact", default="model.pt", help="the artifact's name in it (model.yaml's)")
            p.add_argument("--output-dir", required=True, type=Path)
            p.add_argument("--architecture", default="", help="model.yaml's (this recipe's: pytorch)")
        else:
            p.add_argument("--export-dir", required=True, type=Path)
            p.add_argument("--output", required=True, type=Path)
    args = parser.parse_args(argv)
    try:
        shapes, dtypes = _shapes_and_dtypes(args)
        if args.command == "check":
            result = run_check(args.model_dir, args.artifact, shapes, dtypes)
            print(json.dumps(result, sort_keys=True))
            return 2 if result["problems"] else 0
        if args.command == "export":
            print(export(args.bento_src, args.artifact, args.output_dir, shapes, dtypes))
        else:  # pragma: no cover - inf2 only
            print(compile_model(args.export_dir, args.output, shapes, dtypes))
    except (ValueError, OSError, LookupError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
