"""`tripwire receivers test NAME -c FILE` against the vendor fakes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml

from services.notifier.receiver_testing import send_test
from tests.fakes.pagerduty import FakePagerDuty
from tests.fakes.slack import FakeSlackWebhook

ROUTING_KEY = "0123456789abcdef0123456789abcdef"


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[FakeSlackWebhook, FakePagerDuty]]:
    slack, pagerduty = await FakeSlackWebhook().start(), await FakePagerDuty().start()
    yield slack, pagerduty
    await slack.stop()
    await pagerduty.stop()


def routing_file(tmp_path: Path, slack: FakeSlackWebhook, pagerduty: FakePagerDuty) -> Path:
    (tmp_path / "slack-url").write_text(slack.webhook_url)
    (tmp_path / "pd-key").write_text(ROUTING_KEY)
    path = tmp_path / "alertmanager.yml"
    path.write_text(
        yaml.safe_dump(
            {
                "route": {"receiver": "console"},
                "receivers": [
                    {"name": "console", "console_configs": [{}]},
                    {
                        "name": "oncall",
                        "slack_configs": [{"api_url_file": "slack-url"}],
                        "pagerduty_configs": [{"routing_key_file": "pd-key", "url": pagerduty.enqueue_url}],
                    },
                ],
            }
        )
    )
    return path


async def test_a_test_notification_goes_through_every_integration_marked_as_a_test(fakes, tmp_path: Path):
    slack, pagerduty = fakes
    out, code = await send_test(routing_file(tmp_path, slack, pagerduty), "oncall")
    assert code == 0, out
    assert "oncall/slack[0]: delivered" in out and "oncall/pagerduty[0]: delivered" in out
    [message] = slack.messages
    assert "TEST" in message["text"]
    trigger, resolve = pagerduty.events
    assert trigger["payload"]["summary"].startswith("[TEST]")
    assert resolve["event_action"] == "resolve" and resolve["dedup_key"] == trigger["dedup_key"]
    [incident] = pagerduty.incidents.values()
    assert incident.status == "resolved"  # a test pages nobody for long


async def test_a_refusing_receiver_is_reported_as_a_permanent_failure(fakes, tmp_path: Path):
    slack, pagerduty = fakes
    slack.disable("channel_is_archived")
    out, code = await send_test(routing_file(tmp_path, slack, pagerduty), "oncall")
    assert code == 1
    assert "oncall/slack[0]: FAILED (permanent: fix the configuration)" in out
    assert "channel_is_archived" in out and slack.webhook_url not in out
    assert [r.status for r in slack.requests] == [410]  # not retried
    assert "oncall/pagerduty[0]: delivered" in out  # the other integration is still tested


async def test_an_unknown_receiver_names_the_ones_there_are(fakes, tmp_path: Path):
    out, code = await send_test(routing_file(tmp_path, *fakes), "pager")
    assert code == 1 and "no receiver 'pager'" in out and "console, oncall" in out


async def test_a_kill_switch_receiver_is_read_never_flipped(tmp_path: Path):
    from tests.fakes.flags import FakeLaunchDarkly

    ld = await FakeLaunchDarkly(
        token="api-0123", flags={("default", "new-checkout"): {"production": True}}
    ).start()
    (tmp_path / "ld-token").write_text("api-0123")
    path = tmp_path / "alertmanager.yml"
    flag_off = {
        "provider": "launchdarkly",
        "flag": "new-checkout",
        "url": ld.url,
        "token_file": "ld-token",
        "project": "default",
        "environment": "production",
    }
    path.write_text(
        yaml.safe_dump(
            {
                "route": {"receiver": "rollback"},
                "receivers": [{"name": "rollback", "flag_off_configs": [flag_off]}],
            }
        )
    )
    try:
        out, code = await send_test(path, "rollback")
        assert code == 0, out
        assert "not flipped (a test never flips); flag new-checkout via launchdarkly is on" in out
        assert [r.method for r in ld.requests] == ["GET"]
        (tmp_path / "ld-token").write_text("wrong")
        out, code = await send_test(path, "rollback")
        assert code == 1 and "reading flag new-checkout FAILED" in out and "wrong" not in out
    finally:
        await ld.stop()
