from __future__ import annotations

import math

import pytest

from services.evaluator.rules.templates import TemplateError, format_value, parse_template


@pytest.mark.parametrize(
    ("value", "go"),
    [
        (3.0, "3"),
        (0.1 + 0.2, "0.30000000000000004"),
        (1e6, "1e+06"),
        (123456.0, "123456"),
        (1234567.0, "1.234567e+06"),
        (0.0001, "0.0001"),
        (0.00001, "1e-05"),
        (-2.5, "-2.5"),
        (0.0, "0"),
        (math.inf, "+Inf"),
        (-math.inf, "-Inf"),
        (math.nan, "NaN"),
        (5e-324, "5e-324"),
    ],
)
def test_value_prints_like_go_percent_v(value: float, go: str):
    assert format_value(value) == go


def test_labels_value_and_external_labels():
    t = parse_template("{{ $labels.service }} at {{$value}} in {{ .ExternalLabels.env }}, {{ .Labels.nope }}")
    assert t.render({"service": "checkout"}, 0.05, {"env": "prod"}) == "checkout at 0.05 in prod, <no value>"


@pytest.mark.parametrize(
    "source", ["{{ $value | humanize }}", "{{ $label.x }}", "{{ if true }}x{{ end }}", "{{ $x"]
)
def test_unsupported_templates_fail_at_load_time(source: str):
    with pytest.raises(TemplateError):
        parse_template(source)
