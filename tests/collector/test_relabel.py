"""Relabeling against Prometheus' own cases (model/relabel/relabel_test.go) and its documented examples."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from services.collector.relabel import (
    TargetError,
    expand,
    relabel,
    sample_labels,
    target_from,
    targets_of,
)
from shared.scrape_config import RelabelConfig, ScrapeConfig, compile_regex


def steps(*configs: dict[str, Any]) -> list[RelabelConfig]:
    return [RelabelConfig.model_validate(c) for c in configs]


def from_yaml(text: str) -> list[RelabelConfig]:
    return [RelabelConfig.model_validate(c) for c in yaml.safe_load(text)]


# Prometheus' TestRelabel, case by case: (input, configs, output or None for dropped).
PROMETHEUS_CASES: list[tuple[dict[str, str], list[dict[str, Any]], dict[str, str] | None]] = [
    (
        {"a": "foo", "b": "bar", "c": "baz"},
        [{"source_labels": ["a"], "regex": "f(.*)", "target_label": "d", "replacement": "ch${1}-ch${1}"}],
        {"a": "foo", "b": "bar", "c": "baz", "d": "choo-choo"},
    ),
    (
        {"a": "foo", "b": "bar", "c": "baz"},
        [
            {
                "source_labels": ["a", "b"],
                "regex": "f(.*);(.*)r",
                "target_label": "a",
                "replacement": "b${1}${2}m",
            },
            {
                "source_labels": ["c", "a"],
                "regex": "(b).*b(.*)ba(.*)",
                "target_label": "d",
                "replacement": "$1$2$2$3",
            },
        ],
        {"a": "boobam", "b": "bar", "c": "baz", "d": "boooom"},
    ),
    (
        {"a": "foo"},
        [
            {"source_labels": ["a"], "regex": ".*o.*", "action": "drop"},
            {"source_labels": ["a"], "regex": "f(.*)", "target_label": "d", "replacement": "ch$1-ch$1"},
        ],
        None,
    ),
    ({"a": "foo", "b": "bar"}, [{"source_labels": ["a"], "regex": ".*o.*", "action": "drop"}], None),
    (
        {"a": "abc"},
        [{"source_labels": ["a"], "regex": ".*(b).*", "target_label": "d", "replacement": "$1"}],
        {"a": "abc", "d": "b"},
    ),
    ({"a": "foo"}, [{"source_labels": ["a"], "regex": "no-match", "action": "drop"}], {"a": "foo"}),
    # Anchored: `f|o` matches neither the whole of "foo".
    ({"a": "foo"}, [{"source_labels": ["a"], "regex": "f|o", "action": "drop"}], {"a": "foo"}),
    ({"a": "foo"}, [{"source_labels": ["a"], "regex": "no-match", "action": "keep"}], None),
    ({"a": "foo"}, [{"source_labels": ["a"], "regex": "f.*", "action": "keep"}], {"a": "foo"}),
    # No replacement must be applied if there is no match.
    (
        {"a": "boo"},
        [{"source_labels": ["a"], "regex": "f", "target_label": "b", "replacement": "bar"}],
        {"a": "boo"},
    ),
    (
        {"a": "foo", "b": "bar", "c": "baz"},
        [{"source_labels": ["c"], "target_label": "d", "action": "hashmod", "modulus": 1000}],
        {"a": "foo", "b": "bar", "c": "baz", "d": "976"},
    ),
    (
        {"a": "foo\nbar"},
        [{"source_labels": ["a"], "target_label": "b", "action": "hashmod", "modulus": 1000}],
        {"a": "foo\nbar", "b": "734"},
    ),
    (
        {"a": "foo", "b1": "bar", "b2": "baz"},
        [{"regex": "(b.*)", "replacement": "bar_${1}", "action": "labelmap"}],
        {"a": "foo", "b1": "bar", "b2": "baz", "bar_b1": "bar", "bar_b2": "baz"},
    ),
    (
        {"a": "foo", "__meta_my_bar": "aaa", "__meta_my_baz": "bbb", "__meta_other": "ccc"},
        [{"regex": "__meta_(my.*)", "replacement": "${1}", "action": "labelmap"}],
        {
            "a": "foo",
            "__meta_my_bar": "aaa",
            "__meta_my_baz": "bbb",
            "__meta_other": "ccc",
            "my_bar": "aaa",
            "my_baz": "bbb",
        },
    ),
    (
        {"a": "some-name-value"},
        [
            {
                "source_labels": ["a"],
                "regex": "some-([^-]+)-([^,]+)",
                "replacement": "${2}",
                "target_label": "${1}",
            }
        ],
        {"a": "some-name-value", "name": "value"},
    ),
    # The replacement expands to "": the (absent) target label is deleted.
    (
        {"a": "some-name-value"},
        [
            {
                "source_labels": ["a"],
                "regex": "some-([^-]+)-([^,]+)",
                "replacement": "${3}",
                "target_label": "${1}",
            }
        ],
        {"a": "some-name-value"},
    ),
    # The target expands to "" (no group 3): not a label name, so the step changes nothing.
    (
        {"a": "some-name-0"},
        [
            {
                "source_labels": ["a"],
                "regex": "some-([^-]+)-([^,]+)",
                "replacement": "${1}",
                "target_label": "${3}",
            },
            {
                "source_labels": ["a"],
                "regex": "some-([^-]+)(-[^,]+)",
                "replacement": "${1}",
                "target_label": "${3}",
            },
        ],
        {"a": "some-name-0"},
    ),
    (
        {"__meta_sd_tags": "path:/secret,job:some-job,label:foo=bar"},
        [
            {
                "source_labels": ["__meta_sd_tags"],
                "regex": "(?:.+,|^)path:(/[^,]+).*",
                "replacement": "${1}",
                "target_label": "__metrics_path__",
            },
            {
                "source_labels": ["__meta_sd_tags"],
                "regex": "(?:.+,|^)job:([^,]+).*",
                "replacement": "${1}",
                "target_label": "job",
            },
            {
                "source_labels": ["__meta_sd_tags"],
                "regex": "(?:.+,|^)label:([^=]+)=([^,]+).*",
                "replacement": "${2}",
                "target_label": "${1}",
            },
        ],
        {
            "__meta_sd_tags": "path:/secret,job:some-job,label:foo=bar",
            "__metrics_path__": "/secret",
            "job": "some-job",
            "foo": "bar",
        },
    ),
    # prometheus/prometheus#12283
    (
        {
            "__meta_kubernetes_pod_container_port_name": "foo",
            "__meta_kubernetes_pod_annotation_XXX_metrics_port": "9091",
        },
        [
            {"regex": "^__meta_kubernetes_pod_container_port_name$", "action": "labeldrop"},
            {
                "source_labels": ["__meta_kubernetes_pod_annotation_XXX_metrics_port"],
                "regex": "(.+)",
                "replacement": "metrics",
                "target_label": "__meta_kubernetes_pod_container_port_name",
            },
            {
                "source_labels": ["__meta_kubernetes_pod_container_port_name"],
                "regex": "^metrics$",
                "action": "keep",
            },
        ],
        {
            "__meta_kubernetes_pod_annotation_XXX_metrics_port": "9091",
            "__meta_kubernetes_pod_container_port_name": "metrics",
        },
    ),
    (
        {"a": "foo", "b1": "bar", "b2": "baz"},
        [{"regex": "(b.*)", "action": "labelkeep"}],
        {"b1": "bar", "b2": "baz"},
    ),
    ({"a": "foo", "b1": "bar", "b2": "baz"}, [{"regex": "(b.*)", "action": "labeldrop"}], {"a": "foo"}),
    (
        {"foo": "bAr123Foo"},
        [
            {"source_labels": ["foo"], "action": "uppercase", "target_label": "foo_uppercase"},
            {"source_labels": ["foo"], "action": "lowercase", "target_label": "foo_lowercase"},
        ],
        {"foo": "bAr123Foo", "foo_lowercase": "bar123foo", "foo_uppercase": "BAR123FOO"},
    ),
    (
        {"__tmp_port": "1234", "__port1": "1234", "__port2": "5678"},
        [{"source_labels": ["__tmp_port"], "action": "keepequal", "target_label": "__port1"}],
        {"__tmp_port": "1234", "__port1": "1234", "__port2": "5678"},
    ),
    (
        {"__tmp_port": "1234", "__port1": "1234", "__port2": "5678"},
        [{"source_labels": ["__tmp_port"], "action": "dropequal", "target_label": "__port1"}],
        None,
    ),
    (
        {"__tmp_port": "1234", "__port1": "1234", "__port2": "5678"},
        [{"source_labels": ["__tmp_port"], "action": "dropequal", "target_label": "__port2"}],
        {"__tmp_port": "1234", "__port1": "1234", "__port2": "5678"},
    ),
    (
        {"__tmp_port": "1234", "__port1": "1234", "__port2": "5678"},
        [{"source_labels": ["__tmp_port"], "action": "keepequal", "target_label": "__port2"}],
        None,
    ),
]


@pytest.mark.parametrize(("given", "configs", "expected"), PROMETHEUS_CASES)
def test_prometheus_relabel_cases(
    given: dict[str, str], configs: list[dict[str, Any]], expected: dict[str, str] | None
):
    assert relabel(given, steps(*configs)) == expected


def test_input_is_not_modified():
    given = {"a": "foo"}
    relabel(given, steps({"source_labels": ["a"], "target_label": "b"}))
    assert given == {"a": "foo"}


def test_replace_with_empty_result_deletes_the_label():
    configs = steps({"source_labels": ["missing"], "regex": "(.*)", "target_label": "a"})
    assert relabel({"a": "x", "b": "y"}, configs) == {"b": "y"}


def test_an_empty_replacement_deletes_the_target_as_expanded():
    # Prometheus' relabel.go since 2.49: `lb.Del(string(target))`, the expanded name. So a label can name
    # the labels to drop (prometheus#8186): `drop: pod` deletes `pod`.
    configs = steps({"source_labels": ["drop"], "regex": "(.+)", "target_label": "${1}", "replacement": ""})
    assert relabel({"drop": "pod", "pod": "x", "a": "1"}, configs) == {"drop": "pod", "a": "1"}


@pytest.mark.parametrize(
    ("value", "upper", "lower"),
    [
        ("Straße", "STRAßE", "straße"),  # no simple uppercase: `ß` stays (str.upper gives `SS`)
        ("ﬁle", "ﬁLE", "ﬁle"),  # a ligature likewise
        ("ᾳ ᾀ", "ᾼ ᾈ", "ᾳ ᾀ"),  # Greek with ypogegrammeni: one character, the titlecase one
        ("İstanbul", "İSTANBUL", "istanbul"),  # `i`, not `i` + a combining dot
        ("ΟΔΟΣ", "ΟΔΟΣ", "οδοσ"),  # no final-sigma rule: each character on its own
    ],
)
def test_case_actions_map_each_character_as_go_does(value: str, upper: str, lower: str):
    # Go's strings.ToUpper/ToLower map rune by rune with the simple mapping; every code point Java 17
    # knows was checked against Character.toUpperCase/toLowerCase (simple mappings too) when written.
    configs = steps(
        {"source_labels": ["v"], "action": "uppercase", "target_label": "u"},
        {"source_labels": ["v"], "action": "lowercase", "target_label": "l"},
    )
    assert relabel({"v": value}, configs) == {"v": value, "u": upper, "l": lower}


def test_labelmap_collisions_are_settled_in_label_name_order():
    # Prometheus walks labels sorted by name, so of foo_x and bar_x (both mapping to x) foo_x is set last.
    configs = steps({"action": "labelmap", "regex": "(?:foo|bar)_(.+)", "replacement": "$1"})
    assert relabel({"foo_x": "1", "bar_x": "2"}, configs)["x"] == "1"


def test_labelmap_walks_labels_set_by_earlier_steps_last():
    # labels.Builder.Range: the labels no step touched, by name, then the ones steps set, in order. So
    # a_x, set by the replace, comes after the exposed b_x although it sorts first.
    configs = steps(
        {"target_label": "a_x", "replacement": "set-by-rule"},
        {"action": "labelmap", "regex": "(?:a|b)_(x)", "replacement": "$1"},
    )
    assert relabel({"b_x": "exposed"}, configs)["x"] == "set-by-rule"


def test_missing_source_labels_read_as_empty_and_join_with_the_separator():
    configs = steps({"source_labels": ["a", "nope", "b"], "separator": "/", "target_label": "joined"})
    assert relabel({"a": "1", "b": "2"}, configs) == {"a": "1", "b": "2", "joined": "1//2"}


def test_dot_matches_newlines_as_in_prometheus():
    configs = steps({"source_labels": ["a"], "regex": "foo.bar", "action": "keep"})
    assert relabel({"a": "foo\nbar"}, configs) == {"a": "foo\nbar"}


def test_regex_is_fully_anchored_even_with_a_trailing_newline():
    # Python's `$` would match before a final newline; Prometheus' anchoring does not.
    configs = steps({"source_labels": ["a"], "regex": "foo", "action": "keep"})
    assert relabel({"a": "foo\n"}, configs) is None


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("$1", "b"),
        ("${1}", "b"),
        ("${1}x", "bx"),
        ("$1x", ""),  # Go reads `$1x` as the group named "1x": absent, so empty
        ("$name", "c"),
        ("${name}-${1}", "c-b"),
        ("$$1", "$1"),
        ("$", "$"),
        ("${", "${"),
        ("${}", "${}"),
        ("$-", "$-"),
        ("${1", "${1"),
        ("$9", ""),  # no such group
        ("$01", ""),  # a leading zero makes it a name, not a number
        ("$0", "abc"),
        ("$2", "c"),  # a named group has a number too
        ("$3", ""),  # an unmatched optional group
    ],
)
def test_expand_follows_go_regexp_expand(template: str, expected: str):
    match = compile_regex("a(b)(?P<name>c)(x)?").fullmatch("abc")
    assert match is not None
    assert expand(template, match) == expected


def test_go_style_named_groups_are_accepted():
    configs = steps(
        {"source_labels": ["a"], "regex": "(?<host>[^:]+):.*", "target_label": "h", "replacement": "$host"}
    )
    assert relabel({"a": "web:80"}, configs) == {"a": "web:80", "h": "web"}


def test_labelmap_with_prometheus_docs_kubernetes_example():
    configs = from_yaml(
        """
        - action: labelmap
          regex: __meta_kubernetes_service_label_(.+)
        """
    )
    labels = {"__meta_kubernetes_service_label_app": "api", "__meta_kubernetes_service_label_tier": "web"}
    assert relabel(labels, configs) == {**labels, "app": "api", "tier": "web"}


def test_yaml_scalars_are_read_as_text_like_prometheus():
    configs = from_yaml(
        """
        - source_labels: [__meta_kubernetes_service_annotation_prometheus_io_scrape]
          action: Keep
          regex: true
        """
    )
    assert configs[0].regex == "true"
    assert configs[0].action == "keep"
    assert relabel({"__meta_kubernetes_service_annotation_prometheus_io_scrape": "true"}, configs) is not None
    assert relabel({"__meta_kubernetes_service_annotation_prometheus_io_scrape": "false"}, configs) is None


# Validation, with Prometheus' messages (TestRelabelValidate and relabel.Config.Validate).
@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"action": "replace"}, "relabel configuration for replace action requires 'target_label' value"),
        ({"action": "lowercase"}, "relabel configuration for lowercase action requires 'target_label' value"),
        (
            {"action": "lowercase", "target_label": "${3}"},
            "'${3}' is invalid 'target_label' for lowercase action",
        ),
        (
            {"action": "replace", "target_label": "0${3}"},
            "'0${3}' is invalid 'target_label' for replace action",
        ),
        (
            {"action": "replace", "target_label": "-${3}"},
            "'-${3}' is invalid 'target_label' for replace action",
        ),
        ({"action": "replace", "target_label": "a-b"}, "'a-b' is invalid 'target_label' for replace action"),
        (
            {"action": "hashmod", "target_label": "x"},
            "relabel configuration for hashmod requires non-zero modulus",
        ),
        ({"action": "labelmap", "replacement": "-$1"}, "'-$1' is invalid 'replacement' for labelmap action"),
        (
            {"action": "labeldrop", "regex": "x", "source_labels": ["a"]},
            "labeldrop action requires only 'regex', and no other fields",
        ),
        (
            {"action": "keepequal", "target_label": "x", "regex": "y"},
            "keepequal action requires only 'source_labels' and 'target_label', and no other fields",
        ),
        ({"action": "uppercase", "target_label": "x", "replacement": "y"}, "'replacement' can not be set"),
        ({"action": "explode"}, "unknown relabel action 'explode'"),
        ({"regex": "(", "target_label": "x"}, "invalid regex '('"),
        ({"source_labels": ["bad-name"], "target_label": "x"}, "'bad-name' is not a valid label name"),
        ({"target_label": "x", "unknown": 1}, "Extra inputs are not permitted"),
    ],
)
def test_invalid_relabel_configs_are_refused_with_a_precise_message(config: dict[str, Any], message: str):
    with pytest.raises(ValidationError) as caught:
        RelabelConfig.model_validate(config)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("target", "valid"),
    [
        ("-label", False),
        ("label", True),
        ("label${1}", True),
        ("${1}label", True),
        ("${1}", True),
        ("${", False),
        ("$", False),
        ("${}", False),
        ("foo${", False),
        ("$1", True),
        ("asd$2asd", True),
        ("-foo${1}bar-", False),
        ("_${1}_", True),
        ("foo${bar}foo", True),
    ],
)
def test_templated_target_labels_as_prometheus_validates_them(target: str, valid: bool):
    # Prometheus' TestTargetLabelValidity.
    config = {"source_labels": ["a"], "target_label": target}
    if valid:
        RelabelConfig.model_validate(config)
    else:
        with pytest.raises(ValidationError, match=re.escape("is invalid 'target_label'")):
            RelabelConfig.model_validate(config)


# Targets -------------------------------------------------------------------------------------------------
def job(**fields: Any) -> ScrapeConfig:
    return ScrapeConfig.model_validate({"job_name": "node", **fields})


def test_target_defaults_job_instance_and_url():
    target = target_from(job(), "host:9100", {"env": "prod"})
    assert target is not None
    assert target.url == "http://host:9100/metrics"
    assert target.labels == {"job": "node", "instance": "host:9100", "env": "prod"}
    assert (target.interval, target.timeout) == (15.0, 10.0)


def test_reserved_labels_drive_the_url_and_are_dropped_after_relabeling():
    target = target_from(
        job(params={"module": ["http_2xx", "extra"]}),
        "host:9100",
        {
            "__scheme__": "https",
            "__metrics_path__": "/probe",
            "__param_debug": "1",
            "__tmp": "x",
            "team": "a",
        },
    )
    assert target is not None
    assert target.url == "https://host:9100/probe?debug=1&module=http_2xx&module=extra"
    assert target.labels == {"job": "node", "instance": "host:9100", "team": "a"}


def test_a_relabelled_metrics_path_without_a_slash_gets_one():
    # Go's URL.String puts a `/` between the host and a path without one.
    target = target_from(job(), "h:9100", {"__metrics_path__": "probe"})
    assert target is not None
    assert target.url == "http://h:9100/probe"


def test_blackbox_exporter_example_from_the_prometheus_docs():
    configs = yaml.safe_load(
        """
        - source_labels: [__address__]
          target_label: __param_target
        - source_labels: [__param_target]
          target_label: instance
        - target_label: __address__
          replacement: 127.0.0.1:9115
        """
    )
    blackbox = job(metrics_path="/probe", params={"module": ["http_2xx"]}, relabel_configs=configs)
    target = target_from(blackbox, "example.com:443", {})
    assert target is not None
    assert target.url == "http://127.0.0.1:9115/probe?module=http_2xx&target=example.com%3A443"
    assert target.labels == {"job": "node", "instance": "example.com:443"}


def test_relabeling_can_set_instance_and_rewrite_the_address():
    configs = [
        {
            "source_labels": ["__address__"],
            "regex": "(.*):\\d+",
            "target_label": "instance",
            "replacement": "${1}",
        },
        {
            "source_labels": ["__address__"],
            "regex": "(.*):\\d+",
            "target_label": "__address__",
            "replacement": "$1:9200",
        },
    ]
    target = target_from(job(relabel_configs=configs), "db-1:9100", {})
    assert target is not None
    assert target.url == "http://db-1:9200/metrics"
    assert target.instance == "db-1"


def test_keep_and_drop_select_targets():
    selected = job(
        static_configs=[
            {"targets": ["a:1", "b:1"], "labels": {"env": "prod"}},
            {"targets": ["c:1"], "labels": {"env": "dev"}},
        ],
        relabel_configs=[
            {"source_labels": ["env"], "regex": "prod", "action": "keep"},
            {"source_labels": ["__address__"], "regex": "b:.*", "action": "drop"},
        ],
    )
    targets, problems = targets_of(selected)
    assert [t.instance for t in targets] == ["a:1"]
    assert problems == []


def test_duplicate_targets_are_scraped_once():
    targets, _ = targets_of(job(static_configs=[{"targets": ["a:1", "a:1"]}, {"targets": ["a:1"]}]))
    assert len(targets) == 1


def test_interval_and_timeout_can_be_relabeled_per_target():
    configs = [{"target_label": "__scrape_interval__", "replacement": "1m"}]
    target = target_from(job(relabel_configs=configs), "a:1", {})
    assert target is not None
    assert (target.interval, target.timeout) == (60.0, 10.0)


@pytest.mark.parametrize(
    ("configs", "message"),
    [
        ([{"regex": "__address__", "action": "labeldrop"}], "no address"),
        ([{"target_label": "__address__", "replacement": "host/path"}], "not a valid hostname"),
        ([{"target_label": "__scheme__", "replacement": "ftp"}], "invalid scheme 'ftp'"),
        ([{"target_label": "__scrape_timeout__", "replacement": "1m"}], "scrape timeout cannot be greater"),
        (
            [{"target_label": "__scrape_interval__", "replacement": "soon"}],
            "error parsing __scrape_interval__",
        ),
    ],
)
def test_unusable_targets_say_why(configs: list[dict[str, Any]], message: str):
    with pytest.raises(TargetError, match=re.escape(message)):
        target_from(job(relabel_configs=configs), "a:1", {})
    _, problems = targets_of(job(relabel_configs=configs, static_configs=[{"targets": ["a:1"]}]))
    assert len(problems) == 1
    assert message in problems[0]


# Sample labels -------------------------------------------------------------------------------------------
TARGET = {"job": "node", "instance": "a:1"}


def test_target_labels_win_and_clashes_become_exported():
    merged = sample_labels({"job": "app", "path": "/", "exported_job": "taken"}, TARGET, honor_labels=False)
    assert merged == {
        "job": "node",
        "instance": "a:1",
        "path": "/",
        "exported_job": "taken",
        "exported_exported_job": "app",
    }


def test_honor_labels_keeps_scraped_values():
    merged = sample_labels({"job": "app", "path": "/"}, TARGET, honor_labels=True)
    assert merged == {"job": "app", "instance": "a:1", "path": "/"}


def test_empty_scraped_labels_count_as_absent():
    assert sample_labels({"job": "", "x": ""}, TARGET, honor_labels=False) == TARGET


def test_with_honor_labels_a_label_exposed_empty_keeps_the_targets_off():
    # Prometheus' mutateSampleLabels sets a target label only if the sample lacks it (lset.Has): the
    # Pushgateway exposes instance="" so that its pushed series get no instance at all.
    assert sample_labels({"instance": "", "x": "1"}, TARGET, honor_labels=True) == {"job": "node", "x": "1"}
