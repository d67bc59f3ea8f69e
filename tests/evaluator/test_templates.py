"""Alert templates against Prometheus' own expectations (template/template_test.go, prometheus/common's
helpers/templates tests) and Go's text/template and fmt behaviour."""

from __future__ import annotations

import math
import re

import pytest

from services.evaluator.rules.templates import Template, TemplateError, format_value, parse_template

LABELS = {"instance": "web-1.example.com:9100", "service": "checkout", "code": "503"}
MAX_INT64 = "9223372036854775807"


def render(source: str, labels: dict[str, str] | None = None, value: float = 0.0) -> str:
    return parse_template(source).render(LABELS if labels is None else labels, value, {"env": "prod"})


def load_error(source: str) -> str:
    with pytest.raises(TemplateError) as caught:
        parse_template(source)
    return str(caught.value)


# Go's %v of a float64 ---------------------------------------------------------------------------------------
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
    assert render("{{ $value }}", value=value) == go


# The data ---------------------------------------------------------------------------------------------------
def test_labels_value_and_external_labels_and_missing_keys():
    t = parse_template(
        "{{ $labels.service }} at {{$value}} in {{ .ExternalLabels.env }}, [{{ .Labels.nope }}]"
    )
    # A missing label is the empty string: Prometheus executes with missingkey=zero over map[string]string
    # (template.go), whose zero value is "" - not Go's default "<no value>".
    assert t.render({"service": "checkout"}, 0.05, {"env": "prod"}) == "checkout at 0.05 in prod, []"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ .Labels.service }}|{{ .Value }}|{{ $externalLabels.env }}", "checkout|0.25|prod"),
        ('[{{ index $labels "nope" }}][{{ $labels.nope }}][{{ $externalLabels.nope }}]', "[][][]"),
        ("[{{ $externalURL }}][{{ .ExternalURL }}]", "[][]"),
        ("{{ range $labels }}{{ $.Labels.service }}{{ end }}", "checkoutcheckoutcheckout"),  # $ is the data
        ("{{ $labels }}", "map[code:503 instance:web-1.example.com:9100 service:checkout]"),
        ("{{ . }}", "{map[code:503 instance:web-1.example.com:9100 service:checkout] map[env:prod]  0.25}"),
        ('{{ printf "%+v" .ExternalLabels }}', "map[env:prod]"),
    ],
)
def test_alert_data_as_prometheus_passes_it(source: str, expected: str):
    assert render(source, value=0.25) == expected


def test_external_url_and_source():
    t = parse_template("{{ $externalURL }}/alerts")
    assert t.source == "{{ $externalURL }}/alerts"
    assert t.render({}, 1.0, {}, external_url="http://prom:9090") == "http://prom:9090/alerts"
    assert t == parse_template("{{ $externalURL }}/alerts")
    assert isinstance(t, Template)


