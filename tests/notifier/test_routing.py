"""Routing with Alertmanager's semantics, and the keys it derives."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.notifier.config import RoutingConfig, load_routing
from services.notifier.matchers import parse_matcher
from services.notifier.routing import Route
from shared.yamlfile import ConfigErrors

CONFIG = {
    "route": {
        "receiver": "default",
        "group_by": ["alertname"],
        "routes": [
            {"matchers": ['severity="page"'], "receiver": "pager", "continue": True},
            {
                "match": {"team": "payments"},
                "receiver": "payments",
                "group_by": ["alertname", "service"],
                "routes": [{"matchers": ['env=~"prod|staging"'], "receiver": "payments-prod"}],
            },
            {"match_re": {"team": "pay.*"}, "receiver": "never-reached-for-payments"},
        ],
    },
    "receivers": [
        {"name": n} for n in ("default", "pager", "payments", "payments-prod", "never-reached-for-payments")
    ],
}


@pytest.fixture
def tree() -> Route:
    return Route.build(RoutingConfig.model_validate(CONFIG).route)


@pytest.mark.parametrize(
    ("labels", "receivers"),
    [
        ({"alertname": "A"}, ["default"]),
        ({"alertname": "A", "severity": "page"}, ["pager"]),  # a matching child replaces its parent
        ({"alertname": "A", "severity": "page", "team": "payments"}, ["pager", "payments"]),
        ({"alertname": "A", "team": "payments", "env": "prod"}, ["payments-prod"]),
        ({"alertname": "A", "team": "payops"}, ["never-reached-for-payments"]),
    ],
)
def test_depth_first_first_match_wins_unless_continue(tree: Route, labels, receivers):
    assert [r.receiver for r in tree.match(labels)] == receivers


def test_route_and_group_keys_are_alertmanagers(tree: Route):
    labels = {"alertname": "HighErrorRate", "team": "payments", "env": "prod", "service": "checkout"}
    (route,) = tree.match(labels)
    assert route.key() == '{}/{team="payments"}/{env=~"prod|staging"}'
    # group_by is inherited from the parent route.
    assert route.group_key(labels) == (
        '{}/{team="payments"}/{env=~"prod|staging"}:{alertname="HighErrorRate", service="checkout"}'
    )


def test_group_by_everything_and_nothing():
    everything = Route.build(
        RoutingConfig.model_validate(
            {"route": {"receiver": "r", "group_by": ["..."]}, "receivers": [{"name": "r"}]}
        ).route
    )
    nothing = Route.build(
        RoutingConfig.model_validate({"route": {"receiver": "r"}, "receivers": [{"name": "r"}]}).route
    )
    labels = {"b": "2", "a": "1"}
    assert everything.group_key(labels) == '{}:{a="1", b="2"}'
    assert nothing.group_key(labels) == "{}:{}"


@pytest.mark.parametrize(
    ("text", "labels", "matches"),
    [
        ('a="b"', {"a": "b"}, True),
        ("a!=b", {"a": "c"}, True),
        ('a=~"b|c"', {"a": "c"}, True),
        ('a=~"b"', {"a": "bb"}, False),  # anchored
        ('a!~"x.*"', {}, True),
        ('a=""', {}, True),  # absent label is empty
    ],
)
def test_matchers(text, labels, matches):
    assert parse_matcher(text).matches(labels) is matches


def test_bad_routing_files_get_positions(tmp_path: Path):
    path = tmp_path / "am.yml"
    path.write_text(
        "route:\n  receiver: nope\n  routes:\n    - matchers: ['a=~\"(\"']\n      receiver: r\n"
        "receivers:\n  - name: r\n  - name: r\ninhibit_rules:\n  - source_matchers: ['a=~\"[\"']\n"
    )
    with pytest.raises(ConfigErrors) as caught:
        load_routing(path)
    messages = "\n".join(str(e) for e in caught.value.errors)
    assert f'{path}:2:3: undefined receiver "nope" used in route' in messages
    assert f"{path}:4:18: invalid regular expression" in messages
    assert f'{path}:8:5: notification config name "r" is not unique' in messages
    assert f"{path}:10:23: invalid regular expression" in messages


def test_zero_group_or_repeat_interval_is_refused_as_alertmanager_does(tmp_path: Path):
    path = tmp_path / "am.yml"
    path.write_text(
        "route:\n  receiver: r\n  routes:\n    - receiver: r\n      group_interval: 0s\n"
        "      repeat_interval: 0s\nreceivers:\n  - name: r\n"
    )
    with pytest.raises(ConfigErrors) as caught:
        load_routing(path)
    messages = "\n".join(str(e) for e in caught.value.errors)
    assert f"{path}:5:7: group_interval cannot be zero" in messages
    assert f"{path}:6:7: repeat_interval cannot be zero" in messages
