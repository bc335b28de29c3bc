"""Reading the files people write: YAML with line numbers, parsed into a spec model, every error
located (file, line, field) with a fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel, ValidationError

from reconciler.catalog.fields import Strict
from reconciler.errors import SpecError, SpecProblem, closest
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
    # the guard reads a relative path against the root: without a root, the file's own folder is the
    # boundary and the file is read by its name in it (never the caller's relative path joined twice)
    base, target = (root, path) if root is not None else (path.parent, Path(path.name))
    try:
        text = guard.read_text(base, target, display=shown)
    except FileNotFoundError:
        raise SpecError.single(shown, "file not found", fix=f"create {shown}") from None
    except OSError as exc:
        raise SpecError.single(shown, f"cannot read file: {exc.strerror}",
                               fix=f"check that {shown} is a readable file") from None
    guard.check_yaml_aliases(text, shown)
    try:
        return yaml.load(text, Loader=_LineLoader if lines else FAST_LOADER)  # safe loaders only
    except yaml.MarkedYAMLError as exc:
        line, fix = syntax_error_line(exc)
        raise SpecError.single(shown, f"YAML syntax error: {exc.problem or exc}", line=line, fix=fix) from None
    except yaml.YAMLError as exc:
        raise SpecError.single(shown, f"YAML error: {exc}", fix="write one plain YAML document (no custom tags)") from None


def syntax_error_line(exc: Any) -> tuple[int | None, str]:
    """The line a YAML syntax error is at, and a fix for its kind. Pure.

    While scanning a token (a key without ':', a quote never closed) the parser notices only on a later
    line: the token's start (the context mark) is the line to fix. While parsing a block, the problem
    mark is the line whose indentation breaks the block."""
    context = exc.context or ""
    problem = exc.problem or ""
    mark = exc.context_mark if context.startswith("while scanning") and exc.context_mark else \
        exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark else None
    if "expected ':'" in problem:
        fix = "put ':' after the key at that line (key: value), or indent it as the continuation of the line above"
    elif "quoted scalar" in context:
        fix = "close the quote opened at that line"
    elif "character" in problem and "token" in problem:
        fix = "indent with spaces, not tabs, and quote values that start with a special character (@, `, %)"
    elif "block" in context or "mapping values" in problem:
        fix = ("indent that line as its siblings: a field of the same level starts in the same column as the "
               "key above it, a nested one two spaces further than its parent")
    else:
        fix = "fix the YAML syntax at that line (indentation, a missing ':' or quote)"
    return line, fix


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


def _submodels(annotation: Any) -> list[type[BaseModel]]:
    """The spec models an annotation holds (through Optional, unions, lists and dict values)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _submodels(arg)]


def _keys(model: type[BaseModel]) -> dict[str, str]:
    """YAML key -> field name of a spec model (the alias when it has one: what people write)."""
    return {(f.alias or name): name for name, f in model.model_fields.items()}


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The spec model whose mapping sits at `loc` (keys and list indexes), or None when it is not one."""
    current: type[BaseModel] | None = model
    for part in loc:
        if current is None:
            return None
        if isinstance(part, int) or part not in _keys(current) and part not in current.model_fields:
            continue  # a list index or a dict key (e.g. an environment name under accelerator:)
        field = current.model_fields[_keys(current).get(part, part)]
        found = _submodels(field.annotation)
        current = found[0] if found else None
    return current


def _homes(model: type[BaseModel], key: str, prefix: str = "", seen: frozenset = frozenset()) -> list[str]:
    """Every dotted path where `key` is a field of `model` or one of its nested spec models."""
    if model in seen:
        return []
    paths = [f"{prefix}{key}"] if key in _keys(model) else []
    for yaml_key, name in _keys(model).items():
        for sub in _submodels(model.model_fields[name].annotation):
            paths += _homes(sub, key, f"{prefix}{yaml_key}.", seen | {model})
    return paths


def _unknown_field(model: type[BaseModel], loc: tuple[Any, ...]) -> tuple[str, str]:
    """The message and fix for an unknown field: where it belongs if it is a field elsewhere in the file,
    else the known field it most likely misspells."""
    key = str(loc[-1])
    parent = ".".join(str(p) for p in loc[:-1] if not isinstance(p, int))
    homes = [h for h in _homes(model, key) if h.rpartition(".")[0] != parent]
    if homes:
        where = homes[0].rpartition(".")[0]
        return (f"unknown field here; '{key}' belongs under '{where}'" if where else
                f"unknown field here; '{key}' belongs at the top level",
                f"move '{key}' under '{where}:' ({homes[0]})" if where else
                f"move '{key}' to the top level of the file (no indentation)")
    at = _model_at(model, loc[:-1])
    match = closest(key, _keys(at)) if at is not None else None
    if match:
        return f"unknown field (did you mean {match!r}?)", f"rename '{key}' to '{match}'"
    known = ", ".join(sorted(_keys(at))) if at is not None else ""
    return "unknown field", (f"remove the field, or use one of: {known}" if known else
                             "remove the field, or check its spelling against docs/model-spec.md")


def _what(model: type[BaseModel]) -> str:
    """How a person names the file a spec model reads (its docstring's first line, e.g.
    models/<name>/model.yaml), never the Python class."""
    first = (model.__doc__ or "").strip().splitlines()
    return first[0].strip() if first and "/" in first[0] else "the spec file"


def _fix_for(error: dict[str, Any], model: type[BaseModel]) -> str:
    """A fix line for every pydantic error: what to write instead."""
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if ctx.get("fix"):  # a validator that knows the fix (PydanticCustomError with ctx={"fix": ...})
        return str(ctx["fix"])
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
    field_name = ".".join(str(p) for p in error.get("loc", ()) if not isinstance(p, int))
    return f"see docs/model-spec.md for the values '{field_name}' accepts" if field_name else \
        f"see docs/model-spec.md for what {_what(model)} holds"


def parse(model: type[Strict], data: Any, file: str) -> Any:
    """Validate data against a spec model; every pydantic error becomes a located SpecProblem."""
    if data is None:
        raise SpecError.single(file, "file is empty", fix=f"write the fields of {_what(model)} (docs/model-spec.md)")
    if not isinstance(data, dict):
        raise SpecError.single(file, f"expected a mapping at the top level, got {type(data).__name__}",
                               fix="write key: value lines at the top level (see docs/model-spec.md)")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = tuple(p for p in error["loc"] if p not in ("function-after", "function-before"))
            dotted = ".".join(str(p) for p in loc if not str(p).startswith(("str", "dict[", "list[", "[key]")))
            message = error["msg"].removeprefix("Value error, ")
            fix = _fix_for(error, model)
            if error["type"] == "extra_forbidden":
                message, fix = _unknown_field(model, loc)
            problems.append(SpecProblem(file, message, field=dotted or None, line=_line_of(data, loc), fix=fix))
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
