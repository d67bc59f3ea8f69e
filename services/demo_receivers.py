"""Local stand-ins for Slack and PagerDuty behind `tripwire up --demo`, when no real credentials are set.

examples/alertmanager.yml reads its Slack bot token, Slack API URL and PagerDuty routing key from the
environment (`${SLACK_BOT_TOKEN}`, ...). For each one that is unset, the demo starts the matching fake from
tests/fakes (the same fakes the tests use: real paths, payload validation, status codes), points the
notifier at it through the environment, and prints every message it receives, so the demo shows where the
alert went without any account.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

ROUTING_KEY = "0123456789abcdef0123456789abcdef"


@dataclass
class DemoReceivers:
    fakes: list[Any] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        for fake in self.fakes:
            await fake.stop()


async def start_demo_receivers(env: dict[str, str], say: Callable[[str, str], None]) -> DemoReceivers:
    """Start the fakes whose real credentials are missing from `env`, and set `env` to point at them."""
    demo = DemoReceivers()
    wants_slack = not env.get("SLACK_BOT_TOKEN")
    wants_pagerduty = not env.get("PAGERDUTY_ROUTING_KEY")
    if not (wants_slack or wants_pagerduty):
        return demo
    try:
        from tests.fakes.pagerduty import FakePagerDuty
        from tests.fakes.slack import FakeSlackApi
    except ImportError:
        say(
            "tripwire", "no Slack/PagerDuty credentials and no tests/fakes to stand in: those sends will fail"
        )
        return demo
    slack: Any = None
    pagerduty: Any = None
    if wants_slack:
        slack = await FakeSlackApi().start()
        env.update(SLACK_BOT_TOKEN=slack.token, SLACK_API_URL=slack.base_url, SLACK_CHANNEL="#alerts")
        demo.fakes.append(slack)
        say("tripwire", f"no SLACK_BOT_TOKEN: Slack messages go to a local fake Slack at {slack.base_url}")
    if wants_pagerduty:
        pagerduty = await FakePagerDuty().start()
        env.update(PAGERDUTY_ROUTING_KEY=ROUTING_KEY, PAGERDUTY_URL=pagerduty.enqueue_url)
        demo.fakes.append(pagerduty)
        say("tripwire", f"no PAGERDUTY_ROUTING_KEY: PagerDuty events go to a local fake at {pagerduty.url}")
    demo.task = asyncio.create_task(_report(slack, pagerduty, say))
    return demo


async def _report(slack: Any, pagerduty: Any, say: Callable[[str, str], None]) -> None:
    """Print each call the fakes accepted, as the on-call person would see it."""
    seen = 0
    while True:
        requests = [*(slack.requests if slack else []), *(pagerduty.requests if pagerduty else [])]
        requests.sort(key=lambda r: r.at)
        for request in requests[seen:]:
            say("receiver", _describe(request))
        seen = len(requests)
        await asyncio.sleep(0.5)


def _describe(request: Any) -> str:
    body = request.json if isinstance(request.json, dict) else {}
    status = f"HTTP {request.status}"
    if request.path.endswith("/v2/enqueue"):
        summary = (body.get("payload") or {}).get("summary", "")
        action = body.get("event_action", "?")
        return (
            f"PagerDuty (fake) {action} dedup_key={str(body.get('dedup_key', ''))[:12]}… {summary} [{status}]"
        )
    method = request.path.rsplit("/", 1)[-1]
    text = body.get("text") or request.params.get("text", "")
    channel = body.get("channel") or request.params.get("channel", "")
    if method.startswith("conversations."):
        return f"Slack (fake) {method} {channel} (the notifier checking what it already posted) [{status}]"
    return f"Slack (fake) {method} {channel}: {text} [{status}]"
