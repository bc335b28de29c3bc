"""`reconciler model new NAME --from EXISTING`: a new model folder, copied from one that works.

The copy is rewritten so nothing of the source's identity survives: the model name (model.yaml
`name`, the bentofile's `name` and `gitops.ml/model` label, every mention in the files), and the
BentoML service class (`IrisClassifier` -> `WineClassifier`, in service.py and in `service:`).
What belongs to the source's trained weights is left out (DVC pointers, their outputs,
metrics.json): the new model gets its own by training (`reconciler pipeline run train --model NAME
--push`). The rewriting is pure (`rewrite`) and tested on its own; `new_model` does the file I/O.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from reconciler.catalog.fields import DNS1123_LABEL, dns_label_fix
from reconciler.errors import ReconcilerError, closest, did_you_mean
import json
import yaml

MODELS_DIR = "models"
# the source's trained state: never copied into a new model
GENERATED = {"metrics.json"}
SKIP_DIRS = {"__pycache__", ".ipynb_checkpoints"}
TEXT_SUFFIXES = {".py", ".yaml", ".yml", ".md", ".txt", ".toml", ".json", ".cfg", ".ini", ""}


def class_name(model: str) -> str:
    """'wine-classifier' -> 'WineClassifier' (a valid Python class name for the BentoML service)."""
    name = "".join(part[:1].upper() + part[1:] for part in re.split(r"[-_.]", model) if part)
    return name if name[:1].isalpha() else f"Model{name}"


@dataclass(frozen=True)
class Rename:
    old_name: str
    new_name: str
    old_class: str
    new_class: str

    def apply(self, text: str) -> str:
        """Replace whole-word mentions of the old model name and service class. Pure."""
        text = re.sub(rf"(?<![\w-]){re.escape(self.old_name)}(?![\w-])", self.new_name, text)
        return re.sub(rf"\b{re.escape(self.old_class)}\b", self.new_class, text)


PLACEHOLDER = "TODO"  # a description starting with it fails validation (catalog/specs.py), with its fix


def placeholder_description(name: str) -> str:
    return f"{PLACEHOLDER}: one line on what {name} predicts, from what input"


def fit_spec(model_yaml: str, name: str, *, description: str | None, architecture: str | None) -> str:
    """The copied model.yaml with what described the SOURCE model replaced. Pure.

    `description:` becomes the one given, or a placeholder that fails validation until it is written.
    `architecture:` (what the trained weights are) becomes the one given, or is left out with a comment:
    the new train.py decides it, a model on an Inferentia pool must then declare it (a plan error says
    so), and a declared one that differs from the trained weights is a plan error too."""
    described = description if description is not None else placeholder_description(name)
    json_string = _yaml_string(described)
    lines = model_yaml.splitlines()
    out: list[str] = []
    has_description = False
    for line in lines:
        if re.match(r"^description\s*:", line):
            out.append(f"description: {json_string}")
            has_description = True
        elif re.match(r"^architecture\s*:", line):
            if out and out[-1].lstrip().startswith("#"):
                out.pop()  # the source's comment on its own architecture
            if architecture:
                out.append(f"architecture: {architecture}")
            else:
                out.append("# architecture: what train.py fits (e.g. sklearn-scaler-mlp), needed to serve from an "
                           "Inferentia pool; `reconciler plan` checks it against the trained weights")
        else:
            out.append(line)
    if not has_description:
        at = next((i + 1 for i, line in enumerate(out) if re.match(r"^owner\s*:", line)), len(out))
        out.insert(at, f"description: {json_string}")
    if architecture and not any(re.match(r"^architecture\s*:", line) for line in out):
        out.append(f"architecture: {architecture}")
    text = "\n".join(out)
    return text + ("\n" if model_yaml.endswith("\n") else "")


def _yaml_string(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)  # a JSON string is a YAML double-quoted scalar


def service_class(model_yaml: str) -> str | None:
    """The class of `service: file.py:ClassName` in a model.yaml text, or None."""
    match = re.search(r"^service:\s*[\"']?[\w./-]+\.py:(\w+)", model_yaml, flags=re.MULTILINE)
    return match.group(1) if match else None


def _dvc_outputs(folder: Path) -> set[str]:
    """Files the source's DVC pointers track (their weights), relative to the folder."""

    outs: set[str] = set()
    for pointer in folder.glob("*.dvc"):
        try:
            data = yaml.safe_load(pointer.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError):
            continue
        outs.update(o["path"] for o in data.get("outs") or [] if isinstance(o, dict) and isinstance(o.get("path"), str))
    return outs


