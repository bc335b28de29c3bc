"""DVC adapter: bring a model's tracked artifacts (weights, tokenizers) into the working tree.

Uses DVC's Python API (`dvc.repo.Repo(root).pull(targets=...)`) against the repository's default
remote (the template configures a local-directory remote). Every DVC exception becomes an
ArtifactError that says which pointer failed and what to do about it.

Hashing never comes here: the content hash reads the md5s straight from the pointer files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from reconciler.errors import ArtifactError

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True)
class FetchResult:
    fetched: int  # objects downloaded from the remote
    added: list[str]  # workspace paths checked out
    modified: list[str]


def _clean(text: str) -> str:
    return _ANSI.sub("", text).strip()


def fetch(repo_root: Path, pointers: list[Path]) -> FetchResult:
    """`dvc pull` of the given pointer files (`*.dvc` or `dvc.lock`) into the working tree.

    Files already present with the recorded md5 are left alone, so this is cheap when nothing changed.
    """
    if not pointers:
        return FetchResult(0, [], [])
    from dvc.exceptions import CheckoutError, DvcException, NotDvcRepoError
    from dvc.repo import Repo

    root = Path(repo_root).resolve()
    shown = ", ".join(str(Path(p).resolve().relative_to(root)) if Path(p).resolve().is_relative_to(root) else str(p)
                      for p in pointers)
    try:
        repo = Repo(str(root))
    except NotDvcRepoError:
        raise ArtifactError(f"{root} is not a DVC repository, so {shown} cannot be fetched",
                            fix="run `dvc init` in the repository root and commit .dvc/") from None
    except DvcException as exc:
        raise ArtifactError(f"DVC cannot open {root}: {_clean(str(exc))}",
                            fix="check .dvc/config (`dvc config --list`)") from None
    try:
        remote = repo.config.get("core", {}).get("remote")
        try:
            stats = repo.pull(targets=[str(Path(p).resolve()) for p in pointers])
        except CheckoutError as exc:
            missing = [line for line in _clean(str(exc)).splitlines()[1:] if line and not line.startswith(("Is your", "<"))]
            if not remote:
                fix = ("configure a default remote (`dvc remote add -d storage <url>`) and commit .dvc/config; "
                       "then run `dvc push` from the machine that trained the model")
            else:
                fix = (f"the remote {remote!r} does not have these files: run `dvc push` from the machine that "
                       "trained the model (and commit the .dvc pointer it pushed)")
            raise ArtifactError(f"DVC could not fetch {', '.join(missing) or shown} (pointer: {shown})",
                                fix=fix) from None
        except DvcException as exc:
            raise ArtifactError(f"DVC failed to pull {shown}: {_clean(str(exc))}",
                                fix="check that the remote in .dvc/config is reachable (`dvc status -c`), "
                                    "and that `dvc push` was run after training") from None
    finally:
        repo.close()
    counts = stats.get("stats", {}) if isinstance(stats, dict) else {}
    return FetchResult(int(counts.get("fetched", 0)), list(stats.get("added", [])), list(stats.get("modified", [])))
