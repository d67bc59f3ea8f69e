from __future__ import annotations

import math
import re

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


def render(source: str, labels: dict[str, str] | None = None, value: float = 0.0) -> str:
    return parse_template(source).render(labels or {}, value, {"env": "prod"})


def test_labels_value_and_external_labels_and_missing_keys():
    t = parse_template(
        "{{ $labels.service }} at {{$value}} in {{ .ExternalLabels.env }}, [{{ .Labels.nope }}]"
    )
    # A missing label is the empty string: Prometheus executes with missingkey=zero over map[string]string.
    assert t.render({"service": "checkout"}, 0.05, {"env": "prod"}) == "checkout at 0.05 in prod, []"


@pytest.mark.parametrize(
    ("source", "value", "expected"),
    [
        # Expected strings as Prometheus' template_test.go and its %.4g formatting give them.
        ("{{ humanize $value }}", 1234567.0, "1.235M"),
        ("{{ humanize $value }}", 0.12345, "123.5m"),
        ("{{ humanize $value }}", 1e-7, "100n"),
        ("{{ humanize $value }}", 0.0, "0"),
        ("{{ humanize $value }}", math.inf, "+Inf"),
        ("{{ humanize1024 $value }}", 1048576.0, "1Mi"),
        ("{{ humanize1024 $value }}", 1.5, "1.5"),
        ("{{ humanizeDuration $value }}", 3661.0, "1h 1m 1s"),
        ("{{ humanizeDuration $value }}", 86400.0, "1d 0h 0m 0s"),
        ("{{ humanizeDuration $value }}", 0.0012345, "1.234ms"),
        ("{{ humanizeDuration $value }}", 1.23456, "1.235s"),
        ("{{ humanizeDuration $value }}", 0.0, "0s"),
        ("{{ humanizePercentage $value }}", 0.1234567, "12.35%"),
        ("{{ humanizeTimestamp $value }}", 1435065584.128, "2015-06-23 13:19:44.128 +0000 UTC"),
        ('{{ printf "%.2f%%" $value }}', 12.3456, "12.35%"),
        ('{{ printf "%s=%v (%d) %q" "a" 1.5 3 "x" }}', 0.0, 'a=1.5 (3) "x"'),
        ('{{ printf "%5.1f|%-4s|" $value "ab" }}', 3.14159, "  3.1|ab  |"),
        ('{{ $value | humanize | printf "%s!" }}', 2000.0, "2k!"),
    ],
)
def test_prometheus_functions(source: str, value: float, expected: str):
    assert render(source, value=value) == expected


LABELS = {"instance": "web-1.example.com:9100", "service": "checkout", "code": "503"}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            '{{ $labels.service | toUpper }}/{{ toLower "ABC" }}/{{ title "hello world" }}',
            "CHECKOUT/abc/Hello World",
        ),
        ('{{ reReplaceAll "(.*):.*" "$1" $labels.instance }}', "web-1.example.com"),
        ("{{ $labels.instance | stripPort | stripDomain }}", "web-1"),
        ('{{ if match "^5" $labels.code }}server error{{ end }}', "server error"),
        (
            '{{ if eq $labels.code "404" }}a{{ else if eq $labels.code "503" "502" }}b{{ else }}c{{ end }}',
            "b",
        ),
        ("{{ if and $labels.service (not $labels.nope) }}yes{{ end }}", "yes"),
        (
            "{{ range $k, $v := $labels }}{{ $k }}={{ $v }};{{ end }}",
            "code=503;instance=web-1.example.com:9100;service=checkout;",
        ),
        ("{{ with $labels.nope }}x{{ else }}none{{ end }}", "none"),
        ('{{ $s := $labels.service }}{{ $s }}{{ $s = "x" }}{{ $s }}', "checkoutx"),
        ('{{ len $labels }} {{ index $labels "code" }}', "3 503"),
        ("a  {{- /* a comment */ -}}  b", "ab"),
        ('{{- "x" }} \n {{- "y" -}} \n z', "xyz"),
        ('{{ "}}" }}', "}}"),
    ],
)
def test_go_template_language(source: str, expected: str):
    assert render(source, LABELS) == expected


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{{ $label.x }}", 'undefined variable "$label"'),
        ("{{ nope 1 }}", 'function "nope" not defined'),
        ('{{ query "up" }}', 'function "query" is not supported by tripwire'),
        ("{{ if true }}x", "has no {{ end }}"),
        ("{{ end }}", "unexpected {{ end }}"),
        ("{{ $x", "unclosed action"),
        ("{{ if true }}{{ $y := 1 }}{{ end }}{{ $y }}", 'undefined variable "$y"'),  # scoped to the if
        ('{{ define "x" }}{{ end }}', "not supported"),
    ],
)
def test_bad_templates_fail_when_the_rule_file_loads(source: str, message: str):
    with pytest.raises(TemplateError, match=re.escape(message)):
        parse_template(source)


def test_execution_errors_are_template_errors():
    with pytest.raises(TemplateError, match="incompatible types"):
        render('{{ lt 1 "a" }}')
    with pytest.raises(TemplateError, match="invalid syntax"):
        render('{{ humanize "abc" }}')
