"""YAML loading that remembers where every value came from, so errors can say `file:line:col`.

Used for tripwire.yml, rule files and the routing file: a pydantic error's `loc` is mapped back to the line
of the offending key. Duplicate keys are an error (as in Prometheus' and Alertmanager's strict YAML).
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

Loc = tuple[str | int, ...]


class ConfigError(Exception):
    """A user error in a file, with its position. `str()` is the message to print."""

    def __init__(
        self, message: str, file: str | None = None, line: int | None = None, col: int | None = None
    ):
        self.message = message
        self.file = file
        self.line = line
        self.col = col
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ":".join(str(p) for p in (self.file, self.line, self.col) if p is not None)
        return f"{where}: {self.message}" if where else self.message


class ConfigErrors(Exception):
    """Several errors found in one pass (we report all of them, not just the first)."""

    def __init__(self, errors: Iterable[ConfigError]):
        # In the order of the file (pydantic reports nested models' errors first); errors without a place
        # (an environment variable's) first.
        self.errors = sorted(errors, key=lambda e: (e.file or "", e.line or 0, e.col or 0))
        super().__init__("\n".join(str(e) for e in self.errors))


@dataclass
class Document:
    """A parsed YAML document and the position of every key or list item in it."""

    data: Any
    file: str
    marks: dict[Loc, tuple[int, int]] = field(default_factory=dict)

    def position(self, loc: Loc) -> tuple[int | None, int | None]:
        """Line and column of the deepest known prefix of `loc`."""
        for end in range(len(loc), -1, -1):
            mark = self.marks.get(tuple(loc[:end]))
            if mark:
                return mark
        return None, None

    def error(self, loc: Loc, message: str) -> ConfigError:
        line, col = self.position(loc)
        return ConfigError(message, self.file, line, col)

    def validation_errors(
        self, exc: ValidationError, base: Loc = (), model: type[BaseModel] | None = None
    ) -> list[ConfigError]:
        """A pydantic error as positioned messages, one per problem; given the `model` validated, an unknown
        field's message suggests the known one it most resembles."""
        return [self.error(base + tuple(err["loc"]), describe_error(err, model)) for err in exc.errors()]


def describe_error(err: Any, model: type[BaseModel] | None = None) -> str:
    """One pydantic error as a short sentence naming the field (for an unknown field of `model`, with the
    known field it most resembles)."""
    loc = ".".join(str(p) for p in err["loc"] if p != "[key]")
    if err["type"] == "extra_forbidden":
        name = err["loc"][-1]
        known = fields_at(model, err["loc"][:-1]) if model is not None else []
        close = difflib.get_close_matches(str(name), known, n=1, cutoff=0.75)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"field {name} not found in type (unknown field {loc!r}{hint})"
    if err["type"] == "missing":
        return f"{loc}: required field is missing"
    message = err["msg"]
    # pydantic prefixes messages of ValueError-based validators with "Value error, ".
    message = message.removeprefix("Value error, ")
    return f"{loc}: {message}" if loc else message


def fields_at(model: type[BaseModel], loc: Loc) -> list[str]:
    """The keys `model` accepts at `loc` (aliases where set): into fields by name, list items by index and
    dict values by key; [] where the path leaves the models."""
    annotation: Any = model
    for part in loc:
        annotation = _within(annotation, part)
        if annotation is None:
            return []
    target = _model_in(annotation)
    if target is None:
        return []
    return [info.alias or name for name, info in target.model_fields.items() if not info.exclude]


def _within(annotation: Any, part: str | int) -> Any:
    """The annotation one step into `annotation` along `part`, or None."""
    target = _model_in(annotation)
    if target is not None and isinstance(part, str):
        for name, info in target.model_fields.items():
            if part in (name, info.alias):
                return info.annotation
        return None
    for candidate in _alternatives(annotation):
        origin, args = typing.get_origin(candidate), typing.get_args(candidate)
        if isinstance(part, int) and origin in (list, tuple, set, frozenset) and args:
            return args[0]
        if isinstance(part, str) and origin is dict and len(args) == 2:
            return args[1]
    return None


def _model_in(annotation: Any) -> type[BaseModel] | None:
    for candidate in _alternatives(annotation):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _alternatives(annotation: Any) -> list[Any]:
    """`annotation` without Annotated, split into the members of a union."""
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [a for member in typing.get_args(annotation) for a in _alternatives(member)]
    return [annotation]


class _Constructor(yaml.SafeLoader):
    pass


def _build(loader: _Constructor, node: yaml.Node, loc: Loc, doc: Document) -> Any:
    doc.marks.setdefault(loc, (node.start_mark.line + 1, node.start_mark.column + 1))
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)  # resolves `<<:` merge keys
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if isinstance(key, list | dict):
                raise ConfigError("mapping keys must be scalars", doc.file, key_node.start_mark.line + 1)
            if key in result:
                raise ConfigError(
                    f"duplicate key {key!r}",
                    doc.file,
                    key_node.start_mark.line + 1,
                    key_node.start_mark.column + 1,
                )
            doc.marks[(*loc, key)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            result[key] = _build(loader, value_node, (*loc, key), doc)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_build(loader, item, (*loc, i), doc) for i, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


def parse_yaml(text: str, file: str) -> Document:
    """Parse one YAML document; raises ConfigError with the position of a syntax error."""
    doc = Document(data=None, file=file)
    loader = _Constructor(text)
    try:
        node = loader.get_single_node()
        doc.data = _build(loader, node, (), doc) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        problem = exc.problem or str(exc)
        raise ConfigError(
            f"yaml: {problem}", file, mark.line + 1 if mark else None, mark.column + 1 if mark else None
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"yaml: {exc}", file) from None
    finally:
        loader.dispose()
    return doc


def read_text(path: str | Path) -> str:
    """A config file's text; a missing, unreadable or non-UTF-8 file is a ConfigError naming it."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read file: {exc.strerror or exc}", str(path)) from None
    except UnicodeDecodeError:
        raise ConfigError("file is not UTF-8 text", str(path)) from None


def load_yaml(path: str | Path) -> Document:
    """Read and parse a YAML file; a missing or unreadable file is a ConfigError naming it."""
    return parse_yaml(read_text(path), str(path))
