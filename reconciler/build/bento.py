"""BentoML adapter: stage a build context, build a Bento, find Bentos, containerize.

Bentos are built with BentoML's Python API (`bentoml.bentos.build_bentofile`) in a child Python
process, one per model: BentoML imports the model's `service.py` to build it, and two models'
`service` modules (or a BENTOML_HOME chosen after bentoml was first imported) cannot share one
interpreter. The child writes its result as JSON; a failure becomes a BuildError with BentoML's
own message.

The build context is staged from exactly what the content hash covers: the model folder's files
(git-visible ones: .gitignore'd clutter stays out), the DVC-tracked outputs its pointers name (as
fetched), plus the repository modules its code imports (at their repository paths, so
`import common.features` still works),
plus a bentofile that sets the version (the content hash prefix), labels the Bento with the full
hash, adds the shared modules to `include`, and defaults `python.lock_packages` to false (locking
asks a package index, which offline builds cannot reach; set it to true in the bentofile to lock).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from reconciler import labels
from reconciler.errors import BuildError, SpecProblem, UnsafePathError
from reconciler.source.hashing import ModelHash
from pipelines.locks import PYTORCH_INDEXES, canonical, index_options
from reconciler.catalog.accelerators import merge_bentofile

VERSION_FILE = "gitops-version.json"  # pipelines.serving.VERSION_FILE: read by the service
ENGINES = ("docker", "podman", "buildah", "nerdctl", "buildctl")  # `bentoml containerize` backends
ENGINE_ENV = "RECONCILER_CONTAINER_ENGINE"  # force one, or "none" to disable image builds


@dataclass(frozen=True)
class BentoInfo:
    tag: str  # <model>:<hash prefix>
    path: Path  # its folder in the Bento store


def bentoml_home(explicit: Path | str | None = None) -> Path:
    """The Bento store root: an explicit path, else $BENTOML_HOME, else ~/bentoml (BentoML's default)."""
    if explicit:
        return Path(explicit).expanduser()
    return Path(os.environ.get("BENTOML_HOME") or Path.home() / "bentoml").expanduser()


def find_bento(home: Path, name: str, version: str) -> BentoInfo | None:
    """The Bento `name:version` if the store has it (a file check: no bentoml import)."""
    folder = home / "bentos" / name.lower() / version
    return BentoInfo(f"{name.lower()}:{version}", folder) if (folder / "bento.yaml").is_file() else None


def built_commit(bento: BentoInfo | None) -> str | None:
    """The git commit a bento was built from, as its gitops-version.json says (what the service's
    X-Model-Version returns as `commit=`); None when the bento has no such record."""
    if bento is None:
        return None
    try:
        record = json.loads((bento.path / "src" / VERSION_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    commit = record.get("git_commit") if isinstance(record, dict) else None
    return commit if isinstance(commit, str) and commit != "unknown" else None


# --------------------------------------------------------------------------- build context


# bentofile fields BentoML resolves as paths against the build context (absolute paths are taken as they
# are: `python.requirements_txt: /etc/shadow` would copy the build machine's file into the Bento)
_BENTOFILE_FILES = (("python", "requirements_txt"), ("python", "wheels"), ("conda", "environment_yml"),
                    ("docker", "setup_script"), ("docker", "dockerfile_template"))


def bentofile_path_problems(config: dict, shown: str) -> list[SpecProblem]:
    """Every path a bentofile names (include/exclude patterns, requirement files, wheels, scripts,
    `description: "file: ..."`) must stay in the model folder: relative, no '..'. Pure."""
    found: list[tuple[str, object]] = []
    for key in ("include", "exclude"):
        for i, value in enumerate(config.get(key) or [] if isinstance(config.get(key), list) else [config.get(key)]):
            if value is not None:
                found.append((f"{key}[{i}]", value))
    for section, key in _BENTOFILE_FILES:
        part = config.get(section)
        value = part.get(key) if isinstance(part, dict) else None
        for i, item in enumerate(value if isinstance(value, list) else [value] if value is not None else []):
            found.append((f"{section}.{key}" + (f"[{i}]" if isinstance(value, list) else ""), item))
    description = config.get("description")
    if isinstance(description, str) and description.startswith("file:"):
        found.append(("description", description[len("file:"):].strip()))
    problems = []
    for field_name, value in found:
        text = str(value).strip()
        parts = text.replace("\\", "/").split("/")
        if text.startswith(("/", "~")) or ".." in parts or re.match(r"^[A-Za-z]:", text):
            problems.append(SpecProblem(shown, f"{text!r} leaves the model folder (an absolute path, '~' or '..')",
                                        field=field_name,
                                        fix="name files inside the model folder, relative to the bentofile"))
    return problems


def python_packages(config: dict, lock: list[str], own: list[str]) -> None:
    """Make the bentofile's `python.packages` the model's lock: its pins first, then the other packages of the
    (merged) bentofile. The model bentofile's `own` entries of a package the lock pins are dropped (the Bento
    installs the versions the model trained with); a kind overlay's pin replaces the lock's (an image pins its
    own torch build: images.gpu.bentofile in model.yaml). Then the package indexes the final pins need
    (PyTorch's variant index for a +cpu / +cuXXX pin) are set. In place."""

    python = config.setdefault("python", {})
    if not isinstance(python, dict):
        return

    def name_of(requirement: str) -> str:
        return canonical(re.split(r"[\[<>=!~;@ ]", requirement.strip(), maxsplit=1)[0])

    locked = {name_of(r) for r in lock}
    chosen: dict[str, str] = {name_of(r): r for r in lock}
    for requirement in python.get("packages") or []:
        if not isinstance(requirement, str) or requirement in lock:
            continue
        key = name_of(requirement)
        if key in locked and requirement in own:
            continue  # the model's bentofile naming a locked package: the lock's pin wins
        chosen.pop(key, None)
        chosen[key] = requirement
    python["packages"] = list(chosen.values())
    pins = {name: r.split("==", 1)[1] for name, r in chosen.items() if "==" in r}
    urls = [u for u in python.get("extra_index_url") or [] if u not in PYTORCH_INDEXES.values()]
    urls += [u for u in index_options(pins)[1::2] if u not in urls]
    if urls:
        python["extra_index_url"] = urls
    else:
        python.pop("extra_index_url", None)


def stage_context(files: dict[str, Path], bentofile: Path, *, service: str, name: str, model_hash: str,
                  shared: list[str], dest: Path, overlay: dict | None = None,
                  version: dict | None = None, lock: list[str] | None = None) -> Path:
    """Copy `files` (context-relative path -> source file or directory) into dest and write the build
    bentofile there (from `bentofile`, the model's own, with the pool kind's `overlay` merged on top:
    reconciler.catalog.accelerators.kind_overlay; its `files` are written into the context). `version`
    (model hash, git commit, weights md5s) is written as gitops-version.json beside the service, which
    returns it in every response. `lock` (the model's lock as `name==version` lines, pipelines.locks) becomes
    the Bento's python.packages (`python_packages`). Returns the staged bentofile."""
    try:
        config = yaml.safe_load(bentofile.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise BuildError(f"bentofile {bentofile} is missing", fix="add it to the model folder, or point "
                         "`bentofile:` in model.yaml at it") from None
    except yaml.YAMLError as exc:
        raise BuildError(f"bentofile {bentofile} is not valid YAML: {exc}", fix="fix the YAML syntax") from None
    if not isinstance(config, dict):
        raise BuildError(f"bentofile {bentofile} must be a mapping",
                         fix="see https://docs.bentoml.com/en/latest/reference/bentoml/bento-build-options.html")
    problems = bentofile_path_problems(config, str(bentofile))
    if problems:
        raise UnsafePathError(problems)
    dest.mkdir(parents=True, exist_ok=True)
    for rel, src in sorted(files.items()):
        target = dest / rel
        if target.exists():
            raise BuildError(f"{rel} would be staged twice (a shared module collides with a model file)",
                             fix=f"rename the model's {rel} or the shared module")
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():  # a DVC-tracked directory
            shutil.copytree(src, target, symlinks=True, copy_function=_link_or_copy)
        elif src.is_symlink():
            target.symlink_to(os.readlink(src))
        else:
            _link_or_copy(str(src), str(target))

    own_packages = list((config.get("python") or {}).get("packages") or []) if isinstance(config.get("python"), dict) else []
    if overlay:

        for rel, text in (overlay.get("files") or {}).items():
            (dest / rel).write_text(text, encoding="utf-8")
        config = merge_bentofile(config, overlay)
    if lock is not None:
        python_packages(config, lock, own_packages)
    if version is not None:
        (dest / VERSION_FILE).write_text(json.dumps(version, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        if config.get("include") is not None and VERSION_FILE not in config["include"]:
            config["include"] = [*config["include"], VERSION_FILE]
    config.setdefault("service", service)
    config["name"] = name
    config["labels"] = {**(config.get("labels") or {}), labels.MODEL_HASH: model_hash}
    if shared and config.get("include") is not None:
        config["include"] = [*config["include"], *shared]
    python = config.get("python")
    if python is None:
        config["python"] = {"lock_packages": False}
    elif isinstance(python, dict):
        python.setdefault("lock_packages", False)
    staged = dest / ".reconciler-bentofile.yaml"
    staged.write_text(yaml.safe_dump(config, sort_keys=False))  # a new file: never a hard link to the source
    return staged


def _link_or_copy(src: str, dst: str) -> str:
    try:
        os.link(src, dst)  # weights can be large: hard-link when the file system allows
        return dst
    except OSError:
        return shutil.copy2(src, dst)


# --------------------------------------------------------------------------- build (child process)


def build(context: Path, bentofile: Path, *, name: str, version: str, home: Path, timeout: float = 900) -> BentoInfo:
    """Build a Bento from a staged context into the store at `home`. Raises BuildError."""
    home.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bento-result-") as tmp:
        result_file = Path(tmp) / "result.json"
        request = {"bentofile": str(bentofile), "build_ctx": str(context), "name": name, "version": version,
                   "result": str(result_file)}
        env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"}
        try:
            proc = subprocess.run([sys.executable, "-m", "reconciler.build.bento", json.dumps(request)], cwd=context,
                                  env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise BuildError(f"bentoml build of {name}:{version} took longer than {timeout:.0f} s",
                             fix="check the bentofile for slow steps (setup scripts, large includes)") from None
        try:
            result = json.loads(result_file.read_text())
        except (OSError, ValueError):
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-8:])
            raise BuildError(f"bentoml build of {name}:{version} crashed (exit {proc.returncode}):\n{tail}",
                             fix="run `bentoml build` in the model folder to see the full output") from None
    if "error" in result:
        raise BuildError(f"bentoml build of {name}:{version} failed: {result['error']}", fix=result.get("fix") or
                         "run `bentoml build` in the model folder to reproduce; check service.py imports and bentofile")
    return BentoInfo(result["tag"], Path(result["path"]))


def _child(request: dict) -> None:
    """Runs in the child: the actual BentoML Python API call."""
    out = Path(request["result"])
    try:
        import bentoml

        bento = bentoml.bentos.build_bentofile(request["bentofile"], build_ctx=request["build_ctx"],
                                               name=request["name"], version=request["version"])
        out.write_text(json.dumps({"tag": str(bento.tag), "path": bento.path}))
    except Exception as exc:  # every failure goes back to the parent as data
        fix = None
        if type(exc).__name__ == "ImportServiceError":
            fix = ("the service could not be imported: add its dependencies to the bentofile's python.packages "
                   "and install them where you build, or fix the import path in model.yaml `service:`")
        out.write_text(json.dumps({"error": f"{type(exc).__name__}: {exc}", "fix": fix}))


# --------------------------------------------------------------------------- containerize


def container_engine() -> str | None:
    """The first `bentoml containerize` backend that actually works here (docker needs a live daemon)."""
    forced = os.environ.get(ENGINE_ENV, "").strip()
    if forced:
        return None if forced == "none" else forced
    probes = {"docker": ["docker", "info", "--format", "{{.ServerVersion}}"], "podman": ["podman", "info"],
              "buildah": ["buildah", "version"], "nerdctl": ["nerdctl", "info"], "buildctl": ["buildctl", "debug", "workers"]}
    for engine in ENGINES:
        if shutil.which(engine) is None:
            continue
        try:
            if subprocess.run(probes[engine], capture_output=True, timeout=15).returncode == 0:
                return engine
        except (OSError, subprocess.TimeoutExpired):
            continue
    return None


def containerize_command(tag: str, image: str, engine: str, labels: dict[str, str] | None = None) -> list[str]:
    """`bentoml containerize TAG --backend ENGINE -t IMAGE [--opt label=K=V ...]` (image labels, e.g. the
    build commit, which `reconciler build` reads back from the registry)."""
    command = [str(Path(sys.executable).with_name("bentoml")), "containerize", tag, "--backend", engine, "-t", image]
    for key, value in sorted((labels or {}).items()):
        command += ["--opt", f"label={key}={value}"]
    return command


def containerize_and_push(tag: str, image: str, engine: str, home: Path, labels: dict[str, str] | None = None) -> None:
    """`bentoml containerize TAG -t IMAGE --backend ENGINE`, then `ENGINE push IMAGE`. Raises BuildError."""
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"}
    steps = [containerize_command(tag, image, engine, labels)]
    if engine == "buildctl":
        raise BuildError("the buildctl backend cannot push by itself here",
                         fix=f"set {ENGINE_ENV}=docker (or podman), or use the Argo image build (ARGO_SERVER)")
    steps.append([engine, "push", image])
    for cmd in steps:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-8:])
            raise BuildError(f"`{' '.join(cmd[:3])} ...` failed (exit {proc.returncode}):\n{tail}",
                             fix=f"check that {engine} can reach the base image registry and that you are logged in "
                                 f"to the target registry (`{engine} login {image.split('/')[0]}`)")


def export(tag: str, destination: str, home: Path) -> str:
    """`bentoml export TAG DEST` (a path or an fs URL such as s3://bucket/x.bento). Raises BuildError."""
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"}
    proc = subprocess.run([str(Path(sys.executable).with_name("bentoml")), "export", tag, destination],
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise BuildError(f"bentoml export of {tag} to {destination} failed:\n{tail}",
                         fix="check that the destination is writable (for s3:// install fs-s3fs and set credentials)")
    return destination


if __name__ == "__main__":
    _child(json.loads(sys.argv[1]))


def staged_files(root: Path, folder: str, model_hash: ModelHash) -> tuple[dict[str, Path], list[str]]:
    """What goes into the build context: context-relative path -> source, and the shared module paths.

    Files of the model folder land at the context root, shared modules at their repository paths, and
    DVC outputs (fetched into the working tree) where their pointers put them.
    """
    files: dict[str, Path] = {}
    shared: list[str] = []
    prefix = folder + "/"
    for path, kind in model_hash.kinds.items():
        if kind == "spec" or model_hash.inputs[path] == "missing":
            continue
        if path.startswith(prefix):
            rel = path[len(prefix):]
        elif kind == "shared-code":
            rel = path
            shared.append(path)
        else:
            continue  # a bentofile or pointer output outside the folder: read from the repository, not staged
        files[rel] = root / path
    return files, sorted(shared)
