"""What a pickled model is, read without unpickling it: a pickle is a program, and loading one runs whatever
callables it names, so a plan (which reads a fork's pull request) never loads one. Instead the opcodes are
walked with `pickletools.genops` (which only decodes them) on a symbolic stack: a class reference stays a name,
an object built from it stays a record of that name and its state. Nothing is imported or called.

`architecture(data)` names a scikit-learn model in model.yaml's `architecture:` vocabulary (the same rule as
`pipelines/neuron.architecture_of`, which names a loaded estimator): `sklearn-` and its steps, e.g. a
StandardScaler -> MLPClassifier Pipeline is `sklearn-scaler-mlp`. Pure.
"""

from __future__ import annotations

import io
import pickletools
import re
from dataclasses import dataclass, field
from typing import Any

# step class -> its name in the architecture vocabulary (the others: their class name in kebab-case)
STEP_NAMES = {"StandardScaler": "scaler", "MLPClassifier": "mlp", "LogisticRegression": "logistic-regression"}
MAX_OPS = 5_000_000  # a bound on the walk (a model pickle of a few MB has well under a million opcodes)


class NotAPickle(ValueError):
    """The bytes are not a pickle this reader can follow."""


@dataclass(frozen=True)
class Global:
    module: str
    name: str

    @property
    def dotted(self) -> str:
        return f"{self.module}.{self.name}"


@dataclass
class Obj:
    """An object the pickle would build: its class (or the callable that makes it), arguments and state."""

    cls: Any
    args: Any = None
    state: Any = None
    items: list = field(default_factory=list)  # list appends / dict set items made on it


_MARK = object()


def _pop_mark(stack: list) -> list:
    for i in range(len(stack) - 1, -1, -1):
        if stack[i] is _MARK:
            items = stack[i + 1:]
            del stack[i:]
            return items
    raise NotAPickle("MARK missing")