# Prometheus' functions, with template_test.go's expected strings --------------------------------------------
@pytest.mark.parametrize(
    ("source", "value", "expected"),
    [
        ("{{ humanize $value }}", 0.0, "0"),
        ("{{ humanize $value }}", 1.0, "1"),
        ("{{ humanize $value }}", 1234567.0, "1.235M"),
        ("{{ humanize $value }}", 0.12, "120m"),
        ("{{ humanize $value }}", 0.00123, "1.23m"),
        ("{{ humanize $value }}", 0.12345, "123.5m"),
        ("{{ humanize $value }}", 1e-7, "100n"),
        ("{{ humanize $value }}", -1234.0, "-1.234k"),
        ('{{ humanize "1234567.0" }}:{{ humanize ".12" }}', 0.0, "1.235M:120m"),
        (
            f"{{{{ humanize -1 }}}}:{{{{ humanize 1234567 }}}}:{{{{ humanize {MAX_INT64} }}}}",
            0.0,
            "-1:1.235M:9.223E",
        ),
        ("{{ humanize1024 $value }}", 0.0, "0"),
        ("{{ humanize1024 $value }}", 1.0, "1"),
        ("{{ humanize1024 $value }}", 1048576.0, "1Mi"),
        ("{{ humanize1024 $value }}", 0.12, "0.12"),
        ('{{ humanize1024 "1048576.0" }}', 0.0, "1Mi"),
        (f"{{{{ humanize1024 1234567 }}}}:{{{{ humanize1024 {MAX_INT64} }}}}", 0.0, "1.177Mi:8Ei"),
        ("{{ humanizeDuration $value }}", 0.0, "0s"),
        ("{{ humanizeDuration $value }}", 1.0, "1s"),
        ("{{ humanizeDuration $value }}", 60.0, "1m 0s"),
        ("{{ humanizeDuration $value }}", 3600.0, "1h 0m 0s"),
        ("{{ humanizeDuration $value }}", 3661.0, "1h 1m 1s"),
        ("{{ humanizeDuration $value }}", 86400.0, "1d 0h 0m 0s"),
        ("{{ humanizeDuration $value }}", 86400.0 + 3600, "1d 1h 0m 0s"),
        ("{{ humanizeDuration $value }}", -(86400.0 * 2 + 3600 * 3 + 60 * 4 + 5), "-2d 3h 4m 5s"),
        ("{{ humanizeDuration $value }}", 899.99, "14m 59s"),
        ("{{ humanizeDuration $value }}", 0.5, "500ms"),
        ("{{ humanizeDuration $value }}", 0.1, "100ms"),
        ("{{ humanizeDuration $value }}", 0.0001, "100us"),
        ("{{ humanizeDuration $value }}", 0.12345, "123.5ms"),
        ("{{ humanizeDuration $value }}", 60.1, "1m 0s"),
        ("{{ humanizeDuration $value }}", 60.5, "1m 0s"),
        ("{{ humanizeDuration $value }}", 1.2345, "1.234s"),
        ("{{ humanizeDuration $value }}", 12.345, "12.35s"),
        ('{{ humanizeDuration "86400" }}:{{ humanizeDuration ".12345" }}', 0.0, "1d 0h 0m 0s:123.5ms"),
        ("{{ humanizeDuration -1 }}:{{ humanizeDuration 1234567 }}", 0.0, "-1s:14d 6h 56m 7s"),
        ("{{ humanizePercentage $value }}", 0.1234, "12.34%"),
        (
            "{{ -0.22222 | humanizePercentage }}:{{ 0.0 | humanizePercentage }}:"
            "{{ 0.1234567 | humanizePercentage }}:{{ 1.23456 | humanizePercentage }}",
            0.0,
            "-22.22%:0%:12.35%:123.5%",
        ),
        ('{{ "-0.22222" | humanizePercentage }}:{{ "1.23456" | humanizePercentage }}', 0.0, "-22.22%:123.5%"),
        (
            "{{ humanizePercentage -1 }}:{{ humanizePercentage 1234567 }}:"
            f"{{{{ humanizePercentage {MAX_INT64} }}}}",
            0.0,
            "-100%:1.235e+08%:9.223e+20%",
        ),
        ("{{ humanizeTimestamp $value }}", 1435065584.128, "2015-06-23 13:19:44.128 +0000 UTC"),
        ('{{ "1435065584.128" | humanizeTimestamp }}', 0.0, "2015-06-23 13:19:44.128 +0000 UTC"),
        ("{{ humanizeTimestamp 0 }}", 0.0, "1970-01-01 00:00:00 +0000 UTC"),
        ("{{ humanizeTimestamp -1 }}", 0.0, "1969-12-31 23:59:59 +0000 UTC"),
        ("{{ humanizeTimestamp 1234567 }}", 0.0, "1970-01-15 06:56:07 +0000 UTC"),
        ("{{ humanizeTimestamp 9223372036 }}", 0.0, "2262-04-11 23:47:16 +0000 UTC"),
        # model.Time has millisecond precision: the nanoseconds are dropped.
        ("{{ humanizeTimestamp $value }}", 1.0000001, "1970-01-01 00:00:01 +0000 UTC"),
    ],
)
def test_humanize_functions_match_prometheus(source: str, value: float, expected: str):
    assert render(source, value=value) == expected


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_humanize_functions_keep_inf_and_nan(value: float):
    # Inside `with $value` dot is the value (NaN and Inf are true: they are not 0).
    source = "{{ humanize . }}:{{ humanize1024 . }}:{{ humanizeDuration . }}:{{ humanizeTimestamp . }}"
    assert render("{{ with $value }}" + source + "{{ end }}", value=value) == ":".join(
        [format_value(value)] * 4
    )


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('{{ "aa bb CC" | title }}', "Aa Bb CC"),
        ('{{ "aa bb CC" | toUpper }}', "AA BB CC"),
        ('{{ "aA bB CC" | toLower }}', "aa bb cc"),
        ('{{ toUpper "straße" }}', "STRAßE"),  # strings.ToUpper maps rune by rune: ß has no single upper case
        ('{{ match "a+" "aa" }} {{ match "a+" "b" }}', "true false"),
        ('{{ reReplaceAll "(a)b" "x$1" "ab" }}', "xa"),
        ('{{ reReplaceAll "(.*):.*" "$1" $labels.instance }}', "web-1.example.com"),
        ('{{ reReplaceAll "(?P<host>[^.]+)\\\\..*" "${host}!" $labels.instance }}', "web-1!"),
        ('{{ reReplaceAll "(a)" "$1x" "a" }}', ""),  # Go reads $1x as the group named "1x"
        ('{{ reReplaceAll "x*" "-" "abxd" }}', "-a-b-d-"),  # no empty match right after a match
        ('{{ "foo.example.com" | stripPort }}', "foo.example.com"),
        ('{{ "foo.example.com:12345" | stripPort }}', "foo.example.com"),
        ('{{ "192.0.2.1" | stripPort }}', "192.0.2.1"),
        ('{{ "192.0.2.1:12345" | stripPort }}', "192.0.2.1"),
        ('{{ "2001:0DB8::1" | stripPort }}', "2001:0DB8::1"),
        ('{{ "[2001:0DB8::1]:12345" | stripPort }}', "2001:0DB8::1"),
        ('{{ "[2001:0DB8::1]::12345" | stripPort }}', "[2001:0DB8::1]::12345"),
        ('{{ "foo.example.com" | stripDomain }}', "foo"),
        ('{{ "foo.example.com:12345" | stripDomain }}', "foo:12345"),
        ('{{ "192.0.2.1" | stripDomain }}', "192.0.2.1"),
        ('{{ "192.0.2.1:12345" | stripDomain }}', "192.0.2.1:12345"),
        ('{{ "2001:0DB8::1" | stripDomain }}', "2001:0DB8::1"),
        ('{{ "[2001:0DB8::1]:12345" | stripDomain }}', "[2001:0DB8::1]:12345"),
        ('{{ "[2001:0DB8::1]::12345" | stripDomain }}', "[2001:0DB8::1]::12345"),
        ("{{ $labels.instance | stripPort | stripDomain }}", "web-1"),
        ('{{ graphLink "up" }}', "/graph?g0.expr=up&g0.tab=0"),
        ('{{ tableLink "rate(x[5m]) > 1" }}', "/graph?g0.expr=rate%28x%5B5m%5D%29+%3E+1&g0.tab=1"),
        ('{{ printf "%0.2f" (parseDuration "1h2m10ms") }}', "3720.01"),
        ('{{ "<b>" | safeHtml }}', "<b>"),
        ("{{ 1 }}", "1"),
        ("plain text", "plain text"),
        ('{{ "<b>" }}', "<b>"),  # no HTML escaping in text templates
    ],
)
def test_string_functions(source: str, expected: str):
    assert render(source) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("hello world", "Hello World"),
        ("foo-bar baz_qux", "Foo-Bar Baz_qux"),  # "_" joins a word, "-" breaks it
        ("o'neil", "O'neil"),  # one apostrophe inside a word does not break it
        ("3rd", "3Rd"),  # cases.Title (Prometheus 3) title-cases the first *cased* letter after a break
        ("ALREADY Up", "ALREADY Up"),  # cases.NoLower keeps the rest
    ],
)
def test_title_is_cases_title_with_no_lower(text: str, expected: str):
    assert render("{{ title $labels.x }}", {"x": text}) == expected