def plan_copy(folder: Path) -> list[Path]:
    """The files of a model folder a new model starts from (relative paths): no weights, pointers or metrics."""
    skip = _dvc_outputs(folder) | GENERATED
    files = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if not path.is_file() or path.is_symlink() or set(rel.parts) & SKIP_DIRS:
            continue
        if path.suffix == ".dvc" or str(rel) in skip or path.suffix in (".pkl", ".pyc"):
            continue
        files.append(rel)
    return files


def new_model(root: Path, name: str, source: str | None = None, *, owner: str | None = None,
              description: str | None = None, architecture: str | None = None) -> list[str]:
    """Create models/<name>/ from models/<source>/; return the written files, repo-relative."""
    root = Path(root).resolve()
    models = root / MODELS_DIR
    if len(name) > 63 or not DNS1123_LABEL.match(name):
        suggestion = dns_label_fix(name)
        example = suggestion.split("'")[1] if suggestion.startswith("use '") else "fraud-detector"
        raise ReconcilerError(f"{name!r} is not a valid model name: use at most 63 lowercase letters, digits and '-', "
                              "starting and ending with a letter or digit",
                              fix=f"{suggestion}: `reconciler model new {example}"
                                  + (f" --from {source}`" if source else "`"))
    target = models / name
    if target.exists():
        raise ReconcilerError(f"{MODELS_DIR}/{name} already exists", fix="pick another name, or edit that folder")
    known = sorted(p.name for p in models.iterdir() if (p / "model.yaml").is_file()) if models.is_dir() else []
    if source is None:
        if not known:
            raise ReconcilerError(f"there is no model under {MODELS_DIR}/ to start from",
                                  fix="pass --from with a model folder of another checkout of the template")
        source = "iris-classifier" if "iris-classifier" in known else known[0]
    src = models / source
    if not (src / "model.yaml").is_file():
        match = closest(source, known)
        raise ReconcilerError(f"{MODELS_DIR}/{source}/model.yaml not found: cannot start from {source!r}"
                              + did_you_mean(source, known),
                              fix=f"use --from {match}" if match else f"pick one of: {', '.join(known) or 'none'}")
    old_class = service_class((src / "model.yaml").read_text(encoding="utf-8")) or class_name(source)
    rename = Rename(source, name, old_class, class_name(name))
    written = []
    try:
        for rel in plan_copy(src):
            dest = target / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            if rel.suffix in TEXT_SUFFIXES:
                try:
                    text = (src / rel).read_text(encoding="utf-8")
                except UnicodeDecodeError:
                    shutil.copy2(src / rel, dest)
                else:
                    text = rename.apply(text)
                    if str(rel) == "model.yaml":
                        if owner:
                            text = re.sub(r"^owner:.*$", f"owner: {owner}", text, count=1, flags=re.MULTILINE)
                        text = fit_spec(text, name, description=description, architecture=architecture)
                    dest.write_text(text, encoding="utf-8")
            else:
                shutil.copy2(src / rel, dest)
            written.append(f"{MODELS_DIR}/{name}/{rel}")
    except OSError as exc:
        shutil.rmtree(target, ignore_errors=True)
        raise ReconcilerError(f"cannot write {MODELS_DIR}/{name}: {exc.strerror}", fix="check the folder is writable") from None
    return written
