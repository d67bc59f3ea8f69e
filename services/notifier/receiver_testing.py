"""`tripwire receivers test NAME -c alertmanager.yml`: send one clearly marked test notification through every
integration of one receiver and report each outcome (what Alertmanager #2845 asks for).

The test goes through the same integration code, secrets and retries as the notifier (with a short deadline),
but keeps no state: it never touches Redis or the notification log. A PagerDuty test triggers an `info`
incident marked [TEST] and resolves it at once.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import aiohttp

from services.notifier.config import load_routing
from services.notifier.flag_providers import FlagTarget, ProviderError
from services.notifier.notification import Notification
from services.notifier.receivers import DeliveryError
from services.notifier.receivers.delivery import NoJournal, RateLimits
from services.notifier.receivers.flag_off import FlagOffIntegration
from shared.alerts import Alert, from_unix
from shared.clock import SystemClock
from shared.yamlfile import ConfigError, ConfigErrors

TEST_DEADLINE = 15.0  # interactive: do not retry for a minute


def marked_notification(receiver: str, external_url: str, status: str = "firing") -> Notification:
    now = time.time()
    alert = Alert(
        labels={"alertname": "TripwireTestNotification", "severity": "info", "receiver": receiver},
        annotations={
            "summary": f"Test notification for receiver {receiver}: it works. No action needed.",
            "description": "Sent by `tripwire receivers test`.",
        },
        startsAt=from_unix(now),
        endsAt=from_unix(now if status == "resolved" else now + 300),
        status=status,  # type: ignore[arg-type]
    )
    group_labels = {"alertname": "TripwireTestNotification"}
    group_key = '{}/{test="true"}:{alertname="TripwireTestNotification"}'
    return Notification(receiver, group_key, group_labels, [alert], external_url, test=True)


async def send_test(path: Path, name: str, external_url: str = "http://localhost:9402") -> tuple[str, int]:
    """Send the test through receiver `name`; returns the report and the exit code (0: all delivered)."""
    from services.notifier.app import ReceiverDeps, build_receivers

    try:
        routing = load_routing(path)
    except ConfigErrors as exc:
        return "".join(f"tripwire: {e}\n" for e in exc.errors), 1
    names = [r.name for r in routing.receivers]
    if name not in names:
        return f"tripwire: error: no receiver {name!r} in {path} (receivers: {', '.join(names)})\n", 1
    # Only this receiver is built (and must be deliverable), whatever the rest of the file routes to.
    only = routing.model_copy(
        update={
            "route": routing.route.model_copy(update={"receiver": name, "routes": []}),
            "receivers": [routing.receiver(name)],
        }
    )
    lines: list[str] = []
    failed = False
    clock = SystemClock()
    async with aiohttp.ClientSession() as session:
        try:
            receivers = build_receivers(
                only, ReceiverDeps(session, clock, None, RateLimits(clock), external_url)
            )
        except ConfigErrors as exc:
            return "".join(f"tripwire: {e}\n" for e in exc.errors), 1
        except ConfigError as exc:
            return f"tripwire: error: {exc}\n", 1
        integrations = receivers[name].integrations
        if not integrations:
            return f"tripwire: receiver {name!r} has no integrations: nothing to test\n", 1
        for integration in integrations:
            if isinstance(integration, FlagOffIntegration):
                text, ok = await _check_flag_off(integration, external_url)
                lines.append(f"{name}/{integration.name}: {text}")
                failed = failed or not ok
                continue
            for config in _configs(integration):
                config.retry_deadline = min(config.retry_deadline, TEST_DEADLINE)
            started = time.monotonic()
            journal = NoJournal(f"test-{uuid.uuid4().hex[:12]}")
            try:
                await integration.notify(marked_notification(name, external_url), journal)
                if integration.name.startswith("pagerduty"):
                    await integration.notify(marked_notification(name, external_url, "resolved"), journal)
            except DeliveryError as exc:
                failed = True
                hint = "permanent: fix the configuration" if exc.permanent else "gave up retrying"
                lines.append(f"{name}/{integration.name}: FAILED ({hint}): {exc}")
                continue
            took = time.monotonic() - started
            lines.append(f"{name}/{integration.name}: delivered in {took:.2f}s")
    return "\n".join(lines) + "\n", 1 if failed else 0


async def _check_flag_off(integration: FlagOffIntegration, external_url: str) -> tuple[str, bool]:
    """A test never flips a flag: it reads the flag through the provider (credentials, URL, names) instead."""
    data = marked_notification(integration.receiver, external_url).template_data()
    flag = integration.render(integration.config.flag, data)
    if not flag:
        return (
            "not flipped (a test never flips); the flag template needs real alert labels to be checked",
            True,
        )
    target = FlagTarget(
        flag,
        integration.render(integration.config.environment, data) or None,
        integration.render(integration.config.project, data) or None,
    )
    try:
        state = await integration.provider.read(target)
    except ProviderError as exc:
        return f"not flipped (a test never flips); reading flag {flag} FAILED: {exc}", False
    shown = {True: "on", False: "off", None: "unknown (this provider cannot be read)"}[state.enabled]
    return f"not flipped (a test never flips); flag {flag} via {integration.provider.name} is {shown}", True


def _configs(integration: object) -> list:
    config = getattr(integration, "config", None)
    return [config] if config is not None and hasattr(config, "retry_deadline") else []
