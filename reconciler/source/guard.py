"""The read guard: the one way the reconciler reads a file of the repository, and the bounds on input.

A repository is input from every contributor (a pull request from a fork included), so a file is
read only if it stays inside the repository tree being read (the working tree, or a revision's
checkout): a path that escapes it, or a symlink anywhere on the way whose target resolves outside it,
is refused with an error naming the in-repository path and the link's text, never the outside
content. Only regular files are read (a FIFO would hang the read, a device never ends), and only
up to a size checked before reading. YAML is checked for alias expansion before it is built.

Bounds are operator settings, read from the environment (never from the repository, which is the
untrusted input); docs/limits.md lists them with their defaults.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

from reconciler.errors import LimitError, SpecError, UnsafePathError
import yaml

ENV_PREFIX = "RECONCILER_"


@dataclass(frozen=True)
class Limits:
    """Input bounds; each is overridable with RECONCILER_<NAME upper-cased> (e.g. RECONCILER_MAX_FILE_BYTES)."""

    max_file_bytes: int = 4 * 1024 * 1024        # one spec, overlay, patch or pointer file
    max_tree_bytes: int = 256 * 1024 * 1024      # all files of one model folder or one environment folder
    max_tree_files: int = 5_000                  # files in one model folder or one environment folder
    max_yaml_nodes: int = 1_000_000              # YAML nodes after alias expansion, per document
    kustomize_timeout: float = 120.0             # seconds per kustomize run (one chunk of models)
    render_cache_max_bytes: int = 2 * 1024 ** 3  # the render cache folder, pruned least recently used first
    render_cache_max_age_days: float = 30.0      # render cache entries unused this long are pruned

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Limits":
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = environ.get(ENV_PREFIX + f.name.upper())
            if raw is None or raw.strip() == "":
                continue
            kind = float if f.type in ("float", float) else int
            try:
                value = kind(raw)
            except ValueError:
                value = None
            if value is None or value <= 0:
                raise LimitError.single(f"${ENV_PREFIX}{f.name.upper()}", f"{raw!r} is not a positive number",
                                        fix=f"unset it for the default ({getattr(cls, f.name)}) or give a positive number")
            values[f.name] = value
        return cls(**values)

    @staticmethod
    def variable(name: str) -> str:
        return ENV_PREFIX + name.upper()


def limits() -> Limits:
    """The bounds in force (read from the environment on each call: cheap, and tests can change them)."""
    return Limits.from_env()


def _display(root: Path, path: Path) -> str:
    try:
        return Path(os.path.relpath(path, root)).as_posix()
    except ValueError:  # another drive (Windows)
        return str(path)


def _within(root: Path, path: Path) -> bool:
    return path == root or root in path.parents


def _within_str(root: str, path: str) -> bool:
    """`_within` on normalised absolute strings: the same answer without building Path objects."""
    return path == root or path.startswith(root if root.endswith("/") else root + "/")


def inside(root: Path, path: Path | str, *, display: str | None = None) -> Path:
    """`path` (absolute, or relative to `root`) resolved, if it and every symlink on its way stay in `root`.

    Raises UnsafePathError naming the path (and the offending link with its text) otherwise. The
    path need not exist: a missing file is the caller's error to report.

    On strings (os.path) rather than pathlib: it runs for every file a render reads, six times a model,
    and pathlib's parsing was most of a 10,000-model catalog load. Path.resolve() is os.path.realpath.
    """
    given = os.fspath(root)
    top = os.path.realpath(given)  # once: absolute, every symlink on the way resolved (a symlinked checkout included)
    path = os.fspath(path)
    full = path if os.path.isabs(path) else os.path.join(top, path)
    if os.path.isabs(full) and not _within_str(top, os.path.normpath(full)):
        # an absolute path spelled through the root as the caller gave it (e.g. /tmp/link/models/x with
        # /tmp/link a symlink to the checkout): the same file, re-rooted on the resolved root
        spelled = os.path.normpath(os.path.abspath(given))
        lexical_full = os.path.normpath(full)
        if spelled != top and _within_str(spelled, lexical_full):
            full = os.path.join(top, os.path.relpath(lexical_full, spelled))
    shown = display or _display(Path(top), Path(full))
    lexical = os.path.normpath(full)
    if not _within_str(top, lexical):
        raise UnsafePathError.single(shown, "the path leaves the repository",
                                     fix="refer only to files inside the repository (no '..' past its top, no absolute paths)")
    # walk the components so the refusal names the first link that leaves, not only the end result
    current = top
    rest = lexical[len(top):].lstrip("/")
    for part in rest.split("/") if rest else ():
        current = os.path.join(current, part)
        if os.path.islink(current):
            target = os.path.realpath(current)
            if not _within_str(top, target):
                link = _display(Path(top), Path(current))
                what = "is a symlink" if link == shown else f"goes through {link}, a symlink"
                raise UnsafePathError.single(
                    shown, f"{what} to {os.readlink(current)!r}, which resolves outside the repository",
                    fix=f"replace {link} with the file itself (git stores a symlink's target, not the content)")
            current = target
    return Path(current)


def _check_regular(st: os.stat_result, shown: str) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise UnsafePathError.single(shown, "not a regular file (a FIFO, socket or device is never read)",
                                     fix="replace it with a regular file")


def _too_big(shown: str, size: int | str, limit: int, name: str) -> SpecError:
    return LimitError.single(shown, f"is {size} bytes, over the limit of {limit} bytes ({name})",
                             fix=f"keep the file smaller, or raise ${Limits.variable(name)} where the reconciler runs")


def read_bytes(root: Path, path: Path | str, *, display: str | None = None, max_bytes: int | None = None) -> bytes:
    """The content of a repository file, through the guard and the per-file size bound.

    Raises FileNotFoundError for a missing file (callers word that error themselves),
    UnsafePathError for a path the guard refuses, LimitError for a file over the bound.
    """
    resolved = inside(root, path, display=display)
    shown = display or _display(Path(root).resolve(), resolved)
    limit = max_bytes if max_bytes is not None else limits().max_file_bytes
    fd = os.open(resolved, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    try:
        st = os.fstat(fd)
        _check_regular(st, shown)
        if st.st_size > limit:
            raise _too_big(shown, st.st_size, limit, "max_file_bytes")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:  # grew while we read it
        raise _too_big(shown, f"over {limit}", limit, "max_file_bytes")
    return data


def read_text(root: Path, path: Path | str, *, display: str | None = None, max_bytes: int | None = None) -> str:
    data = read_bytes(root, path, display=display, max_bytes=max_bytes)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UnsafePathError.single(display or str(path), f"is not UTF-8 text (byte {exc.start})",
                                     fix="save the file as UTF-8") from None


def check_blob_size(shown: str, size: int) -> None:
    """The per-file bound for content read from git objects (checked before the blob is read)."""
    limit = limits().max_file_bytes
    if size > limit:
        raise _too_big(shown, size, limit, "max_file_bytes")


@dataclass(frozen=True)
class TreeSize:
    files: int
    bytes: int


def check_tree(root: Path, folder: Path | str, *, what: str) -> TreeSize:
    """Bound one model or environment folder: file count and total size, and no symlink leaving `root`.

    `what` names the folder in errors (e.g. "model 'fraud-detector'"). Symlinks are not followed
    (a link inside the repository is counted where its target lives).
    """
    root = Path(root).resolve()
    top = inside(root, folder)
    bound = limits()
    files = total = 0
    for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
        for name in [*dirnames, *filenames]:
            entry = Path(dirpath) / name
            if entry.is_symlink():
                inside(root, entry)
        for name in filenames:
            entry = Path(dirpath) / name
            try:
                st = entry.lstat()
            except OSError:
                continue
            files += 1
            total += st.st_size if stat.S_ISREG(st.st_mode) else 0
            if files > bound.max_tree_files:
                raise LimitError.single(_display(root, top), f"{what} has more than {bound.max_tree_files} files "
                                        "(max_tree_files)", fix="move data into DVC-tracked artifacts, or raise "
                                        f"${Limits.variable('max_tree_files')} where the reconciler runs")
            if total > bound.max_tree_bytes:
                raise LimitError.single(_display(root, top), f"{what} holds more than {bound.max_tree_bytes} bytes "
                                        f"(max_tree_bytes; {_display(root, entry)} crossed it)",
                                        fix="track large files with DVC (a .dvc pointer is tiny), or raise "
                                            f"${Limits.variable('max_tree_bytes')} where the reconciler runs")
    return TreeSize(files, total)


# --------------------------------------------------------------------------- YAML alias expansion


def yaml_expansion(node: Any, limit: int) -> int:
    """How many nodes a composed YAML node graph has once every alias is expanded (stops past `limit`).

    PyYAML builds an alias as a reference to the same object, so a "billion laughs" document loads
    in a few kilobytes, then explodes in whatever walks it (JSON for kustomize, hashing, diffs).
    """
    memo: dict[int, int] = {}

    def size(n: Any) -> int:
        key = id(n)
        if key in memo:
            return memo[key]
        memo[key] = 1  # a recursive alias counts once per visit, and cannot loop
        value = n.value
        total = 1
        if isinstance(value, list):
            for item in value:
                if isinstance(item, tuple):
                    total += size(item[0]) + size(item[1])
                else:
                    total += size(item)
                if total > limit:
                    break
        memo[key] = total
        return total

    return size(node)


def check_yaml_aliases(text: str | bytes, shown: str, loader: Any = None) -> None:
    """Refuse a YAML text whose alias expansion exceeds max_yaml_nodes (cheap when it has no alias)."""

    if (b"*" not in text) if isinstance(text, bytes) else ("*" not in text):
        return  # no alias can occur without '*'
    limit = limits().max_yaml_nodes
    loader = loader or getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        nodes = list(yaml.compose_all(text, Loader=loader))
    except yaml.YAMLError:
        return  # the caller's parser reports the syntax error with its line
    for node in nodes:
        if node is not None and yaml_expansion(node, limit) > limit:
            raise LimitError.single(shown, f"YAML aliases expand to more than {limit} nodes (max_yaml_nodes)",
                                    fix="write the values out instead of nesting aliases, or raise "
                                        f"${Limits.variable('max_yaml_nodes')} where the reconciler runs")
