"""`tripwire config check`: tripwire.yml and every file it names, checked as the services would load them."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from services.cli import main
from services.config_check import check_config

GOOD_RULES = """\
groups:
  - name: app
    rules:
      - alert: HighErrorRate
        expr: rate(errors_total[5m]) > 1
        for: 5m
"""

ROUTING = """\
route:
  receiver: hooks
receivers:
  - name: hooks
    webhook_configs:
      - url: http://127.0.0.1:9/hook
  - name: chat
    slack_configs:
      - api_url_file: slack_url
        channel: '#ops'
"""


def run(path: Path | None, **flags: bool) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = check_config(path, environ={}, out=out, err=err, **flags)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def setup(tmp_path: Path) -> Path:
    """A tripwire.yml with a rule file, a routing file (its Slack URL in a file) and a scrape job."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "app.yml").write_text(GOOD_RULES)
    (tmp_path / "am.yml").write_text(ROUTING)
    (tmp_path / "slack_url").write_text("https://hooks.slack.com/services/T/B/x\n")
    (tmp_path / "scrape_token").write_text("s3cret\n")
    config = tmp_path / "tripwire.yml"
    config.write_text(
        "rule_files: [rules/*.yml]\n"
        "alerting:\n  config_file: am.yml\n"
        "scrape_configs:\n"
        "  - job_name: app\n"
        "    bearer_token_file: scrape_token\n"
        "    static_configs:\n"
        "      - targets: ['127.0.0.1:8000', '127.0.0.1:8001']\n"
    )
    return config


def test_a_good_config_and_every_file_it_names_pass(setup: Path):
    code, out, err = run(setup)
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        f"Checking {setup}",
        "  SUCCESS: 1 rule files found",
        "  SUCCESS: 2 scrape targets in 1 jobs",
        f" SUCCESS: {setup} is valid tripwire config file syntax",
        "",
        f"Checking {setup.parent / 'rules' / 'app.yml'}",
        "  SUCCESS: 1 rules found",
        "",
        f"Checking {setup.parent / 'am.yml'}",
        "  SUCCESS: 2 receivers, 0 inhibit rules",
        "",
    ]


def test_the_defaults_pass(tmp_path: Path):
    code, out, err = run(None)
    assert (code, err) == (0, "")
    assert out.startswith("Checking <defaults>\n")


def test_a_schema_error_names_file_and_line_and_stops_there(setup: Path):
    setup.write_text(setup.read_text() + "collector:\n  max_items: lots\n")
    code, out, err = run(setup)
    assert code == 1
    assert f"{setup}:10:3: collector.max_items: Input should be a valid integer" in err
    assert "app.yml" not in out  # nothing it names is checked against a config that does not load


def test_a_bad_rule_file_fails_and_the_routing_file_is_still_checked(setup: Path):
    (setup.parent / "rules" / "app.yml").write_text(GOOD_RULES.replace("> 1", ">"))
    code, out, err = run(setup)
    assert code == 1
    assert "app.yml:5:" in err and "could not parse expression" in err
    assert "SUCCESS: 2 receivers" in out


def test_a_routing_error_names_file_and_line(setup: Path):
    (setup.parent / "am.yml").write_text(ROUTING.replace("receiver: hooks", "receiver: nobody"))
    code, _, err = run(setup)
    assert code == 1
    assert "am.yml:2:" in err and "nobody" in err


def test_a_secret_that_cannot_be_read_fails_unless_secrets_are_skipped(setup: Path):
    (setup.parent / "slack_url").unlink()
    (setup.parent / "scrape_token").unlink()
    code, _, err = run(setup)
    assert code == 1
    assert "scrape job 'app': bearer_token_file: cannot read" in err
    assert "receiver 'chat', slack[0]: api_url" in err
    code, out, err = run(setup, skip_secrets=True)
    assert (code, err) == (0, "")
    assert "SUCCESS: 2 receivers" in out


def test_an_ingest_token_file_that_is_missing_fails_unless_secrets_are_skipped(setup: Path):
    setup.write_text(setup.read_text() + "ingest_tokens_file: tokens\n")
    code, _, err = run(setup)
    assert code == 1
    assert "ingest_tokens_file: cannot read" in err
    assert run(setup, skip_secrets=True)[0] == 0
    assert run(setup, syntax_only=True)[0] == 0


def test_a_target_whose_labels_the_stream_refuses_fails(setup: Path):
    setup.write_text(setup.read_text() + "        labels: {team: " + "x" * 5000 + "}\n")
    code, _, err = run(setup)
    assert code == 1
    assert (
        "scrape job 'app': target http://127.0.0.1:8000/metrics: its labels are refused: labels: "
        "value of label 'team' is longer than 4096 characters" in err
    )


def test_a_tls_file_that_cannot_be_loaded_fails(setup: Path):
    setup.write_text(setup.read_text() + "    tls_config:\n      ca_file: missing-ca.pem\n")
    code, _, err = run(setup)
    assert code == 1
    assert "scrape job 'app': tls_config cannot be loaded" in err
    assert run(setup, skip_secrets=True)[0] == 0


def test_syntax_only_reads_no_file_the_config_names(setup: Path):
    (setup.parent / "rules" / "app.yml").write_text("groups: [")
    (setup.parent / "am.yml").write_text("route: [")
    code, out, err = run(setup, syntax_only=True)
    assert (code, err) == (0, "")
    assert out == f"Checking {setup}\n SUCCESS: {setup} is valid tripwire config file syntax\n\n"
    assert run(setup)[0] == 1


def test_a_rule_files_pattern_that_matches_nothing_is_a_warning(setup: Path):
    setup.write_text(
        setup.read_text().replace("rule_files: [rules/*.yml]", "rule_files: [rules/*.yml, rulez/*]")
    )
    code, out, _ = run(setup)
    assert code == 0
    assert "  WARNING: rule_files pattern 'rulez/*' matches no file" in out


def test_the_command_exits_with_the_checks_code(setup: Path, capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as ok:
        main(["config", "check", "--skip-secrets", str(setup)])
    (setup.parent / "am.yml").write_text("route: [")
    with pytest.raises(SystemExit) as failed:
        main(["config", "check", str(setup)])
    assert (ok.value.code, failed.value.code) == (0, 1)
    assert "am.yml" in capsys.readouterr().err