# Go's printf ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ('"%.2f%%" $value', "12.35%"),
        ('"%s=%v (%d) %q" "a" 1.5 3 "x"', 'a=1.5 (3) "x"'),
        ('"%5.1f|%-4s|" $value "ab"', " 12.3|ab  |"),
        (
            '"%08.3f|%+.0f|% .1f|%#.0f|%#g|%#.3g" -3.14159 2.5 3.0 3.0 1.0 1.0',
            "-003.142|+2| 3.0|3.|1.00000|1.00",
        ),
        (
            '"%06.2f|%+06.1f|%e|%.3E|%g|%G" -1.5 2.25 1234.5678 0.000123 1e21 1e-7',
            "-01.50|+002.2|1.234568e+03|1.230E-04|1e+21|1E-07",
        ),
        ('"%v %v %v %.2v" 1e21 1e-7 100000.0 3.14159', "1e+21 1e-07 100000 3.1"),
        ('"%x|%X|%b" 1.0 -3.5 0.5', "0x1p+00|-0X1.CP+01|4503599627370496p-53"),
        (
            '"%d|%+d|% d|%05d|%-5d|%.3d|%x|%#x|%X|%o|%#o|%O|%b" 7 5 5 -42 42 7 -255 255 255 8 8 8 5',
            "7|+5| 5|-0042|42   |007|-ff|0xff|FF|10|010|0o10|101",
        ),
        ('"%c|%q|%U|%#U" 9731 9731 9731 9731', "☃|'☃'|U+2603|U+2603 '☃'"),
        (
            '"%s|%.3s|%5.1s|%-6s|%q|%#q|%+q|%x|% x|%#x" '
            '"abc" "abcdef" "xyz" "ab" "é\\n" "a`b" "é" "hi" "hi" "hi"',
            'abc|abc|    x|ab    |"é\\n"|"a`b"|"\\u00e9"|6869|68 69|0x6869',
        ),
        ('"%t|%5t|%-6v|%v" true true false false', "true| true|false |false"),
        (
            '"%v|%s|%d|%T|%T|%T|%T" $labels $labels.code 3 1.5 "s" $labels true',
            "map[code:503 instance:web-1.example.com:9100 service:checkout]|503|3|"
            "float64|string|map[string]string|bool",
        ),
        ('"%*d|%-*d|%.*f" 5 3 -4 7 2 3.14159', "    3|7   |3.14"),
        ('"%[2]d %[1]d" 1 2', "2 1"),
        ('"%d %s" 1', "1 %!s(MISSING)"),
        ('"%d" 1 2', "1%!(EXTRA int=2)"),
        ('"%s|%d|%t" 1.5 "x" 1', "%!s(float64=1.5)|%!d(string=x)|%!t(int=1)"),
        ('"%v|%s" nil nil', "<nil>|%!s(<nil>)"),
        ('"%z" 1', "%!z(int=1)"),
        ('"100%%" ', "100%"),
        ('"%"', "%!(NOVERB)"),
        ('"%[3]d" 1', "%!d(BADINDEX)"),
        ('"%f %v %5.1f|% f|%+v" $value $value $value $value $value', None),  # NaN: see below
    ],
)
def test_printf_formats_like_go(args: str, expected: str | None):
    if expected is None:  # NaN and Inf are words, never zero-padded; "% f" puts a space for Inf's +
        assert render(f"{{{{ printf {args} }}}}", value=math.nan) == "NaN NaN   NaN| NaN|NaN"
        assert render(f"{{{{ printf {args} }}}}", value=math.inf) == "+Inf +Inf  +Inf| Inf|+Inf"
        return
    assert render(f"{{{{ printf {args} }}}}", value=12.3456) == expected


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('{{ print 1 2 "a" 3 "b" "c" }}', "1 2a3bc"),  # spaces only between two non-strings
        ('{{ println 1 "a" }}', "1 a\n"),
        ("{{ print nil }}|{{ html nil }}", "<nil>|&lt;no value&gt;"),
        ('{{ html "<a href=\'x\'>\\"&\\"</a>" }}', "&lt;a href=&#39;x&#39;&gt;&#34;&amp;&#34;&lt;/a&gt;"),
        ('{{ js "it\'s <b>=\\"&\\"\\n" }}', 'it\\\'s \\u003Cb\\u003E\\u003D\\"\\u0026\\"\\u000A'),
        ('{{ urlquery "a b&c=d/é" }}', "a+b%26c%3Dd%2F%C3%A9"),
        ('{{ urlquery "a" 1 2 }}', "a1+2"),  # fmt.Sprint("a", 1, 2), then escaped
        ('{{ len $labels }} {{ len "é" }} {{ len "" }}', "3 2 0"),  # len of a string counts bytes
        ('{{ index $labels "code" }} {{ index "abc" 1 }}', "503 98"),  # a string's element is a byte
        ('{{ slice "abcdef" 1 3 }} {{ slice "abcdef" 4 }} {{ slice "abc" }}', "bc ef abc"),
        (
            '{{ not "" }} {{ not 0 }} {{ not 0.0 }} {{ not $labels }} {{ not . }} {{ not "x" }}',
            "true true true false false false",
        ),
        ('{{ and 1 0 }} {{ and 1 2 }} {{ or "" "b" }} {{ or 0 "" }}|', "0 2 b |"),
        ('{{ eq $labels.code "404" "503" }} {{ ne 1 2 }} {{ eq "a" "a" }}', "true true true"),
        ('{{ lt 1 2 }} {{ le 2 2 }} {{ gt "b" "a" }} {{ ge 1.5 2.5 }}', "true true true false"),
    ],
)
def test_go_builtins(source: str, expected: str):
    assert render(source) == expected


