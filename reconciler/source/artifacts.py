"""Do a commit's DVC-tracked weights exist in the remote? The outputs a model's pointers name, and which of
them the default DVC remote holds (existence checks, nothing is downloaded). Read by the plan's artifact check
(reconciler.plan.weights) and the build stage (reconciler.build.artifacts fetches them); below both.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from reconciler.errors import ArtifactError

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def clean_output(text: str) -> str:
    """DVC's message without its terminal colours."""
    return _ANSI.sub("", text).strip()


@dataclass(frozen=True)
class MissingArtifact:
    """A DVC-tracked output a model's pointer names, whose content the remote does not hold."""

    model: str
    path: str  # the tracked output, repo-relative (models/x/model.pkl)
    pointer: str  # the pointer file naming it (models/x/model.pkl.dvc)
    checksum: str  # "md5:<hex>" as recorded in the pointer


def tracked_outputs(model: str, inputs: dict[str, str], kinds: dict[str, str],
                    artifacts: list[str], folder: str) -> list[MissingArtifact]:
    """Every DVC output of one model (from its content hash inputs), with the pointer naming it. Pure."""
    pointers = [f"{folder}/{a}" for a in artifacts]
    out = []
    for path, checksum in sorted(inputs.items()):
        if kinds.get(path) != "data" or is_pointer(path):
            continue
        pointer = next((p for p in pointers if p == f"{path}.dvc"), None) or \
            next((p for p in pointers if p.endswith("dvc.lock")), None) or f"{path}.dvc"
        out.append(MissingArtifact(model, path, pointer, checksum))
    return out


def is_pointer(path: str) -> bool:
    """A DVC pointer file (`x.dvc`, `dvc.lock`), as opposed to an output it names."""
    return path.endswith(".dvc") or path.rsplit("/", 1)[-1] == "dvc.lock"


def missing_outputs(outputs: list[MissingArtifact], present: set[str]) -> list[MissingArtifact]:
    """The outputs whose object id is not among those the remote holds. Pure.

    A pointer that records no md5 (or is unreadable) is missing by definition: nothing can fetch it.
    """
    return [o for o in outputs if not o.checksum.startswith("md5:") or o.checksum[4:] not in present]


def default_remote(repo_root: Path) -> tuple[str, str] | None:
    """(name, url) of the repository's default DVC remote, or None when none is configured."""
    from dvc.config import Config, ConfigError

    dvc_dir = Path(repo_root).resolve() / ".dvc"
    if not dvc_dir.is_dir():
        return None
    try:
        config = Config(dvc_dir=str(dvc_dir))
    except (ConfigError, OSError):
        return None
    name = config.get("core", {}).get("remote")
    if not name or name not in config.get("remote", {}):
        return None
    url = str(config["remote"][name].get("url", ""))
    root = Path(repo_root).resolve()
    if url.startswith("/") and Path(url).is_relative_to(root):
        url = str(Path(url).relative_to(root))  # paths are shown relative to the repository root
    return name, url


def remote_objects(repo_root: Path, checksums: list[str]) -> set[str]:
    """Which of these md5 object ids the default DVC remote holds: existence checks, nothing is downloaded.

    Raises ArtifactError (with a fix) when there is no DVC repository, no default remote, or the
    remote cannot be listed.
    """
    oids = sorted({c[4:] for c in checksums if c.startswith("md5:")})
    if not oids:
        return set()
    from dvc.config import NoRemoteError
    from dvc.exceptions import DvcException, NotDvcRepoError
    from dvc.repo import Repo

    root = Path(repo_root).resolve()
    try:
        repo = Repo(str(root))
    except NotDvcRepoError:
        raise ArtifactError(f"{root.name} is not a DVC repository (no .dvc/), so tracked weights cannot be checked",
                            fix="run `dvc init`, add a default remote (`dvc remote add -d storage <url>`) "
                                "and commit .dvc/") from None
    except DvcException as exc:
        raise ArtifactError(f"DVC cannot open the repository: {clean_output(str(exc))}",
                            fix="check .dvc/config (`dvc config --list`)") from None
    try:
        odb = repo.cloud.get_remote_odb(command="plan")
        return set(odb.oids_exist(oids))
    except NoRemoteError:
        raise ArtifactError("no default DVC remote is configured, so nobody can fetch the tracked weights",
                            fix="`dvc remote add -d storage <url>`, commit .dvc/config, then `dvc push`") from None
    except (DvcException, OSError) as exc:
        raise ArtifactError(f"cannot list the DVC remote: {type(exc).__name__}: {clean_output(str(exc))}",
                            fix="check the remote's URL and credentials (`dvc remote list`, `dvc status -c`), "
                                "or plan offline with --no-check-artifacts") from None
    finally:
        repo.close()


def artifact_error(missing: list[MissingArtifact], remote: tuple[str, str] | None) -> ArtifactError:
    """One model error for the outputs its pointers name that the remote lacks."""
    model = missing[0].model
    where = f"DVC remote {remote[0]!r} ({remote[1]})" if remote else "the DVC remote"
    lines = "; ".join(f"{m.path} ({m.checksum}, pointer {m.pointer})" for m in missing)
    return ArtifactError(f"{len(missing)} DVC-tracked artifact(s) missing from {where}: {lines}; "
                         "the merge build could not fetch them",
                         fix=f"`reconciler pipeline run train --model {model} --push` (retrains and pushes), "
                             f"or `dvc push {' '.join(sorted({m.pointer for m in missing}))}` from the machine "
                             "that has the weights")
