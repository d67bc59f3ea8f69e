"""Label and annotation templates: Go's text/template as Prometheus uses it in rule files.

A template is parsed once, when its rule file loads, into a small tree; anything Go would refuse (syntax,
unknown functions, undefined variables such as `$label`) is a TemplateError then, never at 3 a.m. when the
alert fires. Data and functions are Prometheus' (template/template.go): `.Labels`/`$labels`,
`.Value`/`$value`, `.ExternalLabels`/`$externalLabels`, `$externalURL`; `humanize`, `humanize1024`,
`humanizePercentage`, `humanizeDuration`, `humanizeTimestamp`, `printf`, `toUpper`, `toLower`, `title`,
`reReplaceAll`, `match`, `stripPort`, `stripDomain` and Go's builtins (`and or not eq ne lt le gt ge len
index print printf println urlquery js html`); `if/else if/else`, `with`, `range`, variables, pipelines,
`{{-`/`-}}` trimming, comments. `query` (and the console-only functions built on it) is refused: tripwire
templates do not query. A missing label prints as the empty string (Prometheus executes with
missingkey=zero over map[string]string).
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any


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


class Template:
    """A parsed template; `render` fills it in."""

    def __init__(self, source: str, tree: list[Any]) -> None:
        self.source = source
        self._tree = tree

    def render(
        self, labels: dict[str, str], value: float, external_labels: dict[str, str], external_url: str = ""
    ) -> str:
        """Expand with Prometheus' alert data. Raises TemplateError where Go's execution would fail."""
        from services.evaluator.rules.template_engine import execute

        data = {
            "Labels": labels,
            "Value": value,
            "ExternalLabels": external_labels,
            "ExternalURL": external_url,
        }
        return execute(self._tree, data)


def parse_template(source: str) -> Template:
    """Parse `source`; raises TemplateError saying what is wrong and where."""
    from services.evaluator.rules.template_engine import parse

    return Template(source, parse(source))
