"""Label and annotation templates: the Go text/template subset Prometheus rule files use.

Supported today: `{{ $labels.name }}`, `{{ $value }}`, `{{ $externalLabels.name }}` and their dot forms
(`{{ .Labels.name }}`, `{{ .Value }}`, `{{ .ExternalLabels.name }}`). Anything else (functions, pipelines,
if/else) is refused when the rule file is loaded, never at 3 a.m. when the alert fires.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from decimal import Decimal

_ACTION = re.compile(r"\{\{-?\s*(.*?)\s*-?\}\}", re.DOTALL)
_REF = re.compile(r"^(?:\$labels|\.Labels|\$externalLabels|\.ExternalLabels)\.([a-zA-Z_][a-zA-Z0-9_]*)$")
_VALUE = {"$value", ".Value"}


class TemplateError(ValueError):
    pass


def format_value(value: float) -> str:
    """A float as Go's `%v` prints it (strconv 'g', shortest): 3, 0.30000000000000004, 1e+06, NaN, +Inf."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    digits, exponent = _shortest_digits(abs(value))
    sign = "-" if value < 0 else ""
    # strconv.FormatFloat(v, 'g', -1, 64): exponent form when exp < -4 or exp >= 6 (shortest precision).
    if exponent < -4 or exponent >= 6:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{mantissa}e{'-' if exponent < 0 else '+'}{abs(exponent):02d}"
    point = exponent + 1
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return f"{sign}{digits}{'0' * (point - len(digits))}"
    return f"{sign}{digits[:point]}.{digits[point:]}"


def _shortest_digits(value: float) -> tuple[str, int]:
    """The shortest round-tripping decimal digits of `value` (Python's repr is shortest too) and the decimal
    exponent of the first digit."""
    _, digit_tuple, exp = Decimal(repr(value)).normalize().as_tuple()
    digits = "".join(map(str, digit_tuple))
    return digits, int(exp) + len(digits) - 1


@dataclass(frozen=True)
class Template:
    """A parsed template; `render` fills it in."""

    source: str
    parts: tuple[tuple[str, str], ...]  # ("text", s) | ("label", name) | ("external", name) | ("value", "")

    def render(self, labels: dict[str, str], value: float, external_labels: dict[str, str]) -> str:
        out = []
        for kind, arg in self.parts:
            if kind == "text":
                out.append(arg)
            elif kind == "label":
                # Go templates print a missing map key as "<no value>"; Prometheus' templates do too.
                out.append(labels.get(arg, "<no value>"))
            elif kind == "external":
                out.append(external_labels.get(arg, "<no value>"))
            else:
                out.append(format_value(value))
        return "".join(out)


def parse_template(source: str) -> Template:
    """Parse `source`; raises TemplateError naming the first unsupported action."""
    parts: list[tuple[str, str]] = []
    pos = 0
    for match in _ACTION.finditer(source):
        if match.start() > pos:
            parts.append(("text", source[pos : match.start()]))
        action = match.group(1)
        ref = _REF.match(action)
        if action in _VALUE:
            parts.append(("value", ""))
        elif ref:
            parts.append(("label" if "xternal" not in action else "external", ref.group(1)))
        else:
            raise TemplateError(
                f"template action {{{{ {action} }}}} is not supported yet "
                "(supported: $labels.<name>, $value, $externalLabels.<name>)"
            )
        pos = match.end()
    rest = source[pos:]
    if "{{" in rest:
        raise TemplateError("unterminated template action: '{{' without a matching '}}'")
    if rest:
        parts.append(("text", rest))
    return Template(source, tuple(parts))