def test_and_or_short_circuit_like_go():
    # The second operand would fail (humanize of "bad"); Go's and/or never evaluate it.
    assert render('{{ or "yes" (humanize $labels.x) }}', {"x": "bad"}) == "yes"
    assert render("{{ and 0 (humanize $labels.x) }}", {"x": "bad"}) == "0"
    with pytest.raises(TemplateError, match="error calling humanize"):
        render("{{ and 1 (humanize $labels.x) }}", {"x": "bad"})


def test_comparisons_follow_go_for_nan():
    # gt is "not le" and le is "lt or eq", so gt NaN 1.0 is true in Go.
    assert (
        render("{{ gt $value 1.0 }} {{ lt $value 1.0 }} {{ eq $value $value }}", value=math.nan)
        == "true false false"
    )


# The language -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            '{{ $labels.service | toUpper }}/{{ toLower "ABC" }}/{{ title "hello world" }}',
            "CHECKOUT/abc/Hello World",
        ),
        ('{{ $value | humanize | printf "%s!" }}', "2k!"),
        ('{{ "a" | printf "%s-%s" "b" }}', "b-a"),  # the piped value is the last argument
        ('{{ printf "%s:%s" (index $labels "code") ($labels.service | toUpper) }}', "503:CHECKOUT"),
        ("{{ ($labels).service }} {{ (humanize 2000.0) }}", "checkout 2k"),
        ('{{ if match "^5" $labels.code }}server error{{ end }}', "server error"),
        (
            '{{ if eq $labels.code "404" }}a{{ else if eq $labels.code "503" "502" }}b{{ else }}c{{ end }}',
            "b",
        ),
        ('{{ if eq $labels.code "404" }}a{{ else if false }}b{{ else }}c{{ end }}', "c"),
        ("{{ if and $labels.service (not $labels.nope) }}yes{{ end }}", "yes"),
        ("{{ if $value }}nonzero{{ else }}zero{{ end }}", "nonzero"),
        (
            '{{ if "" }}a{{ else if 0 }}b{{ else if 0.0 }}c{{ else if $labels.nope }}d{{ else }}e{{ end }}',
            "e",
        ),
        (
            "{{ range $k, $v := $labels }}{{ $k }}={{ $v }};{{ end }}",
            "code=503;instance=web-1.example.com:9100;service=checkout;",
        ),
        ("{{ range $v := $labels }}{{ $v }};{{ end }}", "503;web-1.example.com:9100;checkout;"),
        ("{{ range $labels }}[{{ . }}]{{ end }}", "[503][web-1.example.com:9100][checkout]"),
        ("{{ range $externalLabels }}x{{ else }}none{{ end }}", "x"),
        ("{{ range 3 }}{{ . }}{{ end }}", "012"),
        (
            "{{ range $i := 6 }}{{ if eq $i 1 }}{{ continue }}{{ end }}"
            "{{ if eq $i 4 }}{{ break }}{{ end }}{{ $i }}{{ end }}",
            "023",
        ),
        ("{{ with $labels.nope }}x{{ else }}none{{ end }}", "none"),
        ("{{ with $labels.nope }}x{{ else with $labels.code }}code {{ . }}{{ end }}", "code 503"),
        ("{{ with $x := $labels.code }}{{ $x }}/{{ . }}{{ end }}", "503/503"),
        ('{{ $s := $labels.service }}{{ $s }}{{ $s = "x" }}{{ $s }}', "checkoutx"),
        (
            "{{ $n := 0 }}{{ range $labels }}{{ $n = . }}{{ end }}{{ $n }}",
            "checkout",
        ),  # = assigns the outer $n
        ('{{ $x := "outer" }}{{ if true }}{{ $x := "inner" }}{{ $x }}{{ end }} {{ $x }}', "inner outer"),
        ('{{ len $labels }} {{ index $labels "code" }}', "3 503"),
        ("a  {{- /* a comment */ -}}  b", "ab"),
        ('{{- "x" }} \n {{- "y" -}} \n z', "xyz"),
        ("{{-3}}|{{3 -}}  x", "-3|3x"),  # "-" trims only with a space after (before) it
        ("x {{/* c */}} y", "x  y"),
        ('{{ "}}" }}', "}}"),
        ("{{ if\n  true }}multi-line action{{ end }}", "multi-line action"),
        ('{{ "tab\\there" }}|{{ `raw\\t` }}|{{ "\\u00e9\\x41\\101" }}', "tab\there|raw\\t|éAA"),
        (
            "{{ 1.5 }} {{ 1e3 }} {{ 0x10 }} {{ 0o17 }} {{ 017 }} {{ 1_000 }} {{ 'a' }} {{ true }} {{ .5 }}",
            "1.5 1000 16 15 15 1000 97 true 0.5",
        ),
    ],
)
def test_go_template_language(source: str, expected: str):
    assert render(source, value=2000.0) == expected


