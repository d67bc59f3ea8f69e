"""Loading rule files: the schema, and precise errors with file:line."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.evaluator.rules.files import load_rule_files
from shared.yamlfile import ConfigErrors

GOOD = """\
groups:
  - name: checkout
    interval: 30s
    labels:
      team: payments
    rules:
      - alert: HighErrorRate
        expr: checkout_error_ratio{service="checkout"} > 0.02
        for: 5m
        keep_firing_for: 1m
        labels:
          severity: page
          priority: 1
        annotations:
          summary: "Error rate {{ $value }} on {{ $labels.service }}"
  - name: defaults
    rules:
      - alert: QueueBacklog
        expr: 1000 < queue_depth
"""


def write(tmp_path: Path, text: str, name: str = "rules.yml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_good_file_loads_with_inherited_interval(tmp_path: Path):
    groups = load_rule_files([write(tmp_path, GOOD)], default_interval=15.0)
    checkout, defaults = groups
    assert (checkout.name, checkout.interval, defaults.interval) == ("checkout", 30.0, 15.0)
    (rule,) = checkout.rules
    assert (rule.name, rule.hold, rule.keep_firing_for) == ("HighErrorRate", 300.0, 60.0)
    labels = {k: t.source for k, t in rule.labels.items()}
    assert labels == {"team": "payments", "severity": "page", "priority": "1"}
    from services.evaluator.series import SeriesStore

    store = SeriesStore(300)
    store.add("queue_depth", {}, 100.0, 999)
    store.add("queue_depth", {"q": "big"}, 100.0, 1001)
    assert defaults.rules[0].expr.evaluate(store, 100.0, 300) == [
        ({"__name__": "queue_depth", "q": "big"}, 1001)
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: x > 1\n        for: 5x\n",
            ":6:9: groups.0.rules.0.for: not a valid duration string: '5x'",
        ),
        (
            "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: x > 1\n        colour: red\n",
            ":6:9: field colour not found in type",
        ),
        (
            "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: 'rate(x[5m])[5m:]'\n",
            ':5:9: group "g", rule 1, "A": invalid expression type \'range vector\' for a rule',
        ),
        (
            "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: x >\n",
            ':5:9: group "g", rule 1, "A": could not parse expression',
        ),
        (
            "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: x > 1\n"
            "        annotations:\n          s: '{{ $value | humanise }}'\n",
            ':6:9: group "g", rule 1, "A": annotation \'s\': at 12: function "humanise" not defined',
        ),
        (
            "groups:\n  - name: g\n    rules: []\n  - name: g\n    rules: []\n",
            ':4:5: groupname: "g" is repeated in the same file',
        ),
        ("groups:\n  - name: g\n    rules:\n      - expr: x > 1\n", ':4:9: group "g", rule 1, "": one of'),
        ("groups: [\n", ":2:1: yaml:"),
    ],
)
def test_errors_name_file_line_and_rule(tmp_path: Path, text: str, expected: str):
    path = write(tmp_path, text)
    with pytest.raises(ConfigErrors) as caught:
        load_rule_files([path], 15.0)
    messages = [str(e) for e in caught.value.errors]
    assert any(m.startswith(str(path)) and expected in m for m in messages), messages


def test_every_error_of_every_file_is_reported(tmp_path: Path):
    bad1 = write(
        tmp_path,
        "groups:\n  - name: a\n    rules:\n      - alert: A\n        expr: x >\n"
        "      - alert: B\n        expr: y{\n",
        "one.yml",
    )
    bad2 = write(tmp_path, "groups: 1\n", "two.yml")
    with pytest.raises(ConfigErrors) as caught:
        load_rule_files([bad1, bad2, tmp_path / "missing.yml"], 15.0)
    files = [e.file for e in caught.value.errors]
    assert files.count(str(bad1)) == 2 and str(bad2) in files and str(tmp_path / "missing.yml") in files
