"""YAML loading that remembers where every value came from, so errors can say `file:line:col`.

Used for tripwire.yml, rule files and the routing file: a pydantic error's `loc` is mapped back to the line
of the offending key. Duplicate keys are an error (as in Prometheus' and Alertmanager's strict YAML).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

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
        self.errors = list(errors)
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

    def validation_errors(self, exc: ValidationError, base: Loc = ()) -> list[ConfigError]:
        """A pydantic error as positioned messages, one per problem."""
        return [self.error(base + tuple(err["loc"]), describe_error(err)) for err in exc.errors()]


def describe_error(err: Any) -> str:
    """One pydantic error as a short sentence naming the field."""
    loc = ".".join(str(p) for p in err["loc"] if p != "[key]")
    if err["type"] == "extra_forbidden":
        return f"field {err['loc'][-1]} not found in type (unknown field {loc!r})"
    if err["type"] == "missing":
        return f"{loc}: required field is missing"
    message = err["msg"]
    # pydantic prefixes messages of ValueError-based validators with "Value error, ".
    message = message.removeprefix("Value error, ")
    return f"{loc}: {message}" if loc else message


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