# Load-time errors -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{{ $label.x }}", 'at 3: undefined variable "$label" (did you mean "$labels"?)'),
        ("{{ $value | humanise }}", 'at 12: function "humanise" not defined (did you mean "humanize"?)'),
        ("{{ nope 1 }}", 'function "nope" not defined'),
        ('{{ query "up" }}', 'function "query" is not supported by tripwire'),
        ("{{ $labels | first | value }}", 'function "first" is not supported by tripwire'),
        ("{{ args 1 }}", 'function "args" is not supported'),
        ('{{ tmpl "x" . }}', 'function "tmpl" is not supported'),
        ("{{ pathPrefix }}", 'function "pathPrefix" is not supported'),
        ("{{ toTime $value }}", 'function "toTime" is not supported'),
        ("{{ if true }}x", "at 3: unexpected EOF: {{if}} has no matching {{end}}"),
        ("{{ range $labels }}{{ if true }}x{{ end }}", "unexpected EOF: {{range}} has no matching {{end}}"),
        ("{{ end }}", "at 3: unexpected {{end}}"),
        ("x{{ else }}", "unexpected {{else}}"),
        ("{{ if true }}{{ else }}{{ else }}{{ end }}", "expected end; found {{else}}"),
        ("{{ $x", "at 0: unclosed action"),
        ("{{", "unclosed action"),
        ("{{ if true }}{{ $y := 1 }}{{ end }}{{ $y }}", 'undefined variable "$y"'),  # scoped to the if
        ("{{ range $i, $e := $labels }}{{ end }}{{ $i }}", 'undefined variable "$i"'),
        ("{{ $x := $x }}", 'undefined variable "$x"'),
        ("{{ $z = 1 }}", 'undefined variable "$z"'),
        ('{{ define "x" }}{{ end }}', "{{define}} is not supported"),
        ('{{ template "x" }}', "{{template}} is not supported"),
        ("{{ break }}", "{{break}} outside {{range}}"),
        ("{{\u00a0}}", "unrecognized character in action: U+00A0"),
        ("{{ $labels.foo-bar }}", "bad character U+002D '-'"),
        ("{{/* x", "unclosed comment"),
        ("{{/* x */ }}", "comment ends before closing delimiter"),
        ('{{ "abc }}', "unterminated quoted string"),
        ("{{ `abc }}", "unterminated raw quoted string"),
        ('{{ "\\q" }}', 'invalid string literal "\\q"'),
        ("{{ 1x }}", 'bad number syntax: "1x"'),
        ("{{ 08 }}", 'integer overflow: "08"'),
        ("{{ 99999999999999999999 }}", "overflows int"),
        ("{{ 1+2i }}", "complex constant 1+2i is not supported"),
        ("{{ (1 }}", "unclosed left paren"),
        ("{{ 1) }}", "unexpected right paren"),
        ("{{ }}", "missing value for command"),
        ("{{ if }}x{{ end }}", "missing value for if"),
        ("{{ $value | }}", "missing command after |"),
        ("{{ 1 | 2 }}", "non executable command in pipeline stage 2"),
        ('{{ printf "%d"$value }}', 'unexpected "$value" in operand'),
        ("{{ .Labels. }}", "unexpected"),
        ('{{ "x".y }}', "unexpected . after term"),
        ("{{ nil }}", "nil is not a command"),
        ("{{ $value | $value }}", "can't give argument to non-function $value"),
        ('{{ "x" 1 }}', 'can\'t give argument to non-function "x"'),
        ('{{ "a" . }}', 'can\'t give argument to non-function "a"'),
        # Refused wherever it is, even where and/or or an untaken branch would not run it.
        ('{{ and "" (len 1) }}', "error calling len: len of type int"),
        # What every expansion would fail on is refused at load rather than at 3 a.m.
        ("{{ .Foo }}", "can't evaluate field Foo: the alert data has only .Labels"),
        ("{{ $labels.a.b }}", "can't evaluate field b in type string"),
        ("{{ $value.x }}", "can't evaluate field x in type float64"),
        ("{{ range $labels }}{{ .Labels }}{{ end }}", "can't evaluate field Labels in type string"),
        ('{{ .Labels.foo "x" }}', "foo is not a method but has arguments"),
        ("{{ printf }}", "wrong number of args for printf: want at least 1 got 0"),
        ("{{ humanize 1 2 }}", "wrong number of args for humanize: want 1 got 2"),
        ("{{ 1 | humanize 2 }}", "wrong number of args for humanize: want 1 got 2"),
        ("{{ toUpper 1 }}", "expected string; found 1"),
        ("{{ $value | toUpper }}", "wrong type for value; expected string; got float64"),
        ("{{ printf $value }}", "wrong type for value; expected string; got float64"),
        ("{{ eq $labels.code nil }}", "cannot assign nil to reflect.Value"),
        (
            "{{ if gt $value 80 }}x{{ end }}",
            "error calling gt: incompatible types for comparison (float64 and int",
        ),
        ("{{ if eq $labels.code 503 }}x{{ end }}", "error calling eq: incompatible types for comparison"),
        ("{{ lt true false }}", "error calling lt: invalid type for comparison"),
        ("{{ eq $labels $labels }}", "error calling eq: non-comparable type map[string]string"),
        ("{{ len $value }}", "error calling len: len of type float64"),
        ("{{ index $value 1 }}", "error calling index: can't index item of type float64"),
        ("{{ index $labels 1 }}", "error calling index: value has type int; should be string"),
        ('{{ humanize "one" }}', 'error calling humanize: strconv.ParseFloat: parsing "one": invalid syntax'),
        ("{{ humanize $labels }}", "error calling humanize: can't convert map[string]string to float"),
        ('{{ match "(" "x" }}', "error calling match: error parsing regexp"),
        ('{{ reReplaceAll "[" "" "x" }}', "error calling reReplaceAll: regexp: Compile(`[`)"),
        ('{{ parseDuration "5 minutes" }}', 'error calling parseDuration: unknown unit " minutes"'),
        ("{{ range $value }}x{{ end }}", "range can't iterate over a float64"),
    ],
)
def test_bad_templates_fail_when_the_rule_file_loads(source: str, message: str):
    with pytest.raises(TemplateError, match=re.escape(message)):
        parse_template(source)


