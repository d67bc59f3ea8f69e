"""The `tripwire` command's error handling: clear messages and exit codes, never a traceback."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def tripwire(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_evaluator_refuses_a_bad_rule_file_with_file_and_line(tmp_path: Path, redis_server):
    rules = tmp_path / "rules.yml"
    rules.write_text("groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: 'rate(x[5m]) >'\n")
    config = tmp_path / "tripwire.yml"
    config.write_text(f"rule_files: [rules.yml]\nredis:\n  url: {redis_server.url}\n")
    result = tripwire("evaluator", "-c", str(config))
    assert result.returncode == 2
    assert f'{rules}:5:9: group "g", rule 1, "A": could not parse expression' in result.stderr
    assert "Traceback" not in result.stderr


def test_notifier_refuses_a_receiver_it_cannot_deliver_to(tmp_path: Path, redis_server):
    routing = tmp_path / "am.yml"
    routing.write_text(
        "route:\n  receiver: s\nreceivers:\n  - name: s\n    opsgenie_configs:\n      - api_key_file: /k\n"
    )
    config = tmp_path / "tripwire.yml"
    config.write_text(f"alerting:\n  config_file: am.yml\nredis:\n  url: {redis_server.url}\n")
    result = tripwire("notifier", "-c", str(config))
    assert result.returncode == 2
    assert "receiver 's' uses opsgenie_configs, which the notifier cannot deliver to yet" in result.stderr


def test_notifier_refuses_a_literal_secret_at_file_and_line(tmp_path: Path, redis_server):
    routing = tmp_path / "am.yml"
    routing.write_text(
        "route:\n  receiver: s\nreceivers:\n  - name: s\n    slack_configs:\n"
        "      - api_url: https://hooks.slack.com/services/T0/B0/sekrit\n"
    )
    config = tmp_path / "tripwire.yml"
    config.write_text(f"alerting:\n  config_file: am.yml\nredis:\n  url: {redis_server.url}\n")
    result = tripwire("notifier", "-c", str(config))
    assert result.returncode == 2
    assert f"{routing}:6:" in result.stderr and "use api_url_file or ${ENV_VAR}" in result.stderr
    assert "sekrit" not in result.stderr


def test_a_service_whose_port_is_taken_says_so_without_a_traceback(tmp_path: Path, redis_server):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "tripwire.yml"
        config.write_text(f"collector:\n  listen: 127.0.0.1:{port}\nredis:\n  url: {redis_server.url}\n")
        result = tripwire("collector", "-c", str(config))
    assert result.returncode == 1
    assert f"tripwire collector: cannot listen on 127.0.0.1:{port}: the address is in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_config_file_is_a_clear_error(tmp_path: Path):
    result = tripwire("collector", "-c", str(tmp_path / "nope.yml"))
    assert result.returncode == 2
    assert "cannot read file: No such file or directory" in result.stderr


def test_send_reports_an_unreachable_collector():
    result = tripwire("send", "metric", "x", "1", "--url", "http://127.0.0.1:9")
    assert result.returncode == 1
    assert "cannot reach http://127.0.0.1:9/api/v1/metrics" in result.stderr


def test_send_rejects_a_malformed_label():
    result = tripwire("send", "log", "svc", "error", "boom", "no-equals-sign")
    assert result.returncode != 0
    assert "label 'no-equals-sign' must be NAME=VALUE" in result.stderr
