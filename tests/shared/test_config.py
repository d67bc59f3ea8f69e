"""tripwire.yml loading: defaults, env overrides, secrets, and errors with positions."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.evaluator.rules.files import load_rule_files
from services.notifier.config import load_routing
from shared.config import load_config, rule_file_paths
from shared.yamlfile import ConfigErrors


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tripwire.yml"
    path.write_text(text)
    return path


def test_defaults_without_a_file():
    config = load_config(None, environ={})
    assert config.global_.evaluation_interval == 15.0
    assert config.redis.prefix == "tripwire"
    assert (config.collector.listen, config.evaluator.listen, config.notifier.listen) == (
        "0.0.0.0:9400",
        "0.0.0.0:9401",
        "0.0.0.0:9402",
    )
    assert config.ingest_token is None and config.admin_token is None


def test_env_overrides_file_values_and_sections(tmp_path: Path):
    path = write(
        tmp_path,
        "global:\n  evaluation_interval: 30s\n  external_labels: {env: prod}\nredis:\n  prefix: fromfile\n",
    )
    config = load_config(
        path,
        environ={
            "TRIPWIRE_GLOBAL_EVALUATION_INTERVAL": "1m",
            "TRIPWIRE_REDIS_URL": "redis://cache:6380/2",
            "TRIPWIRE_RULE_FILES": "a/*.yml, b.yml",
            "TRIPWIRE_COLLECTOR_MAX_ITEMS": "50",
            "TRIPWIRE_ADMIN_TOKEN": "",  # empty counts as unset
        },
    )
    assert config.global_.evaluation_interval == 60.0
    assert config.global_.external_labels == {"env": "prod"}  # the rest of the section stays
    assert config.redis.url == "redis://cache:6380/2" and config.redis.prefix == "fromfile"
    assert config.rule_files == ["a/*.yml", "b.yml"]
    assert config.collector.max_items == 50
    assert config.admin_token is None


def test_unknown_env_variable_is_reported(caplog):
    load_config(None, environ={"TRIPWIRE_REDIS_ULR": "redis://typo"})
    assert "ignoring unknown environment variable TRIPWIRE_REDIS_ULR" in caplog.text


def test_secrets_come_from_env_or_files_never_literals(tmp_path: Path):
    (tmp_path / "ingest.token").write_text("from-file\n")
    path = write(tmp_path, "ingest_token_file: ingest.token\n")
    config = load_config(path, environ={"TRIPWIRE_ADMIN_TOKEN": "from-env"})
    assert config.ingest_token.get_secret_value() == "from-file"
    assert config.admin_token.get_secret_value() == "from-env"
    assert "from-file" not in repr(config) and "from-env" not in repr(config)

    literal = write(tmp_path, "admin_token: hunter2\nredis:\n  url: redis://:pw@host:6379/0\n")
    with pytest.raises(ConfigErrors) as caught:
        load_config(literal, environ={})
    messages = [str(e) for e in caught.value.errors]
    assert f"{literal}:1:1: admin_token must not be written in a config file" in messages[0]
    assert f"{literal}:3:3: redis.url must not carry a password" in messages[1]


def test_missing_or_empty_secret_file_is_an_error(tmp_path: Path):
    (tmp_path / "empty").write_text("\n")
    for target in ("empty", "missing"):
        path = write(tmp_path, f"admin_token_file: {target}\n")
        with pytest.raises(Exception, match="admin_token_file"):
            load_config(path, environ={})


def test_every_error_is_reported_with_its_line(tmp_path: Path):
    path = write(tmp_path, "global:\n  evaluation_interval: 5x\ncollector:\n  listen: nope\n  bogus: 1\n")
    with pytest.raises(ConfigErrors) as caught:
        load_config(path, environ={"TRIPWIRE_REDIS_PREFIX": "bad{tag}"})
    messages = [str(e) for e in caught.value.errors]
    assert any(m.startswith(f"{path}:2:3: global.evaluation_interval") for m in messages)
    assert any(m.startswith(f"{path}:4:3: collector.listen: listen address 'nope'") for m in messages)
    assert any(m.startswith(f"{path}:5:3: field bogus not found") for m in messages)
    assert any(m.startswith("TRIPWIRE_REDIS_PREFIX: redis.prefix") for m in messages)


def test_an_unknown_key_names_the_known_one_it_resembles_and_errors_come_in_file_order(tmp_path: Path):
    path = write(
        tmp_path,
        "colector:\n  listen: 0.0.0.0:9400\nhttp:\n  idle_timout: 5s\nscrape_configs:\n  - job_name: a\n"
        "    static_configs:\n      - targtes: [x:1]\nzzz: 1\n",
    )
    with pytest.raises(ConfigErrors) as caught:
        load_config(path, environ={})
    assert [str(e) for e in caught.value.errors] == [
        f"{path}:1:1: field colector not found in type (unknown field 'colector'; did you mean 'collector'?)",
        f"{path}:4:3: field idle_timout not found in type (unknown field 'http.idle_timout'; "
        "did you mean 'idle_timeout'?)",
        f"{path}:8:9: field targtes not found in type (unknown field "
        "'scrape_configs.0.static_configs.0.targtes'; did you mean 'targets'?)",
        f"{path}:9:1: field zzz not found in type (unknown field 'zzz')",  # like nothing known: no guess
    ]


def test_rule_and_routing_files_suggest_the_key_meant(tmp_path: Path):
    rules = tmp_path / "rules.yml"
    rules.write_text("groups:\n  - name: g\n    rules:\n      - alert: A\n        exprr: up == 0\n")
    with pytest.raises(ConfigErrors, match=r"rules.yml:5:9: .*exprr.*did you mean 'expr'\?"):
        load_rule_files([rules], 15.0)
    routing = tmp_path / "alertmanager.yml"
    routing.write_text("route:\n  receiver: r\n  group_wait: 1s\n  grup_by: [a]\nreceivers:\n  - name: r\n")
    with pytest.raises(ConfigErrors, match=r"alertmanager.yml:4:3: .*grup_by.*did you mean 'group_by'\?"):
        load_routing(routing)


def test_rule_file_globs_resolve_relative_to_the_config(tmp_path: Path):
    (tmp_path / "rules").mkdir()
    for name in ("b.yml", "a.yml", "skip.txt"):
        (tmp_path / "rules" / name).write_text("groups: []\n")
    path = write(tmp_path, "rule_files: ['rules/*.yml', 'rules/a.yml']\n")
    assert [p.name for p in rule_file_paths(load_config(path, environ={}))] == ["a.yml", "b.yml"]


def test_log_metrics_are_checked_with_their_line(tmp_path: Path):
    path = write(
        tmp_path,
        "log_metrics:\n"
        "  - name: budget_exceeded_total\n"
        "    message_regex: 'Budget exceeded (?P<tenant'\n"
        "  - name: 0bad\n"
        "    labels: [__x]\n"
        "  - name: log_events_total\n",
    )
    with pytest.raises(ConfigErrors) as caught:
        load_config(path, environ={})
    messages = "\n".join(str(e) for e in caught.value.errors)
    assert f"{path}:3:" in messages and "invalid message_regex" in messages
    assert f"{path}:4:" in messages and "invalid metric name '0bad'" in messages
    assert f"{path}:5:" in messages and "invalid label name '__x'" in messages
    assert "log_events_total is the built-in count" in messages


def test_a_log_metric_defined_twice_is_an_error(tmp_path: Path):
    path = write(tmp_path, "log_metrics:\n  - name: a_total\n  - name: a_total\n")
    with pytest.raises(ConfigErrors, match="define a_total more than once"):
        load_config(path, environ={})


def test_a_listen_port_without_a_host_says_what_to_write(tmp_path: Path):
    path = write(tmp_path, "collector:\n  listen: 9400\n")
    with pytest.raises(ConfigErrors) as exc:
        load_config(path, environ={})
    assert [str(e) for e in exc.value.errors] == [
        f"{path}:2:3: collector.listen: listen address 9400 must be a host:port string (e.g. 0.0.0.0:9400)"
    ]


def test_a_list_or_map_variable_that_is_broken_json_says_so():
    with pytest.raises(ConfigErrors) as exc:
        load_config(
            None,
            environ={
                "TRIPWIRE_RULE_FILES": '["a.yml",',
                "TRIPWIRE_GLOBAL_EXTERNAL_LABELS": "{env: prod}",
                "TRIPWIRE_COLLECTOR_MAX_ITEMS": "50",
            },
        )
    messages = [str(e) for e in exc.value.errors]
    assert len(messages) == 2
    assert messages[0].startswith("TRIPWIRE_GLOBAL_EXTERNAL_LABELS: not valid JSON (")
    assert messages[0].endswith("); write a JSON object")
    assert messages[1].startswith("TRIPWIRE_RULE_FILES: not valid JSON (")
    assert messages[1].endswith("); write a JSON list or comma-separated values")


@pytest.mark.parametrize(
    ("name", "text", "where"),
    [
        ("tripwire.yml", "global:\n  scrape_interval: 30\n", "tripwire.yml:2:3: global.scrape_interval"),
        (
            "rules.yml",
            "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up == 0\n    for: 300\n",
            "rules.yml:6:5: groups.0.rules.0.for",
        ),
        (
            "alertmanager.yml",
            "route:\n  receiver: r\n  group_wait: 30\nreceivers:\n- name: r\n",
            "alertmanager.yml:3:3: route.group_wait",
        ),
    ],
)
def test_a_duration_in_a_file_needs_a_unit_as_prometheus_and_alertmanager_want(
    tmp_path: Path, name: str, text: str, where: str
):
    # Prometheus and Alertmanager refuse `30` ("not a valid duration string"); taking it as seconds would
    # pass a file in `tripwire check` that the upstream tools refuse. `0` they take, and so does this.
    from services.evaluator.rules.files import load_rule_files
    from services.notifier.config import load_routing

    load = {
        "tripwire.yml": lambda p: load_config(p, environ={}),
        "rules.yml": lambda p: load_rule_files([p], 60.0),
        "alertmanager.yml": load_routing,
    }[name]
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigErrors) as refused:
        load(path)
    message = str(refused.value)
    assert f"{where}: a duration needs a unit: " in message, message
    path.write_text(text.replace(": 300\n", ": 0\n").replace(": 30\n", ": 0\n"))
    load(path)


@pytest.mark.parametrize(
    ("protocols", "message"),
    [
        ("[PrometheusProto]", "PrometheusProto is not supported: tripwire reads the text and OpenMetrics"),
        (
            "[PrometheusText0.0.4, OpenMetricsText1.0.0, PrometheusText0.0.4]",
            "duplicated protocol in scrape_protocols: PrometheusText0.0.4",
        ),
    ],
)
def test_scrape_protocols_tripwire_cannot_honour_are_refused_at_their_line(
    tmp_path: Path, protocols: str, message: str
):
    path = tmp_path / "tripwire.yml"
    path.write_text(
        "scrape_configs:\n  - job_name: a\n    static_configs:\n      - targets: [x:1]\n"
        f"    scrape_protocols: {protocols}\n"
    )
    with pytest.raises(ConfigErrors) as caught:
        load_config(path, environ={})
    (error,) = caught.value.errors
    assert str(error).startswith(f"{path}:5:")
    assert message in str(error)
