"""Reading the files people write: YAML with line numbers, parsed into a spec model, every error
located (file, line, field) with a fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from reconciler.catalog.fields import Strict
from reconciler.errors import SpecError, SpecProblem
from reconciler.source import guard


class _LineLoader(yaml.SafeLoader):
    """A SafeLoader that remembers the line of every mapping key, to point errors at lines."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    mapping = yaml.SafeLoader.construct_mapping(loader, node, deep=True)
    lines = {}
    for key_node, _ in node.value:
        lines[key_node.value] = key_node.start_mark.line + 1
    mapping = _Located(mapping)
    mapping.key_lines = lines
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


class _Located(dict):
    key_lines: dict[str, int]


FAST_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ~7x faster than the line-keeping loader


def read_yaml(path: Path, *, display: str | None = None, root: Path | None = None, lines: bool = False) -> Any:
    """Parse one YAML document of the repository at `root`, through the read guard (symlinks leaving
    the repository, size, alias expansion), turning syntax errors into a SpecError with the line.

    Without `root`, the file's own folder is the boundary. With libyaml's C loader by default;
    `lines=True` keeps the line of every mapping key (pure Python, slower), which `load` asks for
    only when it has an error to point at."""
    shown = display or str(path)
    try:
        text = guard.read_text(root if root is not None else path.parent, path, display=shown)
    except FileNotFoundError:
        raise SpecError.single(shown, "file not found", fix=f"create {shown}") from None
    except OSError as exc:
        raise SpecError.single(shown, f"cannot read file: {exc.strerror}",
                               fix=f"check that {shown} is a readable file") from None
    guard.check_yaml_aliases(text, shown)
    try:
        return yaml.load(text, Loader=_LineLoader if lines else FAST_LOADER)  # noqa: S506 - safe loaders only
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise SpecError.single(shown, f"YAML syntax error: {exc.problem or exc}", line=line,
                               fix="fix the YAML syntax at that line (indentation, a missing ':' or quote)") from None
    except yaml.YAMLError as exc:
        raise SpecError.single(shown, f"YAML error: {exc}", fix="write one plain YAML document (no custom tags)") from None


def _line_of(data: Any, loc: tuple[Any, ...]) -> int | None:
    line = None
    node = data
    for part in loc:
        if isinstance(node, _Located) and part in node.key_lines:
            line = node.key_lines[part]
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            break
    return line


_BOUND_FIXES = {"greater_than_equal": ("ge", ">="), "greater_than": ("gt", ">"),
                "less_than_equal": ("le", "<="), "less_than": ("lt", "<")}
_TYPE_FIXES = {
    "int_parsing": "write a whole number, e.g. 2", "int_type": "write a whole number, e.g. 2",
    "int_from_float": "write a whole number, e.g. 2", "float_parsing": "write a number, e.g. 0.5",
    "float_type": "write a number, e.g. 0.5", "bool_parsing": "write true or false", "bool_type": "write true or false",
    "string_type": "write a string (quote it if YAML reads it as a number or a boolean)",
    "dict_type": "write a mapping (key: value lines)", "list_type": "write a list, e.g. [a, b]",
    "model_type": "write a mapping with the fields listed in docs/model-spec.md",
    "model_attributes_type": "write a mapping with the fields listed in docs/model-spec.md",
}


def _fix_for(error: dict[str, Any], model: type[BaseModel]) -> str:
    """A fix line for every pydantic error: what to write instead."""
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "extra_forbidden":
        return "remove the field, or check its spelling against docs/model-spec.md"
    if kind == "missing":
        return "add the field (docs/model-spec.md lists what it takes)"
    if kind in _BOUND_FIXES:
        key, op = _BOUND_FIXES[kind]
        return f"use a value {op} {ctx.get(key)}"
    if kind in ("literal_error", "enum"):
        return f"use one of: {ctx.get('expected')}"
    if kind in ("too_short", "too_long"):
        return "write between {} and {} items".format(ctx.get("min_length", 0), ctx.get("max_length", "any number of"))
    if kind in _TYPE_FIXES:
        return _TYPE_FIXES[kind]
    return f"see docs/model-spec.md for the values {model.__name__} accepts here"


def parse(model: type[Strict], data: Any, file: str) -> Any:
    """Validate data against a spec model; every pydantic error becomes a located SpecProblem."""
    if data is None:
        raise SpecError.single(file, "file is empty", fix=f"write a {model.__name__} document")
    if not isinstance(data, dict):
        raise SpecError.single(file, f"expected a mapping at the top level, got {type(data).__name__}",
                               fix="write key: value lines at the top level (see docs/model-spec.md)")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = tuple(p for p in error["loc"] if p not in ("function-after", "function-before"))
            dotted = ".".join(str(p) for p in loc if not str(p).startswith(("str", "dict[", "list[")))
            message = error["msg"].removeprefix("Value error, ")
            if error["type"] == "extra_forbidden":
                message = "unknown field"
            problems.append(SpecProblem(file, message, field=dotted or None, line=_line_of(data, loc),
                                        fix=_fix_for(error, model)))
        raise SpecError(problems) from None


def load(model: type[Strict], path: Path, *, display: str | None = None, root: Path | None = None) -> Any:
    """Read and validate a spec file; the line numbers of its keys are read only if it has errors."""
    file = display or str(path)
    data = read_yaml(path, display=display, root=root)
    try:
        return parse(model, data, file)
    except SpecError:
        if not isinstance(data, dict):
            raise
    return parse(model, read_yaml(path, display=display, root=root, lines=True), file)
