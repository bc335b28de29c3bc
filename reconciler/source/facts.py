"""Content facts of a file, cached by its git blob id: the imports of a Python module, the outputs of a DVC
pointer. A blob id names the content, so a fact computed once holds for every revision and every model
that has that blob (hashing.py reads them for each model's content hash). Split from hashing.py by verb:
this reads one file, hashing walks a model's folder.
"""

from __future__ import annotations

import ast
import collections
import hashlib
import posixpath

import yaml

YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ~10x faster on 1,000 pointers

IMPORT_CACHE: dict[str, tuple[tuple[int, str, tuple[str, ...]], ...]] = {}
DVC_CACHE: dict[str, tuple[tuple[str, str], ...] | None] = {}
CACHE_LIMIT = 200_000


def cached(cache: dict, key: str | bytes, compute):
    value = cache.get(key, cache)
    if value is cache:
        if len(cache) > CACHE_LIMIT:
            cache.clear()
        value = cache[key] = compute()
    return value


Statement = tuple[int, int, str, tuple[str, ...]]  # (line, level, module, names imported from it)
STATEMENT_CACHE: dict[bytes, tuple[Statement, ...]] = {}  # by the sha1 of the source


def import_statements(source: bytes) -> tuple[Statement, ...]:
    """(line, level, dotted module, names) of every import statement anywhere in a module, one record per
    imported module (`import a, b`: two), in `ast.walk` order; () when it does not parse.

    Parsed once per content in a process: the content hash (`python_imports`) and the catalog's lock check
    (`absolute_imports`) both read every model's Python files; at 10,000 models each pass of parses costs
    seconds."""
    def parse() -> tuple[Statement, ...]:
        try:
            tree = ast.parse(source)
        except (SyntaxError, ValueError):
            return ()
        found: list[Statement] = []
        for node in _statements(tree):
            if isinstance(node, ast.Import):
                found.extend((node.lineno, 0, alias.name, ()) for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                found.append((node.lineno, node.level, node.module or "",
                              tuple(a.name for a in node.names if a.name != "*")))
        return tuple(found)

    return cached(STATEMENT_CACHE, hashlib.sha1(source).digest(), parse)


_BLOCKS = (ast.stmt, ast.excepthandler, ast.match_case)  # what holds statements; expressions never do


def _statements(tree: ast.AST) -> list[ast.AST]:
    """The statements of a module (and the except/case clauses between them) in `ast.walk`'s order, without
    visiting an expression: a statement's ancestors are all statements or clauses, so each keeps its depth and
    breadth-first order among them is walk's. Walking every node was most of a catalog load's parse cost."""
    order: list[ast.AST] = []
    queue = collections.deque([tree])
    while queue:
        node = queue.popleft()
        order.append(node)
        for name in node._fields:
            value = getattr(node, name, None)
            if isinstance(value, list):
                queue.extend(item for item in value if isinstance(item, _BLOCKS))
    return order


def python_imports(source: bytes) -> tuple[tuple[int, str, tuple[str, ...]], ...]:
    """(level, module, names) for every import statement anywhere in a module; () if it does not parse."""
    return tuple((level, module, names) for _, level, module, names in import_statements(source))


def absolute_imports(source: bytes) -> list[tuple[int, str]]:
    """(line, dotted module) of every absolute import: pipelines.locks.imported_modules, from the parse above."""
    return [(line, module) for line, level, module, _ in import_statements(source) if level == 0 and module]


def dvc_outputs(text: bytes, pointer: str, stage_wdirs: dict[str, str] | None = None
                ) -> tuple[tuple[str, str], ...] | None:
    """(output path relative to the repository, 'md5:<md5>') for a `.dvc` file or `dvc.lock`.

    Output paths are relative to the working directory DVC uses: the pointer's folder joined with its
    `wdir:` (a `.dvc` file's own key; a stage's `wdir` in the dvc.yaml beside a dvc.lock, given as
    `stage_wdirs`), exactly as DVC resolves them (dvc.stage.utils.resolve_paths). None when the file is
    not a readable pointer.
    """
    try:
        data = yaml.load(text, Loader=YAML_LOADER)  # a safe loader
    except yaml.YAMLError:
        return None
    if not isinstance(data, dict):
        return None
    base = posixpath.dirname(pointer)
    outs: list[tuple[str, dict]] = []
    if posixpath.basename(pointer) == "dvc.lock":
        for name, stage in (data.get("stages") or {}).items():
            if isinstance(stage, dict):
                wdir = (stage_wdirs or {}).get(str(name).split("@", 1)[0], ".")
                outs.extend((wdir, o) for o in stage.get("outs") or [] if isinstance(o, dict))
    else:
        wdir = data.get("wdir", ".")
        if not isinstance(wdir, str):
            return None
        outs.extend((wdir, o) for o in data.get("outs") or [] if isinstance(o, dict))
    result = []
    for wdir, out in outs:
        path = out.get("path")
        if not isinstance(path, str):
            continue
        checksum = next((f"{k}:{out[k]}" for k in ("md5", "etag", "checksum", "version_id") if out.get(k)),
                        "missing:no checksum recorded (run `dvc commit`)")
        result.append((posixpath.normpath(posixpath.join(base, wdir or ".", path)), checksum))
    return tuple(sorted(result))


def stage_wdirs(text: bytes) -> dict[str, str]:
    """{stage name: wdir} of a dvc.yaml (stages without one are left out; {} for an unreadable file)."""
    try:
        data = yaml.load(text, Loader=YAML_LOADER)  # a safe loader
    except yaml.YAMLError:
        return {}
    stages = data.get("stages") if isinstance(data, dict) else None
    if not isinstance(stages, dict):
        return {}
    return {str(name): stage["wdir"] for name, stage in stages.items()
            if isinstance(stage, dict) and isinstance(stage.get("wdir"), str)}


def is_pointer(path: str) -> bool:
    return path.endswith(".dvc") or posixpath.basename(path) == "dvc.lock"
