"""Go values as the template engine sees them: Python stand-ins for Go's basic types (str, int, float, bool,
None for nil, list for slices, dict for maps) plus whatever types a service's data model adds, which it
describes through a Model: their Go type names, fields, methods, printing."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from shared.gotemplate.errors import CallError

if TYPE_CHECKING:
    from shared.gotemplate.functions import Func

# Every string the engine builds is capped, because label values may come from outside and a template can
# double a string per range iteration.
MAX_STRING = 1 << 20


class Missing:
    """No pipeline value yet (Go's missingVal): distinct from nil, which is a value."""


MISSING = Missing()
ABSENT = object()  # what Model.field returns for a field the value does not have


class Model:
    """The Go types of a service's template data beyond Go's basic ones; subclasses describe theirs.

    The base knows str, int, float, bool, None, lists and dicts (maps, missingkey=zero: a missing key is "").
    """

    def type_name(self, value: object) -> str:
        """The Go type a value stands for, as %T and Go's error messages print it."""
        match value:
            case None:
                return "<nil>"
            case bool():
                return "bool"
            case int():
                return "int"
            case float():
                return "float64"
            case str():
                return "string"
            case list() | tuple():
                kinds = {self.type_name(item) for item in value}
                return f"[]{kinds.pop()}" if len(kinds) == 1 else "[]interface {}"
            case dict():
                kinds = {self.type_name(item) for item in value.values()}
                return f"map[string]{kinds.pop()}" if len(kinds) == 1 else "map[string]interface {}"
        return type(value).__name__

    def field(self, value: object, name: str) -> object:
        """The struct field name of value, or ABSENT."""
        return ABSENT

    def method(self, value: object, name: str) -> Func | None:
        """The method name of value's Go type, unbound (its first argument is the receiver), or None."""
        return None

    def struct(self, value: object) -> list[tuple[str, object]] | None:
        """A struct's fields in declaration order (Go names and values), for printing; None if no struct."""
        return None

    def is_pointer(self, value: object) -> bool:
        """Whether the data holds value through a pointer (fmt prints a *struct as &{...})."""
        return False

    def stringer(self, value: object) -> str | None:
        """The String() of values whose type has one, which fmt prints instead of their structure."""
        return None

    def comparable(self, value: object) -> bool:
        """Whether eq may compare two values of this (non-basic) type, as Go's == may."""
        return False


def truth(value: object) -> bool:
    """Go's template truth: false, 0, nil and empty strings, lists and maps are false; structs are true."""
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, str | list | tuple | dict):
        return len(value) > 0
    return True


def sorted_keys(mapping: dict[object, object]) -> list[object]:
    """A map's keys in the order Go's range and fmt visit them."""
    try:
        return sorted(mapping)  # type: ignore[type-var]
    except TypeError:
        return sorted(mapping, key=lambda k: (type(k).__name__, str(k)))


def bounded(parts: Iterable[str], sep: str = "") -> str:
    """Join parts, failing once the result would exceed MAX_STRING characters."""
    out: list[str] = []
    size = 0
    for part in parts:
        size += len(part) + (len(sep) if out else 0)
        if size > MAX_STRING:
            raise CallError(f"result exceeds {MAX_STRING} characters")
        out.append(part)
    return sep.join(out)
