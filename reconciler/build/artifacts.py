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
from reconciler.source import guard
from reconciler.source.artifacts import is_pointer
import configparser

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
                fix = (f"the remote {remote!r} does not have these files: retrain and push them "
                       "(`reconciler pipeline run train --model <model> --push`; for the examples, "
                       "`reconciler quickstart`), or `dvc push` from the machine that has them, and commit the pointer")
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


def model_pointers(folder: Path, artifacts: list[str]) -> list[Path]:
    """The pointer files of one model folder: its declared `artifacts`, every `*.dvc`, and the dvc.yaml of
    each dvc.lock (DVC takes stage files as targets to pull a pipeline's outputs)."""
    found = {folder / a for a in artifacts}
    found |= {p for p in folder.rglob("*.dvc") if p.is_file()}
    found |= {p.with_name("dvc.yaml") for p in folder.rglob("dvc.lock") if p.with_name("dvc.yaml").is_file()}
    return sorted(found)


def fetch_model(root: Path, folder: Path, artifacts: list[str], kinds: dict[str, str], name: str) -> FetchResult:
    """`dvc pull` of one model's pointers, then every output they name (its content hash's "data" inputs)
    must be a file or folder in the model folder: a build that fetched no weights fails here, never ships
    a Bento without them. The outputs were checked to stay in the folder when the model was hashed."""

    root = Path(root)
    pointers = model_pointers(folder, artifacts)
    missing = [p for p in pointers if not p.is_file()]
    if missing:
        raise ArtifactError(f"DVC pointer {missing[0].relative_to(root)} is missing",
                            fix=f"run `dvc add` on the artifact in {folder.relative_to(root)}/ and commit the "
                                "pointer, or remove it from `artifacts:` in model.yaml")
    result = fetch(root, pointers)
    for path, kind in sorted(kinds.items()):
        if kind != "data" or is_pointer(path):
            continue
        target = guard.inside(root, path)
        if not (target.is_file() or target.is_dir()) or not target.is_relative_to(folder.resolve()):
            raise ArtifactError(f"{path} of {name} is not in the model folder after the DVC fetch "
                                f"({'not a regular file' if target.exists() else 'missing'})",
                                fix="run `dvc pull` and check that the pointer's outs.path names the file "
                                    "beside it; then `dvc status` shows what DVC expects")
    return result


def committed_remotes(repo_root: Path) -> dict[str, str]:
    """{remote name: url} of the repository's .dvc/config (the file git tracks; not config.local, which a pod
    that checks out the commit never has). {} without one; ArtifactError (with a fix) for a file that is not
    an INI/configobj config. Read with the standard library, not dvc: `pipeline render` needs only the
    [pipelines] extra, and DVC writes this file with configobj (`['remote "<name>"']` sections, `url = ...`)."""

    path = Path(repo_root).resolve() / ".dvc" / "config"
    if not path.is_file():
        return {}
    parser = configparser.ConfigParser(interpolation=None, strict=False, comment_prefixes=("#", ";"))
    try:
        parser.read_string(path.read_text(encoding="utf-8"), source=".dvc/config")
    except (configparser.Error, OSError, UnicodeDecodeError) as exc:
        raise ArtifactError(f".dvc/config cannot be read: {str(exc).splitlines()[0]}",
                            fix="repair it (`dvc remote list` shows what DVC understands), or restore it from git") from None
    remotes: dict[str, str] = {}
    for section in parser.sections():
        found = re.fullmatch(r"""'?\s*remote\s+"([^"]+)"\s*'?""", section.strip())
        url = parser.get(section, "url", fallback="").strip()
        if found and url:
            remotes[found.group(1)] = url[1:-1] if len(url) > 1 and url[0] == url[-1] and url[0] in "'\"" else url
    return remotes
