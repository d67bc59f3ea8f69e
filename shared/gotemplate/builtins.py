"""text/template's builtin functions (and or not len index slice print printf println eq ne lt le gt ge
html js urlquery) with Go's semantics and error messages."""

from __future__ import annotations

import urllib.parse
from collections.abc import Sequence
from typing import TYPE_CHECKING

from shared.gotemplate.errors import CallError
from shared.gotemplate.fmt import format_value, sprint, sprintf, sprintln
from shared.gotemplate.functions import Func
from shared.gotemplate.values import Model, truth

if TYPE_CHECKING:
    pass


def length(model: Model, value: object) -> int:
    """len: bytes of a string (as Go counts), elements of a list, entries of a map."""
    match value:
        case str():
            return len(value.encode())
        case list() | tuple() | dict():
            return len(value)
        case None:
            raise CallError("len of nil pointer")
    raise CallError(f"len of type {model.type_name(value)}")


def _index_arg(model: Model, index: object, cap: int) -> int:
    if index is None:
        raise CallError("cannot index slice/array with nil")
    if not isinstance(index, int) or isinstance(index, bool):
        raise CallError(f"cannot index slice/array with type {model.type_name(index)}")
    if not 0 <= index <= cap:
        raise CallError(f"index out of range: {index}")
    return index


def index(model: Model, item: object, *indexes: object) -> object:
    """index x 1 2: x[1][2]; a string's byte, a list's element, a map's value ("" for a missing key)."""
    if item is None:
        raise CallError("index of untyped nil")
    for key in indexes:
        match item:
            case str() | list() | tuple():
                size = len(item.encode()) if isinstance(item, str) else len(item)
                at = _index_arg(model, key, size)
                if at == size:
                    raise CallError(f"index out of range: {at}")
                item = item.encode()[at] if isinstance(item, str) else item[at]
            case dict():
                if key is None:
                    raise CallError("value is nil; should be of type string")
                if not isinstance(key, str):
                    raise CallError(f"value has type {model.type_name(key)}; should be string")
                item = item.get(key, "")  # missingkey=zero: the maps hold strings, whose zero value is ""
            case None:
                raise CallError("index of nil pointer")
            case _:
                raise CallError(f"can't index item of type {model.type_name(item)}")
    return item


def slice_(model: Model, item: object, *indexes: object) -> object:
    """slice x 1 2: x[1:2] of a string (in bytes) or a list."""
    if item is None:
        raise CallError("slice of untyped nil")
    if len(indexes) > 3:
        raise CallError(f"too many slice indexes: {len(indexes)}")
    if isinstance(item, str):
        if len(indexes) == 3:
            raise CallError("cannot 3-index slice a string")
        encoded = item.encode()
        cap = len(encoded)
    elif isinstance(item, list | tuple):
        cap = len(item)
    else:
        raise CallError(f"can't slice item of type {model.type_name(item)}")
    bounds = [0, cap, cap]
    for i, key in enumerate(indexes):
        bounds[i] = _index_arg(model, key, cap)
    if bounds[0] > bounds[1]:
        raise CallError(f"invalid slice index: {bounds[0]} > {bounds[1]}")
    if len(indexes) == 3 and bounds[1] > bounds[2]:
        raise CallError(f"invalid slice index: {bounds[1]} > {bounds[2]}")
    if isinstance(item, str):
        return encoded[bounds[0] : bounds[1]].decode("utf-8", "replace")
    return list(item[bounds[0] : bounds[1]])


def _basic_kind(value: object) -> str | None:
    match value:
        case bool():
            return "bool"
        case int():
            return "int"
        case float():
            return "float"
        case str():
            return "string"
    return None


def eq(model: Model, arg1: object, *rest: object) -> bool:
    """eq a b c...: a == b || a == c ...; values of different kinds are an error, nil equals only nil."""
    if not rest:
        raise CallError("missing argument for comparison")
    kind1 = _basic_kind(arg1)
    for arg in rest:
        kind2 = _basic_kind(arg)
        if kind1 != kind2:
            if arg1 is not None and arg is not None:
                raise CallError("incompatible types for comparison")
            equal = False
        elif kind1 is not None:
            equal = arg1 == arg
        elif arg1 is None or arg is None:
            equal = arg1 is None and arg is None
        elif type(arg1) is not type(arg):
            raise CallError(
                f"non-comparable types {format_value(arg1, model)}: {model.type_name(arg1)}, "
                f"{model.type_name(arg)}: {format_value(arg, model)}"
            )
        elif not model.comparable(arg):
            # Lists, maps and structs holding them are not comparable in Go.
            raise CallError(f"non-comparable type {format_value(arg, model)}: {model.type_name(arg)}")
        else:
            equal = arg1 == arg
        if equal:
            return True
    return False