def structure(data: bytes) -> Any:
    """The object a pickle describes, as nested lists, tuples, dicts, scalars, Global and Obj. Pure."""
    stack: list[Any] = []
    memo: dict[int, Any] = {}
    items: list[Any]
    try:
        for count, (op, arg, _pos) in enumerate(pickletools.genops(io.BytesIO(data))):
            if count > MAX_OPS:
                raise NotAPickle(f"more than {MAX_OPS} opcodes")
            name = op.name
            if name in ("PROTO", "FRAME"):
                continue
            if name == "STOP":
                return stack[-1] if stack else None
            if name == "MARK":
                stack.append(_MARK)
            elif name in ("EMPTY_LIST",):
                stack.append([])
            elif name == "EMPTY_DICT":
                stack.append({})
            elif name in ("EMPTY_TUPLE",):
                stack.append(())
            elif name in ("EMPTY_SET",):
                stack.append(set())
            elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
                n = int(name[-1])
                values = tuple(stack[-n:])
                del stack[-n:]
                stack.append(values)
            elif name == "TUPLE":
                stack.append(tuple(_pop_mark(stack)))
            elif name == "LIST":
                stack.append(list(_pop_mark(stack)))
            elif name == "DICT":
                items = _pop_mark(stack)
                stack.append({_key(k): v for k, v in zip(items[::2], items[1::2])})
            elif name in ("FROZENSET",):
                stack.append(frozenset(map(_key, _pop_mark(stack))))
            elif name == "APPEND":
                value = stack.pop()
                _append(stack[-1], [value])
            elif name == "APPENDS":
                items = _pop_mark(stack)
                _append(stack[-1], items)
            elif name == "ADDITEMS":
                items = _pop_mark(stack)
                if isinstance(stack[-1], set):
                    stack[-1].update(map(_key, items))
            elif name == "SETITEM":
                value, key = stack.pop(), stack.pop()
                _setitems(stack[-1], [key, value])
            elif name == "SETITEMS":
                items = _pop_mark(stack)  # before reading the target: the items sit above it
                _setitems(stack[-1], items)
            elif name in ("GLOBAL", "INST"):
                module, _, attr = str(arg).partition(" ")
                if name == "INST":
                    stack.append(Obj(Global(module, attr), tuple(_pop_mark(stack))))
                else:
                    stack.append(Global(module, attr))
            elif name == "STACK_GLOBAL":
                attr, module = stack.pop(), stack.pop()
                stack.append(Global(str(module), str(attr)))
            elif name == "REDUCE":
                args, func = stack.pop(), stack.pop()
                stack.append(Obj(func, args))
            elif name == "NEWOBJ":
                args, cls = stack.pop(), stack.pop()
                stack.append(Obj(cls, args))
            elif name == "NEWOBJ_EX":
                kwargs, args, cls = stack.pop(), stack.pop(), stack.pop()
                stack.append(Obj(cls, (args, kwargs)))
            elif name == "OBJ":
                items = _pop_mark(stack)
                stack.append(Obj(items[0], tuple(items[1:])) if items else None)
            elif name == "BUILD":
                state = stack.pop()
                target = stack[-1]
                if isinstance(target, Obj):
                    target.state = state
            elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[int(arg or 0)] = stack[-1]
            elif name == "MEMOIZE":
                memo[len(memo)] = stack[-1]
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                stack.append(memo.get(int(arg or 0)))
            elif name == "POP":
                stack.pop()
            elif name == "POP_MARK":
                _pop_mark(stack)
            elif name == "DUP":
                stack.append(stack[-1])
            elif name in ("PERSID", "BINPERSID"):
                if name == "BINPERSID":
                    stack.pop()
                stack.append(None)
            elif name in ("EXT1", "EXT2", "EXT4"):
                stack.append(Global("copyreg-extension", str(arg)))
            elif name in ("NEXT_BUFFER", "READONLY_BUFFER"):
                if name == "NEXT_BUFFER":
                    stack.append(None)
            elif name in ("NONE",):
                stack.append(None)
            elif name in ("NEWTRUE", "NEWFALSE"):
                stack.append(name == "NEWTRUE")
            else:  # every other opcode pushes its decoded argument (ints, floats, strings, bytes)
                stack.append(arg)
    except (ValueError, IndexError, KeyError, TypeError, EOFError) as exc:
        if isinstance(exc, NotAPickle):
            raise
        raise NotAPickle(f"{type(exc).__name__}: {exc}") from None
    raise NotAPickle("no STOP opcode")


def _key(value: Any) -> Any:
    try:
        hash(value)
    except TypeError:
        return id(value)
    return value


def _append(target: Any, items: list) -> None:
    if isinstance(target, list):
        target.extend(items)
    elif isinstance(target, Obj):
        target.items.extend(items)


def _setitems(target: Any, items: list) -> None:
    if isinstance(target, dict):
        for k, v in zip(items[::2], items[1::2]):
            target[_key(k)] = v
    elif isinstance(target, Obj):
        target.items.extend(items)


def _class_of(obj: Any) -> Global | None:
    if isinstance(obj, Obj):
        cls = obj.cls
        if isinstance(cls, Global) and cls.name == "__newobj__" and isinstance(obj.args, tuple) and obj.args:
            cls = obj.args[0]  # copyreg.__newobj__(cls, ...)
        return cls if isinstance(cls, Global) else None
    return None


def _kebab(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "-", name).lower()


def architecture(data: bytes) -> str | None:
    """model.yaml's name for a pickled scikit-learn estimator or Pipeline, or None when the pickle holds
    something else (another framework, a plain object). Raises NotAPickle for bytes that are no pickle."""
    root = structure(data)
    cls = _class_of(root)
    if cls is None or not cls.module.startswith("sklearn."):
        return None
    steps = [root]
    if cls.name == "Pipeline":
        state = root.state if isinstance(root.state, dict) else {}
        pairs = state.get("steps") or []
        steps = [pair[1] for pair in pairs if isinstance(pair, tuple) and len(pair) == 2]
    names = []
    for step in steps:
        step_cls = _class_of(step)
        if step_cls is None:
            return None
        names.append(STEP_NAMES.get(step_cls.name) or _kebab(step_cls.name))
    return "sklearn-" + "-".join(names) if names else None