def test_errors_in_multi_line_templates_give_line_and_column():
    assert load_error("line one\n{{ $labels.x }} and\n  {{ bogus }}") == (
        'at 34 (line 3, column 6): function "bogus" not defined'
    )


# Expansion-time errors --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("source", "labels", "value", "message"),
    [
        (
            "{{ humanize $labels.x }}",
            {"x": "one"},
            0.0,
            "at 3: executing <humanize $labels.x>: error calling humanize: "
            'strconv.ParseFloat: parsing "one": invalid syntax',
        ),
        (
            "{{ $labels.x | humanizePercentage }}",
            {"x": "1,5"},
            0.0,
            'error calling humanizePercentage: strconv.ParseFloat: parsing "1,5": invalid syntax',
        ),
        (
            "{{ humanizeTimestamp $value }}",
            {},
            9.3e18,
            "error calling humanizeTimestamp: 9.3e+18 cannot be represented as a nanoseconds timestamp "
            "since it overflows int64",
        ),
        (
            "{{ humanizeTimestamp $value }}",
            {},
            -9223372036854775808.0,
            "-9.223372036854776e+18 cannot be represented as a nanoseconds timestamp",
        ),
        (
            # $x is assigned, so its type is only known when the template runs.
            '{{ $x := "a" }}{{ if $value }}{{ $x = 1 }}{{ end }}{{ toUpper $x }}',
            {},
            1.0,
            "executing <$x>: wrong type for value; expected string; got int",
        ),
        ('{{ index "abc" 5 }}', {}, 0.0, "error calling index: index out of range: 5"),
        ('{{ slice "abc" 2 1 }}', {}, 0.0, "error calling slice: invalid slice index: 2 > 1"),
    ],
)
def test_expansion_errors_are_template_errors_with_gos_message(
    source: str, labels: dict[str, str], value: float, message: str
):
    template = parse_template(source)  # fine at load: the failure depends on the data
    with pytest.raises(TemplateError, match=re.escape(message)):
        template.render(labels, value, {})


@pytest.mark.parametrize("value", [0.0, -0.0, 1.5, -1e300, 1e-300, 5e-324, math.inf, -math.inf, math.nan])
@pytest.mark.parametrize("labels", [{}, LABELS, {"instance": "", "service": 'ünïcödé \n "quoted" {{ }}'}])
def test_rendering_realistic_templates_never_fails_on_normal_data(value: float, labels: dict[str, str]):
    source = (
        "{{ $labels.instance | stripPort | stripDomain }} ({{ $labels.service | toUpper }}): "
        "{{ $value | humanize }} {{ humanize1024 $value }} {{ humanizePercentage $value }} "
        '{{ humanizeDuration $value }} {{ printf "%.2f %v %g %e" $value $value $value $value }} '
        "{{ if gt $value 0.5 }}high{{ else }}low{{ end }} "
        '{{ range $k, $v := $labels }}{{ $k }}={{ $v | printf "%q" }} {{ end }}'
        '{{ reReplaceAll "[^a-z]" "_" (index $labels "service") }} {{ title $labels.service }}'
    )
    assert isinstance(parse_template(source).render(labels, value, {}), str)
