"""Training environments: a virtual environment per model lock, in which `python -m pipelines.steps` runs.

In the catalog (below the plan and the build): the local runner trains in it, and the plan's trace check
(reconciler/plan/trace.py) runs a model's own framework in it, never in the reconciler's environment.

`training_python(root, model)` is the Python of the environment holding exactly the model's lock
(pipelines/locks.py: `models/<model>/requirements.lock`, else `pipelines/requirements.lock`), made once with
`uv venv` + `uv pip install --no-deps -r LOCK` and cached under the lock's hash outside the repository
($RECONCILER_VENV_CACHE, default ~/.cache/model-gitops/venvs). It is never the reconciler's own environment:
two models may pin different versions of one library, and the reconciler's own numpy never trains a model.
`platform_path()` puts only the platform's `pipelines` package on that environment's PYTHONPATH.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from pipelines.locks import LockError, index_options, lock_digest, read_lock
from pipelines.locks import lock_file as find_lock
from reconciler.errors import ReconcilerError
import configparser

VENV_CACHE_ENV = "RECONCILER_VENV_CACHE"  # where per-lock training environments live (default ~/.cache/...)
INSTALL_TIMEOUT = 1800.0


def venv_cache() -> Path:
    """The folder of cached training environments: $RECONCILER_VENV_CACHE, else $XDG_CACHE_HOME (or
    ~/.cache)/model-gitops/venvs. Outside any repository: environments are build outputs."""
    explicit = os.environ.get(VENV_CACHE_ENV)
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "model-gitops" / "venvs"


PIP_CONFIGS = ("/etc/pip.conf", "/etc/xdg/pip/pip.conf", "~/.pip/pip.conf", "~/.config/pip/pip.conf")


def _find_links() -> list[str]:
    """The local wheel folders pip is configured with (`find-links` of pip's config files, and PIP_FIND_LINKS):
    uv reads neither, and a machine may keep wheels there that its index does not serve (a +cpu torch build)."""

    found: list[str] = []
    for name in PIP_CONFIGS:
        parser = configparser.ConfigParser()
        try:
            parser.read(os.path.expanduser(name), encoding="utf-8")
        except (configparser.Error, UnicodeDecodeError):
            continue
        for section in ("global", "install"):
            found += parser.get(section, "find-links", fallback="").split()
    found += os.environ.get("PIP_FIND_LINKS", "").split()
    return [entry for i, entry in enumerate(found) if entry not in found[:i]]


def install_command(lock: Path, python: Path, pins: dict[str, str]) -> list[str]:
    """`uv pip install --no-deps -r LOCK` into `python`'s environment: exactly the lock, nothing resolved
    beside it (a lock that misses a dependency fails at import, naming it), plus PyTorch's variant index for
    a +cpu / +cuXXX pin that no local wheel folder holds."""
    links = _find_links()
    command = [_uv(), "pip", "install", "--quiet", "--no-deps", "--compile-bytecode", "--python", str(python),
               "-r", str(lock)]
    for link in links:
        command += ["--find-links", link]
    return command + index_options(pins, links)


def _uv() -> str:
    beside = Path(sys.executable).with_name("uv")
    found = str(beside) if beside.is_file() else shutil.which("uv")
    if not found:
        raise ReconcilerError("uv is not installed: the per-model training environments are made with it",
                              fix="pip install uv (it comes with `pip install -e '.[test]'` and the [build] extra)")
    return found


SERVE_PACKAGES = ("bentoml==1.4.39",)  # requirements/build.txt's pin: what `bentoml serve` runs a Bento with


def training_python(root: Path, model: str, *, cache: Path | None = None) -> Path:
    """The Python of `model`'s training environment: a virtual environment with exactly its lock installed,
    made on first use and kept in `cache` (default venv_cache()) under the lock's content hash, so every model
    sharing a lock shares one environment and a changed lock gets a new one. Made in a temporary folder and
    renamed into place, so a half-installed environment is never used (and two runners racing are safe); made
    `--relocatable`, so its scripts (bin/bentoml, ...) still run after the rename."""
    return _environment(root, model, cache=cache)


def serving_python(root: Path, model: str, *, cache: Path | None = None) -> Path:
    """The Python of `model`'s serving environment: its lock (`--no-deps`, exactly) plus BentoML (SERVE_PACKAGES,
    resolved with the lock's pins as constraints), cached like the training one. `<it>/bentoml serve TAG` runs a
    Bento of any framework with the libraries its image installs, never the reconciler's."""
    return _environment(root, model, cache=cache, extra=SERVE_PACKAGES)


def _environment(root: Path, model: str, *, cache: Path | None = None, extra: tuple[str, ...] = ()) -> Path:
    try:
        lock = read_lock(root, model)
    except LockError as exc:
        raise ReconcilerError(exc.message, fix=exc.fix) from None
    lock_file = find_lock(root, model)
    key = lock_digest(lock_file.read_bytes() + "\0".join(extra).encode())[:24]
    key = f"serve-{key}" if extra else key
    cache = venv_cache() if cache is None else cache
    final = cache / key
    python = final / "bin" / "python"
    if (final / ".complete").is_file() and python.exists():
        return python
    cache.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=cache))
    try:
        made = subprocess.run([_uv(), "venv", "--quiet", "--relocatable", "--python", sys.executable,
                               str(work / "venv")],
                              capture_output=True, text=True, check=False)
        if made.returncode != 0:
            raise ReconcilerError(f"could not create the training environment of {model}: {_tail(made.stderr)}",
                                  fix=f"run `uv venv` by hand to see why; environments live in {cache} ({VENV_CACHE_ENV})")
        command = install_command(lock_file, work / "venv" / "bin" / "python", lock.pins)
        commands = [command]
        if extra:  # then the extra packages, resolved with their dependencies around the lock's pins (-c)
            base = [c for c in command if c != "--no-deps"]
            at = base.index("-r")
            commands.append([*base[:at], "-c", str(lock_file), *base[at + 2:], *extra])
        for step in commands:
            try:
                done = subprocess.run(step, capture_output=True, text=True, check=False, timeout=INSTALL_TIMEOUT,
                                      env={k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")})
            except subprocess.TimeoutExpired:
                raise ReconcilerError(f"installing {lock.path} took longer than {INSTALL_TIMEOUT:.0f} s",
                                      fix="check that the package index is reachable") from None
            if done.returncode != 0:
                raise ReconcilerError(f"{model}: installing its environment ({lock.path}{' + ' + ', '.join(extra) if step is not command else ''}) "
                                      f"failed: {_tail(done.stderr)}",
                                      fix=f"check the pins of {lock.path} (every one must exist for this Python and platform), "
                                          f"or reproduce with `{' '.join(step[:4])} -r {lock.path}` in a fresh venv")
        (work / "venv" / ".complete").write_text(lock.path + "\n", encoding="utf-8")
        try:
            os.rename(work / "venv", final)
        except OSError:  # another runner finished first: use its environment
            if not (final / ".complete").is_file():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return python


def platform_path() -> Path:
    """A folder holding only the platform's `pipelines` package (a symlink to it), for a training environment's
    PYTHONPATH: a repository without its own pipelines/ still runs `python -m pipelines.steps`, and nothing else
    of the reconciler's environment (its numpy, its scikit-learn) becomes importable there. A repository's own
    pipelines/ comes first (the working directory heads sys.path under -m)."""
    spec = importlib.util.find_spec("pipelines")  # found, not imported (the catalog reads pipelines' lock module only)
    assert spec is not None and spec.origin is not None, "the platform's pipelines package is installed with it"
    package = Path(spec.origin).resolve().parent
    folder = venv_cache() / f"platform-{hashlib.sha256(str(package).encode()).hexdigest()[:16]}"
    link = folder / "pipelines"
    if not link.exists():
        folder.mkdir(parents=True, exist_ok=True)
        try:
            link.symlink_to(package, target_is_directory=True)
        except FileExistsError:  # another runner made it
            pass
    return folder


def _tail(text: str, lines: int = 6) -> str:
    return "\n".join(text.strip().splitlines()[-lines:]) or "(no output)"




def lock_pins(root: Path, model: str) -> list[str]:
    """The model's lock as `name==version` lines: what its Bento installs. ReconcilerError for a bad lock."""
    try:
        return read_lock(root, model).requirements()
    except LockError as exc:
        raise ReconcilerError(exc.message, fix=exc.fix) from None
