"""Alertmanager templates: Go text/template semantics, Alertmanager's functions and data, safety limits."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from services.notifier.templates import (
    MAX_OUTPUT,
    MAX_PARSE_DEPTH,
    MAX_RANGE_ITERATIONS,
    MAX_TEMPLATE_DEPTH,
    AlertData,
    Template,
    TemplateData,
    TemplateError,
    is_template,
    render,
)

T0 = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
ZERO = datetime(1, 1, 1, tzinfo=UTC)


def alert(
    status: str = "firing",
    starts_at: datetime = T0,
    ends_at: datetime = ZERO,
    annotations: dict[str, str] | None = None,
    **labels: str,
) -> AlertData:
    return AlertData(
        status=status,
        labels=labels,
        annotations=annotations or {},
        starts_at=starts_at,
        ends_at=ends_at,
        generator_url=f"http://prometheus/graph?{labels.get('instance', '')}",
        fingerprint=f"fp-{labels.get('instance', '')}",
    )


FIRING = alert(
    annotations={"summary": "p99 latency high", "runbook": "http://runbooks/latency"},
    alertname="HighLatency",
    severity="page",
    job="api",
    instance="api-1",
)
RESOLVED = alert(
    "resolved",
    starts_at=T0 - timedelta(minutes=30),
    ends_at=T0,
    annotations={"summary": "p99 latency high"},
    alertname="HighLatency",
    severity="page",
    job="api",
    instance="api-2",
)
DATA = TemplateData(
    receiver="team-api",
    status="firing",
    alerts=[FIRING, RESOLVED],
    group_labels={"job": "api", "alertname": "HighLatency"},
    common_labels={"alertname": "HighLatency", "job": "api", "severity": "page"},
    common_annotations={"summary": "p99 latency high"},
    external_url="http://alertmanager:9093",
)


def run(text: str, dot: object = None) -> str:
    return Template.parse(text).execute(dot)


def error_of(text: str, dot: object = None, name: str = "") -> str:
    with pytest.raises(TemplateError) as caught:
        Template.parse(text, name).execute(dot)
    return str(caught.value)


# --- Alertmanager's own templates, written inline -------------------------------------------------------

SUBJECT = (
    '[{{ .Status | toUpper }}{{ if eq .Status "firing" }}:{{ .Alerts.Firing | len }}{{ end }}] '
    '{{ .GroupLabels.SortedPairs.Values | join " " }} '
    "{{ if gt (len .CommonLabels) (len .GroupLabels) }}"
    '({{ with .CommonLabels.Remove .GroupLabels.Names }}{{ .Values | join " " }}{{ end }})'
    "{{ end }}"
)


def test_alertmanagers_default_subject():
    assert render(SUBJECT, DATA) == "[FIRING:1] HighLatency api (page)"


def test_default_subject_of_a_resolved_group_without_extra_common_labels():
    resolved = TemplateData(
        receiver="r",
        status="resolved",
        alerts=[RESOLVED],
        group_labels={"alertname": "HighLatency"},
        common_labels={"alertname": "HighLatency"},
        common_annotations={},
        external_url="",
    )
    assert render(SUBJECT, resolved) == "[RESOLVED] HighLatency "


def test_the_briefs_title_example():
    text = (
        '[{{ .Status | toUpper }}{{ if eq .Status "firing" }}:{{ .Alerts.Firing | len }}{{ end }}] '
        '{{ .GroupLabels.SortedPairs.Values | join " " }}'
    )
    assert render(text, DATA) == "[FIRING:1] HighLatency api"


def test_text_alert_list_defined_and_called_like_alertmanagers():
    text = (
        '{{ define "__text_alert_list" }}{{ range . }}Labels:\n'
        "{{ range .Labels.SortedPairs }} - {{ .Name }} = {{ .Value }}\n"
        "{{ end }}Annotations:\n"
        "{{ range .Annotations.SortedPairs }} - {{ .Name }} = {{ .Value }}\n"
        "{{ end }}Source: {{ .GeneratorURL }}\n"
        "{{ end }}{{ end }}"
        '{{ .CommonAnnotations.SortedPairs.Values | join " " }}\n'
        "{{ if gt (len .Alerts.Firing) 0 -}}\n"
        "Alerts Firing:\n"
        '{{ template "__text_alert_list" .Alerts.Firing }}\n'
        "{{- end }}\n"
        "{{ if gt (len .Alerts.Resolved) 0 -}}\n"
        "Alerts Resolved:\n"
        '{{ template "__text_alert_list" .Alerts.Resolved }}\n'
        "{{- end }}"
    )
    assert render(text, DATA) == (
        "p99 latency high\n"
        "Alerts Firing:\n"
        "Labels:\n"
        " - alertname = HighLatency\n"
        " - instance = api-1\n"
        " - job = api\n"
        " - severity = page\n"
        "Annotations:\n"
        " - runbook = http://runbooks/latency\n"
        " - summary = p99 latency high\n"
        "Source: http://prometheus/graph?api-1\n"
        "\n"
        "Alerts Resolved:\n"
        "Labels:\n"
        " - alertname = HighLatency\n"
        " - instance = api-2\n"
        " - job = api\n"
        " - severity = page\n"
        "Annotations:\n"
        " - summary = p99 latency high\n"
        "Source: http://prometheus/graph?api-2\n"
    )


def test_range_over_alerts_with_annotations_and_variables():
    text = (
        "{{ range $i, $a := .Alerts }}{{ if $i }}; {{ end }}"
        "{{ $i }}:{{ $a.Status }} {{ $a.Labels.instance }} {{ $a.Annotations.summary }} "
        "{{- with $a.Annotations.runbook }} ({{ . }}){{ end }}"
        "{{ end }}"
    )
    assert render(text, DATA) == (
        "0:firing api-1 p99 latency high (http://runbooks/latency); 1:resolved api-2 p99 latency high"
    )


def test_pagerduty_fields_and_the_kill_switch_flag():
    data = TemplateData("r", "firing", [FIRING], {}, {"flag": "checkout-v2", "severity": "page"}, {}, "")
    assert render("{{ .CommonLabels.flag }}", data) == "checkout-v2"
    assert render("{{ .CommonLabels.severity | toLower }}", data) == "page"
    assert render("{{ .CommonLabels.component }}", data) == ""
    assert (
        render('{{ index .CommonLabels "flag" }}/{{ index .CommonLabels "nope" }}.', data) == "checkout-v2/."
    )


def test_label_values_are_data_not_template_code():
    data = TemplateData("r", "firing", [], {}, {"summary": "{{ .Receiver }} {{ template }}"}, {}, "")
    assert render("{{ .CommonLabels.summary }}", data) == "{{ .Receiver }} {{ template }}"


def test_fields_of_the_data_and_of_alerts():
    text = "{{ .Receiver }} {{ .Status }} {{ .ExternalURL }} {{ len .Alerts }} "
    text += "{{ (index .Alerts 1).Fingerprint }}."
    assert render(text, DATA) == "team-api firing http://alertmanager:9093 2 fp-api-2."
    assert render("{{ range .Alerts }}{{ .StartsAt.Unix }} {{ .EndsAt.IsZero }};{{ end }}", DATA) == (
        "1704164645 true;1704162845 false;"
    )
    assert render("{{ with index .Alerts 1 }}{{ .EndsAt.Sub .StartsAt }}{{ end }}", DATA) == "30m0s"


def test_kv_methods():
    labels = {"zone": "eu", "alertname": "A", "b": "2"}
    data = TemplateData("r", "firing", [], labels, labels, {}, "")
    assert render("{{ .CommonLabels.SortedPairs.Names }}", data) == "[alertname b zone]"
    assert (
        render("{{ .CommonLabels.Names }} {{ .CommonLabels.Values }}", data) == "[alertname b zone] [A 2 eu]"
    )
    assert render('{{ (.CommonLabels.Remove "b" "zone").Names }}', data) == "[alertname]"
    assert render('{{ (.CommonLabels.Remove (stringSlice "b")).Names }}', data) == "[alertname zone]"
    assert render("{{ (.CommonLabels.Remove .GroupLabels.Names).Names }}", data) == "[]"
    assert (
        render("{{ range .CommonLabels.SortedPairs }}{{ . }}{{ end }}", data) == "{alertname A}{b 2}{zone eu}"
    )
    # KV and Pairs print through Alertmanager's String methods; range over a map goes in plain key order.
    assert render("{{ .CommonLabels }} | {{ .CommonLabels.SortedPairs }}", data) == (
        "alertname=A, b=2, zone=eu | alertname=A, b=2, zone=eu"
    )
    assert (
        render("{{ range $k, $v := .CommonLabels }}{{ $k }}={{ $v }} {{ end }}", data)
        == "alertname=A b=2 zone=eu "
    )


def test_alerts_firing_is_a_plain_list():
    message = error_of("{{ .Alerts.Firing.Firing }}", DATA)
    assert message.endswith("can't evaluate field Firing in type []template.Alert")


def test_printing_the_data_follows_go():
    alert_text = (
        "{firing alertname=HighLatency, instance=api-1, job=api, severity=page "
        "runbook=http://runbooks/latency, summary=p99 latency high 2024-01-02 03:04:05 +0000 UTC "
        "0001-01-01 00:00:00 +0000 UTC http://prometheus/graph?api-1 fp-api-1}"
    )
    assert render("{{ index .Alerts 0 }}", DATA) == alert_text
    assert render("{{ .Alerts.Firing }}", DATA) == f"[{alert_text}]"
    assert render("{{ . }}", DATA).startswith("&{team-api firing [{firing ")


# --- Syntax ---------------------------------------------------------------------------------------------


def test_trim_markers():
    assert run("a  {{- 1 -}}  b") == "a1b"
    assert run("a  {{- 1 }}  b") == "a1  b"
    assert run("a \n\t{{- /* comment */ -}}\n\t b") == "ab"
    assert run("{{ 1 -}}\n\n  {{- 2 }}") == "12"
    # "{{-3}}" is the number -3, not a trim marker.
    assert run("x {{-3}} y") == "x -3 y"
    assert run("{{3 -}} y") == "3y"


def test_comments():
    assert run("a{{/* a comment */}}b") == "ab"
    assert run("a{{/* multi\nline */}}b") == "ab"


def test_define_template_and_block():
    text = '{{ define "t" }}<{{ . }}>{{ end }}{{ template "t" 1 }}{{ template "t" "x" }}{{ template "t" }}'
    assert run(text) == "<1><x><<no value>>"
    assert run('{{ template "t" . }}{{ define "t" }}defined later: {{ . }}{{ end }}', 5) == "defined later: 5"
    assert run('a({{ block "inner" . }}bar({{ . }})baz{{ end }})b', "hello") == "a(bar(hello)baz)b"
    # Called templates see only their own $ (no dynamic scoping).
    assert run('{{ define "t" }}{{ $ }}{{ end }}{{ $x := 1 }}{{ template "t" 2 }}') == "2"


def test_with_else_and_else_with():
    assert render("{{ with .CommonLabels.severity }}sev={{ . }}{{ else }}none{{ end }}", DATA) == "sev=page"
    assert render("{{ with .CommonLabels.team }}team={{ . }}{{ else }}none{{ end }}", DATA) == "none"
    text = "{{ with .CommonLabels.team }}{{ . }}{{ else with .CommonLabels.job }}job {{ . }}{{ end }}"
    assert render(text, DATA) == "job api"


def test_variables_declare_assign_and_scope():
    assert run("{{ $x := 1 }}{{ $x = 2 }}{{ $x }}") == "2"
    assert run("{{ $x := 1 }}{{ if true }}{{ $x = 2 }}{{ $y := 3 }}{{ end }}{{ $x }}") == "2"
    assert (
        run('{{ $n := 0 }}{{ range $i, $_ := stringSlice "a" "b" "c" }}{{ $n = $i }}{{ end }}{{ $n }}') == "2"
    )
    assert render("{{ range .Alerts }}{{ $.Receiver }}/{{ .Status }} {{ end }}", DATA) == (
        "team-api/firing team-api/resolved "
    )
    assert error_of("{{ if true }}{{ $y := 3 }}{{ end }}{{ $y }}").endswith('undefined variable "$y"')


def test_printf():
    assert run('{{ printf "%d %s %v %q %f %.2f" 42 "s" 1.5 "q\\n" 3.14159 2.71828 }}') == (
        '42 s 1.5 "q\\n" 3.141590 2.72'
    )
    assert run(
        '{{ printf "[%5d|%-5s|%05d|%x|%X|%o|%b|%c|%U|%t|%T]" 7 "ab" -42 255 255 8 5 65 65 true 1.0 }}'
    ) == ("[    7|ab   |-0042|ff|FF|10|101|A|U+0041|true|float64]")
    assert run('{{ printf "%s %d %v" 1 "x" }}') == "%!s(int=1) %!d(string=x) %!v(MISSING)"
    assert run('{{ printf "%d" 1 2 }}') == "1%!(EXTRA int=2)"
    assert run('{{ printf "%6.2f|%+d|%e|%g|%g" 3.14159 5 1234.5678 0.000012 100000000.0 }}') == (
        "  3.14|+5|1.234568e+03|1.2e-05|1e+08"
    )
    assert run('{{ printf "%v %s" (stringSlice "a" "b") (stringSlice "c") }}') == "[a b] [c]"
    assert run('{{ printf "%[2]s-%[1]s" "a" "b" }}') == "b-a"
    assert run('{{ printf "100%%" }}') == "100%"


def test_parenthesised_pipelines_and_chains():
    assert run("{{ printf `%d %d %d` (1) (len `ab`) (len (printf `%s%s` `a` `bc`)) }}") == "1 2 3"
    assert render("{{ (index .Alerts 0).Labels.instance }}", DATA) == "api-1"
    assert render("{{ ($).Receiver }} {{ (.CommonLabels).job }}", DATA) == "team-api api"


def test_string_literals_and_numbers():
    assert run('{{ "tab\\there\\u00e9\\x41\\101\\"" }}') == 'tab\there\u00e9AA"'
    assert run("{{ `raw \\n {{ }}` }}") == "raw \\n {{ }}"
    assert run("{{ 'a' }} {{ '\\n' }} {{ '\\x41' }}") == "97 10 65"
    assert run("{{ 1e3 }} {{ 1.5e-7 }} {{ 0x1F }} {{ -3 }} {{ 1234567.0 }} {{ 0.1 }}") == (
        "1000 1.5e-07 31 -3 1.234567e+06 0.1"
    )
    assert run("{{ true }} {{ false }} {{ print nil }}") == "true false <nil>"


def test_index_on_missing_key_renders_empty():
    assert render('[{{ index .CommonLabels "nope" }}][{{ .CommonLabels.nope }}]', DATA) == "[][]"
    assert render('{{ if index .CommonLabels "nope" }}yes{{ else }}no{{ end }}', DATA) == "no"


def test_eq_with_several_arguments():
    assert render('{{ if eq .CommonLabels.severity "warning" "page" }}PAGE{{ end }}', DATA) == "PAGE"
    assert (
        render('{{ if eq .CommonLabels.severity "info" "warning" }}x{{ else }}quiet{{ end }}', DATA)
        == "quiet"
    )
    assert render('{{ if ne .Status "resolved" }}open{{ end }}', DATA) == "open"


# --- Alertmanager's functions ---------------------------------------------------------------------------


def test_string_functions():
    assert run('{{ toUpper "abc" }} {{ toLower "ÀBC" }} {{ toUpper "straße" }}') == "ABC àbc STRAßE"
    assert run('{{ title "hello wORLD, they\'re at example.com" }}') == "Hello World, They're At Example.com"
    assert run('[{{ trimSpace "\\t x y \\n" }}]') == "[x y]"
    assert run('{{ stringSlice "a" "b" "c" | join ", " }}') == "a, b, c"
    assert (
        run('{{ safeHtml "<b>" }} {{ safeUrl "http://x" }} {{ urlUnescape "a%20b+c" }}')
        == "<b> http://x a b c"
    )


def test_regex_functions():
    assert run('{{ match "^High" "HighLatency" }} {{ match "^Low" "HighLatency" }}') == "true false"
    assert run('{{ reReplaceAll "(\\\\w+)@(\\\\w+)" "$2 at ${1}" "ops@example" }}') == "example at ops"
    # $1x names group "1x" (absent: empty); $$ is a literal $; named groups work.
    assert run('{{ reReplaceAll "(a)" "[$1x|${1}x|$$]" "bab" }}') == "b[|ax|$]b"
    assert run('{{ reReplaceAll "(?P<host>[^:]+):\\\\d+" "$host" "api-1:9090" }}') == "api-1"
    # Go skips an empty match right after a match (Python's re.sub would not).
    assert run('{{ reReplaceAll "x*" "-" "abxd" }}') == "-a-b-d-"
    assert run('{{ match "[[:digit:]]+\\\\z" "a12" }}') == "true"
    assert error_of('{{ match "(" "x" }}').startswith(
        'template: 1:3: executing "" at <match "(" "x">: error calling'
    )


def test_time_functions():
    assert (
        render('{{ (index .Alerts 0).StartsAt | date "2006-01-02T15:04:05Z07:00" }}', DATA)
        == "2024-01-02T03:04:05Z"
    )
    assert (
        render('{{ (index .Alerts 0).StartsAt | tz "Europe/Berlin" | date "15:04 MST" }}', DATA)
        == "04:04 CET"
    )
    summer = alert(starts_at=datetime(2024, 7, 1, 12, 0, tzinfo=UTC))
    data = TemplateData("r", "firing", [summer], {}, {}, {}, "")
    assert render('{{ range .Alerts }}{{ .StartsAt | tz "Europe/Berlin" }}{{ end }}', data) == (
        "2024-07-01 14:00:00 +0200 CEST"
    )
    assert render('{{ (index .Alerts 0).StartsAt.Format "Jan _2 3:04PM" }}', DATA) == "Jan  2 3:04AM"
    message = error_of('{{ tz "Nowhere/Atlantis" .StartsAt }}', FIRING)
    assert message.endswith("error calling tz: unknown time zone Nowhere/Atlantis")


def test_since_and_humanize_duration():
    started = alert(starts_at=datetime.now(UTC) - timedelta(seconds=90))
    assert re.fullmatch(r"1m 3\ds", run("{{ since .StartsAt | humanizeDuration }}", started))
    assert run("{{ (since .StartsAt).Round 60000000000 }}", started) == "2m0s"


@pytest.mark.parametrize(
    ("value", "expected"),
    # prometheus/common's helpers/templates tests, which Alertmanager's humanizeDuration is.
    [
        (0, "0s"),
        (1.0, "1s"),
        (60.0, "1m 0s"),
        (3600.0, "1h 0m 0s"),
        (86400.0, "1d 0h 0m 0s"),
        (86400.0 + 3600, "1d 1h 0m 0s"),
        (-(86400.0 * 2 + 3600 * 3 + 60 * 4 + 5), "-2d 3h 4m 5s"),
        (899.99, "14m 59s"),
        (0.1, "100ms"),
        (0.0001, "100us"),
        (0.12345, "123.5ms"),
        (60.1, "1m 0s"),
        (1.2345, "1.234s"),
        (12.345, "12.35s"),
        ("0", "0s"),
        ("3600", "1h 0m 0s"),
        (".12345", "123.5ms"),
        ("12.345", "12.35s"),
        (-1, "-1s"),
        (1234567, "14d 6h 56m 7s"),
    ],
)
def test_humanize_duration_like_prometheus(value: object, expected: str):
    assert run("{{ humanizeDuration . }}", value) == expected


def test_humanize_duration_rejects_words():
    assert error_of("{{ humanizeDuration . }}", "one").endswith(
        'error calling humanizeDuration: strconv.ParseFloat: parsing "one": invalid syntax'
    )


def test_to_json():
    assert (
        render("{{ toJson .CommonLabels }}", DATA)
        == '{"alertname":"HighLatency","job":"api","severity":"page"}'
    )
    assert render("{{ toJson (index .Alerts 1) }}", DATA) == (
        '{"status":"resolved","labels":{"alertname":"HighLatency","instance":"api-2","job":"api",'
        '"severity":"page"},"annotations":{"summary":"p99 latency high"},"startsAt":"2024-01-02T02:34:05Z",'
        '"endsAt":"2024-01-02T03:04:05Z","generatorURL":"http://prometheus/graph?api-2","fingerprint":"fp-api-2"}'
    )
    assert run(
        '{{ toJson "<a&b>\\n" }} {{ toJson 1.5 }} {{ toJson 1e21 }} {{ toJson 1e-7 }} {{ toJson nil }}'
    ) == ('"\\u003ca\\u0026b\\u003e\\n" 1.5 1e+21 1e-7 null')


@pytest.mark.parametrize(
    ("layout", "expected"),
    # Go's time.TestFormat cases (microseconds here: Python has no nanoseconds).
    [
        ("Mon Jan _2 15:04:05 2006", "Wed Feb  4 21:00:57 2009"),
        ("Mon Jan _2 15:04:05 MST 2006", "Wed Feb  4 21:00:57 PST 2009"),
        ("Mon Jan 02 15:04:05 -0700 2006", "Wed Feb 04 21:00:57 -0800 2009"),
        ("02 Jan 06 15:04 MST", "04 Feb 09 21:00 PST"),
        ("Monday, 02-Jan-06 15:04:05 MST", "Wednesday, 04-Feb-09 21:00:57 PST"),
        ("Mon, 02 Jan 2006 15:04:05 -0700", "Wed, 04 Feb 2009 21:00:57 -0800"),
        ("2006-01-02T15:04:05Z07:00", "2009-02-04T21:00:57-08:00"),
        ("2006-01-02T15:04:05.999999999Z07:00", "2009-02-04T21:00:57.012345-08:00"),
        ("3:04PM", "9:00PM"),
        ("3pm", "9pm"),
        ("06 01 02", "09 02 04"),
        ("Hi Janet, the Month is January", "Hi Janet, the Month is February"),
        ("Jan _2 15:04:05.000", "Feb  4 21:00:57.012"),
        ("Jan _2 15:04:05.000000000", "Feb  4 21:00:57.012345000"),
        ("Jan  2 002 __2 2", "Feb  4 035  35 4"),
        ("2006 6 06 _6 __6 ___6", "2009 6 09 _6 __6 ___6"),
        ("Jan January 1 01 _1", "Feb February 2 02 _2"),
        ("2 02 _2 __2", "4 04  4  35"),
        ("Mon Monday", "Wed Wednesday"),
        ("15 3 03 _3", "21 9 09 _9"),
        ("4 04 _4", "0 00 _0"),
        ("5 05 _5", "57 57 _57"),
        ("-07:00:00 Z0700 -07", "-08:00:00 -0800 -08"),
    ],
)
def test_date_layouts_like_go(layout: str, expected: str):
    t = datetime(2009, 2, 4, 21, 0, 57, 12345, tzinfo=ZoneInfo("America/Los_Angeles"))
    assert run("{{ date (index $ 0) (index $ 1) }}", [layout, t]) == expected


def test_times_and_durations_print_like_go():
    fixed = datetime(2024, 1, 2, 3, 4, 5, 500000, tzinfo=timezone(timedelta(hours=2)))
    assert run("{{ . }}", fixed) == "2024-01-02 03:04:05.5 +0200 +0200"
    assert run("{{ . }}", ZERO) == "0001-01-01 00:00:00 +0000 UTC"
    durations = {
        timedelta(0): "0s",
        timedelta(microseconds=1500): "1.5ms",
        timedelta(microseconds=7): "7µs",
        timedelta(seconds=-1): "-1s",
        timedelta(hours=2, minutes=3, seconds=4, milliseconds=500): "2h3m4.5s",
        timedelta(days=2): "48h0m0s",
    }
    for delta, expected in durations.items():
        assert run("{{ (index . 1).Sub (index . 0) }}", [T0, T0 + delta]) == expected
    assert run("{{ ((index . 1).Sub (index . 0)).Seconds }}", [T0, T0 + timedelta(seconds=90)]) == "90"


# --- Errors ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{{ .X }", "template: 1:0: unclosed action"),
        ("{{ .X | foo }}", 'template: 1:8: function "foo" not defined'),
        ("{{ if .X }}", "template: 1:11: unexpected EOF"),
        ("{{ end }}", "template: 1:3: unexpected {{end}}"),
        ("{{ else }}", "template: 1:3: unexpected {{else}}"),
        ("a\n  {{ $x }}", 'template: 2:5: undefined variable "$x"'),
        ("{{ with $x := 4 }}{{ end }}{{ $x }}", 'template: 1:30: undefined variable "$x"'),
        ("{{ range .X }}{{ else }}{{ else }}{{ end }}", "template: 1:27: expected end; found {{else}}"),
        ("{{ .X | 3 }}", "template: 1:8: non executable command in pipeline stage 2"),
        ('{{ .X | "x" }}', "template: 1:8: non executable command in pipeline stage 2"),
        ("{{ $a, $b := 3 }}", "template: 1:5: too many declarations in command"),
        ("{{ range $a, $b, $c := 3 }}{{ end }}", "template: 1:15: too many declarations in range"),
        ("{{ range $a, 3 }}{{ end }}", "template: 1:11: range can only initialize variables"),
        ('{{ "x".X }}', 'template: 1:6: unexpected . after term "\\"x\\""'),
        ("{{ (1 }}", "template: 1:6: unclosed left paren"),
        ("{{ 1) }}", "template: 1:4: unexpected right paren U+0029 ')'"),
        ("{{ 'a }}", "template: 1:3: unterminated character constant"),
        ('{{ "a }}', "template: 1:3: unterminated quoted string"),
        ("x{{ `a }}", "template: 1:4: unterminated raw quoted string"),
        ("{{/* x }}", "template: 1:0: unclosed comment"),
        ("{{/* x */ .X }}", "template: 1:0: comment ends before closing delimiter"),
        ("{{ 3x }}", 'template: 1:3: bad number syntax: "3x"'),
        ("{{ .X# }}", "template: 1:5: bad character U+0023 '#'"),
        ("{{ # }}", 'template: 1:3: unexpected "#" in command'),
        ("{{ ☺ }}", "template: 1:3: unrecognized character in action: U+263A '☺'"),
        (
            '{{ define "x" }}a{{ end }}{{ define "x" }}b{{ end }}',
            'template: 1:36: multiple definition of template "x"',
        ),
        ("{{ break }}", "template: 1:3: {{break}} outside {{range}}"),
        ("{{ define }}", 'template: 1:10: unexpected "}}" in define clause'),
        ("{{ template .X }}", 'template: 1:12: unexpected ".X" in template clause'),
        ("{{ if }}{{ end }}", "template: 1:6: missing value for if"),
        ("{{ }}", "template: 1:3: missing value for command"),
        ("{{ 'ab' }}", "template: 1:3: malformed character constant: 'ab'"),
        ('{{ "\\q" }}', 'template: 1:3: invalid syntax: "\\q"'),
        ("{{ 1i }}", "template: 1:3: complex numbers are not supported: 1i"),
        ("{{ if 1 }}{{ define }}{{ end }}", "template: 1:13: unexpected <define> in command"),
        ("{{ 99999999999999999999 }}", "template: 1:3: 99999999999999999999 overflows int"),
    ],
)
def test_parse_errors_name_the_position(text: str, message: str):
    with pytest.raises(TemplateError) as caught:
        Template.parse(text)
    assert str(caught.value) == message


def test_parse_errors_name_the_template_and_line():
    with pytest.raises(TemplateError) as caught:
        Template.parse("line 1\n\n{{ `unterminated\n\n}}\n", name="slack.title")
    assert str(caught.value) == "template: slack.title:3:3: unterminated raw quoted string"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '{{ index .Status "x" }}',
            '3: executing "" at <index .Status "x">: error calling index: '
            "cannot index slice/array with type string",
        ),
        (
            '{{ index .Receiver.x "y" }}',
            '9: executing "" at <.Receiver.x>: can\'t evaluate field x in type string',
        ),
        (
            "{{ index .Alerts 5 }}",
            '3: executing "" at <index .Alerts 5>: error calling index: index out of range: 5',
        ),
        (
            '{{ index 3 "x" }}',
            '3: executing "" at <index 3 "x">: error calling index: can\'t index item of type int',
        ),
        (
            "{{ index .CommonLabels 1 }}",
            '3: executing "" at <index .CommonLabels ...>: error calling index: '
            "value has type int; should be string",
        ),
        ("{{ .Nope }}", '3: executing "" at <.Nope>: can\'t evaluate field Nope in type *template.Data'),
        (
            "{{ .CommonLabels.job 1 }}",
            '3: executing "" at <.CommonLabels.job>: job is not a method but has arguments',
        ),
        (
            "{{ .Status 1 }}",
            '3: executing "" at <.Status>: Status has arguments but cannot be invoked as function',
        ),
        ("{{ toUpper 3 }}", '3: executing "" at <toUpper 3>: wrong type for value; expected string; got int'),
        ("{{ toUpper nil }}", '3: executing "" at <toUpper nil>: invalid value; expected string'),
        (
            '{{ join "," .Alerts }}',
            '3: executing "" at <join "," .Alerts>: wrong type for value; expected []string; '
            "got template.Alerts",
        ),
        ("{{ len 3 }}", '3: executing "" at <len 3>: error calling len: len of type int'),
        ("{{ nil }}", '3: executing "" at <nil>: nil is not a command'),
        ("{{ 1 2 }}", '3: executing "" at <1>: can\'t give argument to non-function 1'),
        (
            '{{ eq "x" 1 }}',
            '3: executing "" at <eq "x" 1>: error calling eq: incompatible types for comparison',
        ),
        (
            "{{ lt true false }}",
            '3: executing "" at <lt true false>: error calling lt: invalid type for comparison',
        ),
        ("{{ toUpper }}", '3: executing "" at <toUpper>: wrong number of args for toUpper: want 1 got 0'),
        (
            "{{ range .Status }}{{ end }}",
            '3: executing "" at <{{range .Status}}{{e...>: range can\'t iterate over firing',
        ),
        (
            '{{ template "missing" }}',
            '12: executing "" at <{{template "missing"...>: template "missing" not defined',
        ),
    ],
)
def test_execution_errors_name_position_node_and_cause(text: str, message: str):
    assert error_of(text, DATA) == f"template: 1:{message}"


def test_execution_errors_name_the_template_being_executed():
    # Go's TestExecError.
    text = (
        "line 1\nline 2\nline 3\n"
        '{{template "one" .}}\n'
        '{{define "one"}}{{template "two" .}}{{end}}\n'
        '{{define "two"}}{{template "three" .}}{{end}}\n'
        '{{define "three"}}{{index "hi" $}}{{end}}'
    )
    assert error_of(text, 5, name="top") == (
        'template: top:7:20: executing "three" at <index "hi" $>: error calling index: index out of range: 5'
    )


# --- Limits ---------------------------------------------------------------------------------------------


def test_output_is_capped():
    message = error_of('{{ range 2000 }}{{ printf "%1000s" "x" }}{{ end }}')
    assert f"output exceeds {MAX_OUTPUT} characters" in message


def test_intermediate_strings_are_capped():
    message = error_of('{{ $s := "0123456789" }}{{ range 30 }}{{ $s = print $s $s }}{{ end }}')
    assert message.endswith(f"error calling print: result exceeds {MAX_OUTPUT} characters")
    message = error_of('{{ reReplaceAll "" "twenty characters..." (printf "%100000s" "") }}')
    assert message.endswith(f"error calling reReplaceAll: result exceeds {MAX_OUTPUT} characters")
    assert error_of('{{ printf "%2000000d" 1 }}').endswith(f"width or precision exceeds {MAX_OUTPUT}")


def test_range_iterations_are_capped():
    message = error_of("{{ range $i := 1000000 }}{{ end }}")
    assert message.endswith(f"range iterations exceed {MAX_RANGE_ITERATIONS}")


def test_template_recursion_is_capped():
    message = error_of('{{ define "loop" }}{{ template "loop" . }}{{ end }}{{ template "loop" . }}')
    assert message.endswith(f"exceeded maximum template depth ({MAX_TEMPLATE_DEPTH})")


def test_parse_nesting_is_capped():
    deep = "{{ " + "(" * (MAX_PARSE_DEPTH + 1) + "1" + ")" * (MAX_PARSE_DEPTH + 1) + " }}"
    with pytest.raises(TemplateError, match=f"nesting deeper than {MAX_PARSE_DEPTH}"):
        Template.parse(deep)
    assert run("{{ " + "(" * 50 + "1" + ")" * 50 + " }}") == "1"


# --- API ------------------------------------------------------------------------------------------------


def test_render_and_is_template():
    assert is_template("{{ .Status }}")
    assert not is_template("plain text")
    assert render("", DATA) == ""
    assert render("plain", DATA) == "plain"
    assert render("{{ .Status }}", DATA) == render("{{ .Status }}", DATA) == "firing"
    with pytest.raises(TemplateError):
        render("{{ .Status", DATA)
    with pytest.raises(ValueError, match="unclosed action"):
        render("{{ .Status", DATA)


def test_a_parsed_template_renders_many_times():
    template = Template.parse("{{ .Status }}/{{ len .Alerts }}", name="t")
    assert template.render(DATA) == "firing/2"
    resolved = TemplateData("r", "resolved", [RESOLVED], {}, {}, {}, "")
    assert template.render(resolved) == "resolved/1"


# --- Go's text/template exec tests, where they fall in the subset ---------------------------------------

T = {
    "True": True,
    "I": 17,
    "X": "x",
    "S": "xyz",
    "U": {"V": "v"},
    "FloatZero": 0.0,
    "SI": [3, 4, 5],
    "AI": [3, 4, 5],
    "SIEmpty": [],
    "SB": [True, False],
    "MSI": {"one": 1, "two": 2, "three": 3},
    "MSIone": {"one": 1},
    "MSIEmpty": {},
    "SMSI": [{"one": 1, "two": 2}, {"eleven": 11, "twelve": 12}],
    "Empty0": None,
    "Empty3": [7, 8],
    "Empty4": {"V": "UinEmpty"},
}
ERR = None

GO_EXEC_TESTS = [
    # Trivial cases.
    ("empty", "", "", None),
    ("text", "some text", "some text", None),
    ("nil action", "{{nil}}", ERR, None),
    # Fields, maps, dots.
    (".X", "-{{.X}}-", "-x-", T),
    (".U.V", "-{{.U.V}}-", "-v-", T),
    ("map .one", "{{.MSI.one}}", "1", T),
    ("map .WRONG args", "{{.MSI.one 1}}", ERR, T),
    ("dot int", "<{{.}}>", "<13>", 13),
    ("dot float", "<{{.}}>", "<15.1>", 15.1),
    ("dot bool", "<{{.}}>", "<true>", True),
    ("dot string", "<{{.}}>", "<hello>", "hello"),
    ("dot slice", "<{{.}}>", "<[-1 -2 -3]>", [-1, -2, -3]),
    ("dot map", "<{{.}}>", "<map[two:22]>", {"two": 22}),
    # Variables.
    ("$ int", "{{$}}", "123", 123),
    ("$.I", "{{$.I}}", "17", T),
    ("$.U.V", "{{$.U.V}}", "v", T),
    ("declare in action", "{{$x := $.U.V}}{{$x}}", "v", T),
    ("empty nil", "{{.Empty0}}", "<no value>", T),
    ("empty with slice", "{{.Empty3}}", "[7 8]", T),
    ("empty with struct, field", "{{.Empty4.V}}", "UinEmpty", T),
    ("field on interface", "{{.foo}}", "<no value>", None),
    ("field on parenthesized interface", "{{(.).foo}}", "<no value>", None),
    ("unparenthesized non-function", "{{1 2}}", ERR, None),
    ("parenthesized non-function", "{{(1) 2}}", ERR, None),
    ("parenthesized non-function with no args", "{{(1)}}", "1", None),
    ("parens: $ in paren", "{{($).X}}", "x", T),
    ("parens: $ in paren in pipe", "{{($ | print | len)}}", "2", "ab"),
    # If.
    ("if true", "{{if true}}TRUE{{end}}", "TRUE", T),
    ("if false", "{{if false}}TRUE{{else}}FALSE{{end}}", "FALSE", T),
    ("if nil", "{{if nil}}TRUE{{end}}", ERR, T),
    ("if 1", "{{if 1}}NON-ZERO{{else}}ZERO{{end}}", "NON-ZERO", T),
    ("if 0", "{{if 0}}NON-ZERO{{else}}ZERO{{end}}", "ZERO", T),
    ("if 1.5", "{{if 1.5}}NON-ZERO{{else}}ZERO{{end}}", "NON-ZERO", T),
    ("if 0.0", "{{if .FloatZero}}NON-ZERO{{else}}ZERO{{end}}", "ZERO", T),
    ("if emptystring", "{{if ``}}NON-EMPTY{{else}}EMPTY{{end}}", "EMPTY", T),
    ("if string", "{{if `notempty`}}NON-EMPTY{{else}}EMPTY{{end}}", "NON-EMPTY", T),
    ("if emptyslice", "{{if .SIEmpty}}NON-EMPTY{{else}}EMPTY{{end}}", "EMPTY", T),
    ("if slice", "{{if .SI}}NON-EMPTY{{else}}EMPTY{{end}}", "NON-EMPTY", T),
    ("if emptymap", "{{if .MSIEmpty}}NON-EMPTY{{else}}EMPTY{{end}}", "EMPTY", T),
    ("if map", "{{if .MSI}}NON-EMPTY{{else}}EMPTY{{end}}", "NON-EMPTY", T),
    ("if map unset", "{{if .MSI.none}}NON-ZERO{{else}}ZERO{{end}}", "ZERO", T),
    ("if map not unset", "{{if not .MSI.none}}ZERO{{else}}NON-ZERO{{end}}", "ZERO", T),
    ("if $x with $y int", "{{if $x := true}}{{with $y := .I}}{{$x}},{{$y}}{{end}}{{end}}", "true,17", T),
    ("if $x with $x int", "{{if $x := true}}{{with $x := .I}}{{$x}},{{end}}{{$x}}{{end}}", "17,true", T),
    ("if else if", "{{if false}}FALSE{{else if true}}TRUE{{end}}", "TRUE", T),
    ("if else chain", "{{if eq 1 3}}1{{else if eq 2 3}}2{{else if eq 3 3}}3{{end}}", "3", T),
    # Print etc.
    ("print", '{{print "hello, print"}}', "hello, print", T),
    ("print 123", "{{print 1 2 3}}", "1 2 3", T),
    ("print nil", "{{print nil}}", "<nil>", T),
    ("println", "{{println 1 2 3}}", "1 2 3\n", T),
    ("printf int", '{{printf "%04x" 127}}', "007f", T),
    ("printf float", '{{printf "%g" 3.5}}', "3.5", T),
    ("printf string", '{{printf "%s" "hello"}}', "hello", T),
    ("printf field", '{{printf "%s" .U.V}}', "v", T),
    ("printf dot", '{{with .I}}{{printf "%d" .}}{{end}}', "17", T),
    ("printf var", '{{with $x := .I}}{{printf "%d" $x}}{{end}}', "17", T),
    # HTML, JavaScript, URL query.
    (
        "html",
        '{{html "<script>alert(\\"XSS\\");</script>"}}',
        "&lt;script&gt;alert(&#34;XSS&#34;);&lt;/script&gt;",
        None,
    ),
    (
        "html pipeline",
        '{{printf "<script>alert(\\"XSS\\");</script>" | html}}',
        "&lt;script&gt;alert(&#34;XSS&#34;);&lt;/script&gt;",
        None,
    ),
    ("html untyped nil", "{{html .Empty0}}", "&lt;no value&gt;", T),
    ("js", "{{js .}}", "It\\'d be nice.", "It'd be nice."),
    ("urlquery", '{{"http://www.example.org/"|urlquery}}', "http%3A%2F%2Fwww.example.org%2F", None),
    # Booleans.
    ("not", "{{not true}} {{not false}}", "false true", None),
    ("and", "{{and false 0}} {{and 1 0}} {{and 0 true}} {{and 1 1}}", "false 0 0 1", None),
    ("or", "{{or 0 0}} {{or 1 0}} {{or 0 true}} {{or 1 1}}", "0 1 true 1", None),
    ("or short-circuit", "{{or 0 1 (len 3)}}", "1", None),
    ("and short-circuit", "{{and 1 0 (len 3)}}", "0", None),
    ("or short-circuit2", "{{or 0 0 (len 3)}}", ERR, None),
    ("and short-circuit2", "{{and 1 1 (len 3)}}", ERR, None),
    ("and pipe-true", "{{1 | and 1}}", "1", None),
    ("and pipe-false", "{{0 | and 1}}", "0", None),
    ("or pipe-true", "{{1 | or 0}}", "1", None),
    ("or pipe-false", "{{0 | or 0}}", "0", None),
    ("and undef", "{{and 1 .Unknown}}", "<no value>", None),
    ("or undef", "{{or 0 .Unknown}}", "<no value>", None),
    ("boolean if", "{{if and true 1 `hi`}}TRUE{{else}}FALSE{{end}}", "TRUE", T),
    ("boolean if not", "{{if and true 1 `hi` | not}}TRUE{{else}}FALSE{{end}}", "FALSE", None),
    ("boolean if pipe", "{{if true | not | and 1}}TRUE{{else}}FALSE{{end}}", "FALSE", None),
    # Indexing. (Go prints a missing map[string]int key as 0; Alertmanager's maps hold strings: "".)
    ("slice[0]", "{{index .SI 0}}", "3", T),
    ("slice[1]", "{{index .SI 1}}", "4", T),
    ("slice[HUGE]", "{{index .SI 10}}", ERR, T),
    ("slice[WRONG]", "{{index .SI `hello`}}", ERR, T),
    ("slice[nil]", "{{index .SI nil}}", ERR, T),
    ("map[one]", "{{index .MSI `one`}}", "1", T),
    ("map[two]", "{{index .MSI `two`}}", "2", T),
    ("map[NO]", "{{index .MSI `XXX`}}", "", T),
    ("map[nil]", "{{index .MSI nil}}", ERR, T),
    ("map[WRONG]", "{{index .MSI 10}}", ERR, T),
    ("double index", "{{index .SMSI 1 `eleven`}}", "11", T),
    ("nil[1]", "{{index nil 1}}", ERR, T),
    ("index of an interface field", "{{index .Empty3 0}}", "7", T),
    # Slicing.
    ("slice[:]", "{{slice .SI}}", "[3 4 5]", T),
    ("slice[1:]", "{{slice .SI 1}}", "[4 5]", T),
    ("slice[1:2]", "{{slice .SI 1 2}}", "[4]", T),
    ("slice[-1:]", "{{slice .SI -1}}", ERR, T),
    ("slice[1:-2]", "{{slice .SI 1 -2}}", ERR, T),
    ("slice[1:2:-1]", "{{slice .SI 1 2 -1}}", ERR, T),
    ("slice[2:1]", "{{slice .SI 2 1}}", ERR, T),
    ("slice[2:2:1]", "{{slice .SI 2 2 1}}", ERR, T),
    ("out of range", "{{slice .SI 4 5}}", ERR, T),
    ("out of range", "{{slice .SI 2 2 5}}", ERR, T),
    ("array[1:2]", "{{slice .AI 1 2}}", "[4]", T),
    ("string[:]", "{{slice .S}}", "xyz", T),
    ("string[0:1]", "{{slice .S 0 1}}", "x", T),
    ("string[1:]", "{{slice .S 1}}", "yz", T),
    ("string[1:2]", "{{slice .S 1 2}}", "y", T),
    ("out of range", "{{slice .S 1 5}}", ERR, T),
    ("3-index slice of string", "{{slice .S 1 2 2}}", ERR, T),
    ("slice of an interface field", "{{slice .Empty3 0 1}}", "[7]", T),
    # Len.
    ("slice", "{{len .SI}}", "3", T),
    ("map", "{{len .MSI }}", "3", T),
    ("len of int", "{{len 3}}", ERR, T),
    ("len of nothing", "{{len .Empty0}}", ERR, T),
    ("len of an interface field", "{{len .Empty3}}", "2", T),
    # With.
    ("with true", "{{with true}}{{.}}{{end}}", "true", T),
    ("with false", "{{with false}}{{.}}{{else}}FALSE{{end}}", "FALSE", T),
    ("with 1", "{{with 1}}{{.}}{{else}}ZERO{{end}}", "1", T),
    ("with 0", "{{with 0}}{{.}}{{else}}ZERO{{end}}", "ZERO", T),
    ("with 1.5", "{{with 1.5}}{{.}}{{else}}ZERO{{end}}", "1.5", T),
    ("with 0.0", "{{with .FloatZero}}{{.}}{{else}}ZERO{{end}}", "ZERO", T),
    ("with emptystring", "{{with ``}}{{.}}{{else}}EMPTY{{end}}", "EMPTY", T),
    ("with string", "{{with `notempty`}}{{.}}{{else}}EMPTY{{end}}", "notempty", T),
    ("with emptyslice", "{{with .SIEmpty}}{{.}}{{else}}EMPTY{{end}}", "EMPTY", T),
    ("with slice", "{{with .SI}}{{.}}{{else}}EMPTY{{end}}", "[3 4 5]", T),
    ("with emptymap", "{{with .MSIEmpty}}{{.}}{{else}}EMPTY{{end}}", "EMPTY", T),
    ("with map", "{{with .MSIone}}{{.}}{{else}}EMPTY{{end}}", "map[one:1]", T),
    ("with empty interface, struct field", "{{with .Empty4}}{{.V}}{{end}}", "UinEmpty", T),
    ("with $x int", "{{with $x := .I}}{{$x}}{{end}}", "17", T),
    ("with $x struct.U.V", "{{with $x := $}}{{$x.U.V}}{{end}}", "v", T),
    ("with variable and action", "{{with $x := $}}{{$y := $.U.V}}{{$y}}{{end}}", "v", T),
    ("with else with", "{{with 0}}{{.}}{{else with true}}{{.}}{{end}}", "true", T),
    (
        "with else with chain",
        "{{with 0}}{{.}}{{else with false}}{{.}}{{else with `notempty`}}{{.}}{{end}}",
        "notempty",
        T,
    ),
    # Range.
    ("range []int", "{{range .SI}}-{{.}}-{{end}}", "-3--4--5-", T),
    ("range empty no else", "{{range .SIEmpty}}-{{.}}-{{end}}", "", T),
    ("range []int else", "{{range .SI}}-{{.}}-{{else}}EMPTY{{end}}", "-3--4--5-", T),
    ("range empty else", "{{range .SIEmpty}}-{{.}}-{{else}}EMPTY{{end}}", "EMPTY", T),
    ("range []int break else", "{{range .SI}}-{{.}}-{{break}}NOTREACHED{{else}}EMPTY{{end}}", "-3-", T),
    (
        "range []int continue else",
        "{{range .SI}}-{{.}}-{{continue}}NOTREACHED{{else}}EMPTY{{end}}",
        "-3--4--5-",
        T,
    ),
    ("range []bool", "{{range .SB}}-{{.}}-{{end}}", "-true--false-", T),
    ("range map", "{{range .MSI}}-{{.}}-{{end}}", "-1--3--2-", T),
    ("range empty map no else", "{{range .MSIEmpty}}-{{.}}-{{end}}", "", T),
    ("range map else", "{{range .MSI}}-{{.}}-{{else}}EMPTY{{end}}", "-1--3--2-", T),
    ("range empty map else", "{{range .MSIEmpty}}-{{.}}-{{else}}EMPTY{{end}}", "EMPTY", T),
    ("range empty interface", "{{range .Empty3}}-{{.}}-{{else}}EMPTY{{end}}", "-7--8-", T),
    ("range empty nil", "{{range .Empty0}}-{{.}}-{{end}}", "", T),
    ("range $x SI", "{{range $x := .SI}}<{{$x}}>{{end}}", "<3><4><5>", T),
    ("range $x $y SI", "{{range $x, $y := .SI}}<{{$x}}={{$y}}>{{end}}", "<0=3><1=4><2=5>", T),
    ("range $x MSIone", "{{range $x := .MSIone}}<{{$x}}>{{end}}", "<1>", T),
    ("range $x $y MSIone", "{{range $x, $y := .MSIone}}<{{$x}}={{$y}}>{{end}}", "<one=1>", T),
    ("declare in range", "{{range $x := .SI}}<{{$foo:=$x}}{{$x}}>{{end}}", "<3><4><5>", T),
    ("range 5", '{{range $v := 5}}{{printf "%T%d" $v $v}}{{end}}', "int0int1int2int3int4", None),
    ("range int two vars", "{{range $i, $v := 5}}{{end}}", ERR, None),
    # Cute examples.
    ("or as if true", '{{or .SI "slice is empty"}}', "[3 4 5]", T),
    ("or as if false", '{{or .SIEmpty "slice is empty"}}', "slice is empty", T),
    # Numbers.
    ("decimal", "{{print 1234}}", "1234", T),
    ("decimal _", "{{print 12_34}}", "1234", T),
    ("binary", "{{print 0b101}}", "5", T),
    ("binary _", "{{print 0b_1_0_1}}", "5", T),
    ("BINARY", "{{print 0B101}}", "5", T),
    ("octal0", "{{print 0377}}", "255", T),
    ("octal", "{{print 0o377}}", "255", T),
    ("octal _", "{{print 0o_3_7_7}}", "255", T),
    ("OCTAL", "{{print 0O377}}", "255", T),
    ("hex", "{{print 0x123}}", "291", T),
    ("hex _", "{{print 0x1_23}}", "291", T),
    ("HEX", "{{print 0X123ABC}}", "1194684", T),
    ("float", "{{print 123.4}}", "123.4", T),
    ("float _", "{{print 0_0_1_2_3.4}}", "123.4", T),
    ("hex float", "{{print +0x1.ep+2}}", "7.5", T),
    ("hex float _", "{{print +0x_1.e_0p+0_2}}", "7.5", T),
    ("HEX float", "{{print +0X1.EP+2}}", "7.5", T),
    ("print multi", "{{print 1_2_3_4 7.5_00_00_00}}", "1234 7.5", T),
    ("print multi2", "{{print 1234 0x0_1.e_0p+02}}", "1234 7.5", T),
    # Fixed bugs.
    ("bug9", "{{.cause}}", "neglect", {"cause": "neglect"}),
    ("bug12xe", "{{printf `%T` 0xef}}", "int", None),
    ("bug12XE", "{{printf `%T` 0XEE}}", "int", None),
    ("bug14a", "{{(nil).True}}", ERR, T),
    ("bug14b", "{{$x := nil}}{{$x.anything}}", ERR, T),
    ("bug14c", '{{$x := (1.0)}}{{$y := ("hello")}}{{$x.anything}}{{$y.true}}', ERR, T),
    ("bug16a", "{{true|printf}}", ERR, T),
    ("bug16b", "{{1|printf}}", ERR, T),
    ("bug16c", "{{1.1|printf}}", ERR, T),
    ("bug16d", "{{'x'|printf}}", ERR, T),
    ("bug16k", '{{"aaa"|printf }}', "aaa", T),
    ("bug18a", "{{eq . '.'}}", "true", ord(".")),
    ("bug18b", "{{eq . 'e'}}", "true", ord("e")),
    ("issue56490", "{{$i := 0}}{{$x := 0}}{{range $i = .AI}}{{end}}{{$i}}", "5", T),
    ("issue60801", "{{$k := 0}}{{$v := 0}}{{range $k, $v = .AI}}{{$k}}={{$v}} {{end}}", "0=3 1=4 2=5 ", T),
]


@pytest.mark.parametrize(
    ("name", "text", "expected", "dot"), GO_EXEC_TESTS, ids=[t[0] for t in GO_EXEC_TESTS]
)
def test_go_exec_behaviour(name: str, text: str, expected: str | None, dot: object):
    template = Template.parse(text, name)
    if expected is None:
        with pytest.raises(TemplateError):
            template.execute(dot)
    else:
        assert template.execute(dot) == expected


CMP = {"Uthree": 3, "Ufour": 4, "NegOne": -1, "Three": 3, "Map": None, "SI": [1], "T": T0}

# Go's TestComparison (signed/unsigned distinctions do not exist here).
GO_CMP_TESTS = [
    ("eq true true", "true"),
    ("eq true false", "false"),
    ("eq 1.5 1.5", "true"),
    ("eq 1.5 2.5", "false"),
    ("eq 1 1", "true"),
    ("eq 1 2", "false"),
    ("eq `xy` `xy`", "true"),
    ("eq `xy` `xyz`", "false"),
    ("eq .Uthree .Uthree", "true"),
    ("eq .Uthree .Ufour", "false"),
    ("eq 3 4 5 6 3", "true"),
    ("eq 3 4 5 6 7", "false"),
    ("ne true true", "false"),
    ("ne true false", "true"),
    ("ne 1.5 1.5", "false"),
    ("ne 1.5 2.5", "true"),
    ("ne 1 1", "false"),
    ("ne 1 2", "true"),
    ("ne `xy` `xy`", "false"),
    ("ne `xy` `xyz`", "true"),
    ("lt 1.5 1.5", "false"),
    ("lt 1.5 2.5", "true"),
    ("lt 1 1", "false"),
    ("lt 1 2", "true"),
    ("lt `xy` `xy`", "false"),
    ("lt `xy` `xyz`", "true"),
    ("le 1.5 1.5", "true"),
    ("le 2.5 1.5", "false"),
    ("le 1 1", "true"),
    ("le 2 1", "false"),
    ("le `xy` `xyz`", "true"),
    ("le `xyz` `xy`", "false"),
    ("gt 1.5 1.5", "false"),
    ("gt 2 1", "true"),
    ("gt 1 2", "false"),
    ("gt `xy` `xyz`", "false"),
    ("gt .Ufour .Uthree", "true"),
    ("ge 1.5 1.5", "true"),
    ("ge 1.5 2.5", "false"),
    ("ge 2 1", "true"),
    ("ge `xy` `xyz`", "false"),
    ("ge `xyz` `xy`", "true"),
    ("eq .Uthree .Three", "true"),
    ("lt .NegOne .Uthree", "true"),
    ("eq .NegOne .Uthree", "false"),
    ("eq (index `x` 0) 'x'", "true"),
    ("eq (index `x` 0) 'y'", "false"),
    ("eq .Map .Map", "true"),
    ("eq .Map nil", "true"),
    ("eq nil .Map", "true"),
    ("eq .Map 0", "false"),
    ("eq .T .T", "true"),
    # Errors.
    ("eq `xy` 1", None),
    ("eq 2 2.0", None),
    ("lt true true", None),
    ("eq .SI .SI", None),
    ("eq 1", None),
    ("lt .SI 1", None),
]


@pytest.mark.parametrize(("expr", "truth"), GO_CMP_TESTS, ids=[t[0] for t in GO_CMP_TESTS])
def test_go_comparisons(expr: str, truth: str | None):
    template = Template.parse(f"{{{{if {expr}}}}}true{{{{else}}}}false{{{{end}}}}")
    if truth is None:
        with pytest.raises(TemplateError):
            template.execute(CMP)
    else:
        assert template.execute(CMP) == truth


@pytest.mark.parametrize(
    ("text", "escaped"),
    # Go's TestJSEscaping.
    [
        ("a", "a"),
        ("'foo", "\\'foo"),
        ('Go "jump" \\', 'Go \\"jump\\" \\\\'),
        ('Yukihiro says "今日は世界"', 'Yukihiro says \\"今日は世界\\"'),
        ("unprintable \ufffe", "unprintable \\uFFFE"),
        ("<html>", "\\u003Chtml\\u003E"),
        ("no = in attributes", "no \\u003D in attributes"),
        ("&#x27; does not become HTML entity", "\\u0026#x27; does not become HTML entity"),
    ],
)
def test_js_escaping_like_go(text: str, escaped: str):
    assert run("{{ js . }}", text) == escaped


def test_go_tree_example():
    # Go's TestTree, with the default delimiters.
    def tree(val: int, left: object = None, right: object = None) -> dict[str, object]:
        return {"Val": val, "Left": left, "Right": right}

    data = tree(1, tree(2, tree(3, tree(4)), tree(5, tree(6))), tree(7, tree(8, tree(9)), tree(10, tree(11))))
    text = """
    {{- define "tree" -}}
    [
        {{- .Val -}}
        {{- with .Left -}}
            {{template "tree" . -}}
        {{- end -}}
        {{- with .Right -}}
            {{- template "tree" . -}}
        {{- end -}}
    ]
    {{- end -}}
    {{- template "tree" . -}}
    """
    assert run(text, data) == "[1[2[3[4]][5[6]]][7[8[9]][10[11]]]]"
