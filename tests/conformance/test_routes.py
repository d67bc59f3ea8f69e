"""Alertmanager's own routing test data against `tripwire routes test|show`, and side by side with the real
`amtool` (Debian's prometheus-alertmanager) where it is installed."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from services.notifier import route_testing
from services.notifier.config import load_routing

DATA = Path(__file__).parent / "alertmanager"
CASES = yaml.safe_load((DATA / "routing-cases.yml").read_text())
AMTOOL = shutil.which("amtool")
needs_amtool = pytest.mark.skipif(
    AMTOOL is None,
    reason="amtool not installed (Debian package prometheus-alertmanager; .ci/run installs it)",
)


def tripwire(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", "routes", *args], capture_output=True, text=True, timeout=60
    )


def amtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([AMTOOL, "config", "routes", *args], capture_output=True, text=True, timeout=60)


def _modern(text: str) -> str:
    # amtool 0.25 prints match_re regexes in their anchored form, ^(?:re)$; Alertmanager since 0.27 (and the
    # 68fb2d575 testdata we follow) prints the regex as written.
    return re.sub(r'"\^\(\?:(.*?)\)\$"', r'"\1"', text)


@pytest.mark.parametrize("case", CASES, ids=[f"{c['config']}:{c['labels']}" for c in CASES])
def test_routing_cases_resolve_to_exactly_the_listed_receivers(case: dict):
    labels = [f"{k}={v}" for k, v in case["labels"].items()]
    result = tripwire("test", "-c", str(DATA / case["config"]), *labels)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ",".join(case["receivers"]) + "\n"
    verified = tripwire(
        "test", "-c", str(DATA / case["config"]), f"--verify.receivers={','.join(case['receivers'])}", *labels
    )
    assert verified.returncode == 0


def test_verify_receivers_mismatch_exits_1_with_amtools_warning():
    result = tripwire(
        "test", "-c", str(DATA / "cli_testdata_conf.routing.yml"), "--verify.receivers=test1", "test=2"
    )
    assert result.returncode == 1
    assert result.stdout == "test1,test2\n" + route_testing.VERIFY_FAILED + "\n"


def test_the_full_alertmanager_example_config_loads_for_routing():
    config = load_routing(DATA / "config_testdata_conf.good.yml")
    tree = route_testing.load_tree(DATA / "config_testdata_conf.good.yml")
    assert route_testing.receivers_for(
        tree, {"service": "database", "owner2": "team-X", "owner": "team-Y"}
    ) == [
        "team-X-pager",
        "team-Y-pager",
    ]
    assert route_testing.receivers_for(tree, {"service": "foo1", "severity": "critical"}) == ["team-X-pager"]
    # It names integrations the notifier does not deliver to: routing works, starting refuses.
    assert len(config.inhibit_rules) == 1
    assert config.receiver("team-X-mails").unsupported() == ["email_configs"]


def test_a_bad_file_or_bad_labels_exit_1_with_the_reason():
    bad = tripwire("test", "-c", str(DATA / "cli_testdata_conf.bad.yml"), "a=b")
    assert bad.returncode == 1 and "cli_testdata_conf.bad.yml:1:1:" in bad.stderr
    labels = tripwire("test", "-c", str(DATA / "cli_testdata_conf.routing.yml"), "test=~x")
    assert labels.returncode == 1 and "labels must be specified as key=value pairs" in labels.stderr


def test_a_cases_file_checks_every_case_with_its_line(tmp_path: Path):
    cases = tmp_path / "cases.yml"
    cases.write_text(
        f"- config: {DATA / 'cli_testdata_conf.routing.yml'}\n"
        "  labels: {test: 2}\n"
        "  receivers: [test1, test2]\n"
        f"- config: {DATA / 'cli_testdata_conf.routing.yml'}\n"
        "  labels: {test: 1}\n"
        "  receivers: [test2]\n"
    )
    result = tripwire("test", "--cases", str(cases))
    assert result.returncode == 1
    assert f"FAIL {cases}:4: {{'test': '1'}} went to test1, expected test2" in result.stdout
    assert result.stdout.endswith("1/2 routing cases passed\n")
    good = tmp_path / "good.yml"
    good.write_text(cases.read_text().rsplit("- config", 1)[0])
    assert tripwire("test", "--cases", str(good)).returncode == 0


@needs_amtool
@pytest.mark.parametrize(
    "config",
    [
        "cli_testdata_conf.routing.yml",
        "cli_testdata_conf.routing-reverted.yml",
        "config_testdata_conf.good.yml",
    ],
)
def test_show_prints_what_amtool_prints(config: str):
    ours, theirs = (
        tripwire("show", "-c", str(DATA / config)),
        amtool("show", f"--config.file={DATA / config}"),
    )
    assert (ours.returncode, ours.stdout) == (theirs.returncode, _modern(theirs.stdout))


@needs_amtool
@pytest.mark.parametrize(
    "args",
    [
        ["test=2"],
        ["--tree", "test=2"],
        ["--tree", "test=volovina"],
        ["--verify.receivers=test1", "test=2"],
        [],
    ],
)
def test_test_prints_what_amtool_prints(args: list[str]):
    config = str(DATA / "cli_testdata_conf.routing.yml")
    ours, theirs = tripwire("test", "-c", config, *args), amtool("test", f"--config.file={config}", *args)
    assert (ours.returncode, ours.stdout) == (theirs.returncode, _modern(theirs.stdout))


def test_a_cases_file_can_expect_inhibitions(tmp_path: Path):
    config = DATA / "config_testdata_conf.good.yml"
    cases = tmp_path / "cases.yml"
    warning = "{alertname: Slow, severity: warning, cluster: eu, service: files}"
    cases.write_text(
        f"- labels: {warning}\n"
        "  receivers: [team-Y-mails]\n"
        "  firing: [{alertname: Slow, severity: critical, cluster: eu, service: files}]\n"
        "  inhibited: true\n"
        f"- labels: {warning}\n"
        "  receivers: [team-Y-mails]\n"
        "  firing: [{alertname: Slow, severity: critical, cluster: us, service: files}]\n"
        "  inhibited: true\n"
    )
    result = tripwire("test", "--cases", str(cases), "-c", str(config))
    assert result.returncode == 1, result.stderr
    assert f"FAIL {cases}:5:" in result.stdout and "was not inhibited, expected the opposite" in result.stdout
    assert result.stdout.endswith("1/2 routing cases passed\n")
