"""A template function as the engine calls it, with Go's parameter types so calls are checked as Go does."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

# Parameter kinds: "any" (interface{}), "value" (reflect.Value: Go's builtins; a nil literal is refused by a
# static check), Go type names the executor checks ("string", "[]string", "int", "time.Time"), and "keys"
# (a []string, a single string also accepted).
CHECKED_KINDS = frozenset({"string", "[]string", "keys", "int", "time.Time"})


@dataclass(frozen=True, slots=True)
class Func:
    """A callable with Go's parameter kinds, its variadic tail's kind (None: not variadic) and the static type
    of its result ("any" when unknown). call is None for and/or, which the executor short-circuits; with
    with_state it gets the executor's state first (for the data model, the render's clock...)."""

    call: Callable[..., object] | None
    params: tuple[str, ...] = ()
    variadic: str | None = None
    result: str = "any"
    with_state: bool = False
    checked: bool = field(init=False)  # whether any parameter's kind is one the executor checks
    arity: int = field(init=False)  # len(params)

    def __post_init__(self) -> None:
        kinds = {*self.params, self.variadic}
        object.__setattr__(self, "checked", not kinds.isdisjoint(CHECKED_KINDS))
        object.__setattr__(self, "arity", len(self.params))