def lt(arg1: object, arg2: object) -> bool:
    """lt a b: a < b, for two values of one kind among int, float64 and string."""
    kind1, kind2 = _basic_kind(arg1), _basic_kind(arg2)
    if kind1 is None or kind2 is None:
        raise CallError("invalid type for comparison")
    if kind1 != kind2:
        raise CallError("incompatible types for comparison")
    if kind1 == "bool":
        raise CallError("invalid type for comparison")
    return arg1 < arg2  # type: ignore[operator]


def le(model: Model, arg1: object, arg2: object) -> bool:
    """le a b: lt or eq (so NaN compares as Go does)."""
    return lt(arg1, arg2) or eq(model, arg1, arg2)


def _escaped_text(model: Model, args: Sequence[object]) -> str:
    """The string that html, js and urlquery escape: a lone string as is, else fmt.Sprint of all, with nil
    as "<no value>" (Go passes them through printableValue first)."""
    if len(args) == 1 and isinstance(args[0], str):
        return args[0]
    return sprint(["<no value>" if arg is None else arg for arg in args], model)


_HTML = {'"': "&#34;", "'": "&#39;", "&": "&amp;", "<": "&lt;", ">": "&gt;", "\0": "\ufffd"}
_JS = {"\\": "\\\\", "'": "\\'", '"': '\\"', "<": "\\u003C", ">": "\\u003E", "&": "\\u0026", "=": "\\u003D"}


def html_escape(text: str) -> str:
    """template.HTMLEscapeString."""
    return "".join(_HTML.get(c, c) for c in text)


def js_escape(text: str) -> str:
    """template.JSEscapeString."""
    out: list[str] = []
    for c in text:
        if c in _JS:
            out.append(_JS[c])
        elif c < " " or (ord(c) >= 0x80 and not c.isprintable()):
            out.append(f"\\u{ord(c):04X}")
        else:
            out.append(c)
    return "".join(out)


def _state_func(
    call: object, params: tuple[str, ...], variadic: str | None = None, result: str = "any"
) -> Func:
    return Func(call, params, variadic, result, with_state=True)  # type: ignore[arg-type]


BUILTINS: dict[str, Func] = {
    "and": Func(None, ("value",), "value"),
    "or": Func(None, ("value",), "value"),
    "not": Func(lambda v: not truth(v), ("value",), None, "bool"),
    "len": _state_func(lambda st, v: length(st.model, v), ("value",), None, "int"),
    "index": _state_func(lambda st, item, *ix: index(st.model, item, *ix), ("value",), "value"),
    "slice": _state_func(lambda st, item, *ix: slice_(st.model, item, *ix), ("value",), "value"),
    "print": _state_func(lambda st, *args: sprint(args, st.model), (), "any", "string"),
    "printf": _state_func(lambda st, fmt, *args: sprintf(fmt, args, st.model), ("string",), "any", "string"),
    "println": _state_func(lambda st, *args: sprintln(args, st.model), (), "any", "string"),
    "eq": _state_func(lambda st, a, *rest: eq(st.model, a, *rest), ("value",), "value", "bool"),
    "ne": _state_func(lambda st, a, b: not eq(st.model, a, b), ("value", "value"), None, "bool"),
    "lt": Func(lt, ("value", "value"), None, "bool"),
    "le": _state_func(lambda st, a, b: le(st.model, a, b), ("value", "value"), None, "bool"),
    "gt": _state_func(lambda st, a, b: not le(st.model, a, b), ("value", "value"), None, "bool"),
    "ge": Func(lambda a, b: not lt(a, b), ("value", "value"), None, "bool"),
    "html": _state_func(lambda st, *args: html_escape(_escaped_text(st.model, args)), (), "any", "string"),
    "js": _state_func(lambda st, *args: js_escape(_escaped_text(st.model, args)), (), "any", "string"),
    "urlquery": _state_func(
        lambda st, *args: urllib.parse.quote_plus(_escaped_text(st.model, args), safe=""), (), "any", "string"
    ),
}
