"""The demo traffic generator behind `tripwire up --demo`.

It plays a small checkout service: healthy traffic first, then a bad release behind the flag `new-checkout`
that pushes the error rate to ~8%, until the HighErrorRate alert's kill switch turns the flag off (the app
reads it through tripwire's OpenFeature provider) and errors drop back; if that never happens, the demo rolls
back by hand after two minutes. Every second it posts what a real app
would: request counters (`increment` samples), a `checkout_error_ratio` gauge over the last 10 seconds, and
an error log line per failed payment. With examples/ the HighErrorRate rule fires within a minute of start.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from openfeature import api
from pydantic import SecretStr
from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.openfeature_provider import TripwireProvider
from shared.streams import Keys

HEALTHY_ERROR_RATE = 0.005
BAD_ERROR_RATE = 0.08
HEALTHY_SECONDS = 5
REQUESTS_PER_SECOND = 200
WINDOW = 10


FLAG = "new-checkout"
ROLLBACK_AFTER = 120  # seconds of bad release before the demo rolls back by hand (if the kill switch did not)

_STORY = {
    "healthy": f"checkout is healthy ({HEALTHY_ERROR_RATE:.1%} errors); bad release in {HEALTHY_SECONDS}s",
    "bad-release": (
        f"deploying release new-checkout behind flag {FLAG} (on): error rate jumps to {BAD_ERROR_RATE:.0%}; "
        "HighErrorRate (>2% for 10s) should fire within ~30s and its kill switch turn the flag off"
    ),
    "killed": (
        f"flag {FLAG} is OFF (kill switch): checkout serves the old path again; errors back to normal, "
        "the alert will resolve; re-enable with PUT /api/v1/flags/new-checkout"
    ),
    "rolled-back": "rolling new-checkout back by hand: errors back to normal; the alert will resolve",
}


def phase(elapsed: float, flag_on: bool = True) -> tuple[str, float]:
    """Which part of the story we are in, and its error rate: the bad release hurts only while its flag is
    on (the kill switch ends it), or until the demo gives up waiting and rolls back by hand."""
    if elapsed < HEALTHY_SECONDS:
        return "healthy", HEALTHY_ERROR_RATE
    if not flag_on:
        return "killed", HEALTHY_ERROR_RATE
    if elapsed < HEALTHY_SECONDS + ROLLBACK_AFTER:
        return "bad-release", BAD_ERROR_RATE
    return "rolled-back", HEALTHY_ERROR_RATE


@dataclass
class DemoFlags:
    """How the demo app sees its flag: the notifier's flag API to switch it on at start, the OpenFeature
    provider (as any app would) to read it every second, and the audit stream to print the kill switch's
    decisions."""

    notifier_url: str
    admin_token: SecretStr | None
    redis_url: str
    prefix: str


async def run_demo(
    collector_url: str,
    token: SecretStr | None,
    say: Callable[[str, str], None],
    flags: DemoFlags | None = None,
) -> None:
    client = await _flag_client(flags, say) if flags is not None else None
    audit = asyncio.create_task(_print_audit(flags, say)) if flags is not None else None
    try:
        await _traffic(collector_url, token, say, client)
    finally:
        if audit is not None:
            audit.cancel()
            await asyncio.gather(audit, return_exceptions=True)
        if client is not None:
            await asyncio.to_thread(api.shutdown)


async def _flag_client(flags: DemoFlags, say: Callable[[str, str], None]) -> Any:
    headers = {"Authorization": f"Bearer {flags.admin_token.get_secret_value()}"} if flags.admin_token else {}
    body = {"enabled": True, "reason": "demo: release new-checkout ships behind this flag", "actor": "demo"}
    try:
        async with (
            aiohttp.ClientSession(headers=headers) as session,
            session.put(f"{flags.notifier_url}/api/v1/flags/{FLAG}", json=body) as response,
        ):
            if response.status != 200:
                say("demo", f"could not switch flag {FLAG} on: HTTP {response.status}")
    except aiohttp.ClientError as exc:
        say("demo", f"could not reach the notifier's flag API: {exc}")
    provider = TripwireProvider(flags.redis_url, prefix=flags.prefix)
    await asyncio.to_thread(api.set_provider, provider)
    say("demo", f"flag {FLAG} is on; the demo app reads it through tripwire's OpenFeature provider")
    return api.get_client()


async def _print_audit(flags: DemoFlags, say: Callable[[str, str], None]) -> None:
    """Print each kill-switch decision from tripwire:{audit}, as ops would read it."""
    stream = Keys(flags.prefix).audit
    async with Redis.from_url(flags.redis_url) as redis:
        last = "$"
        while True:
            try:
                found = await redis.xread({stream: last}, block=1000, count=10)
            except RedisError:
                await asyncio.sleep(1.0)
                continue
            for _, entries in found:
                for entry_id, fields in entries:
                    last = entry_id
                    e = {k.decode(): v.decode() for k, v in fields.items()}
                    value = f" = {e['value']}" if e["value"] else ""
                    say(
                        "audit",
                        f"{e['outcome']}: flag {e['flag']} ({e['provider']}) by {e['actor']}; "
                        f"alert {e['rule']}{value}; {e['reason']}",
                    )


async def _traffic(
    collector_url: str, token: SecretStr | None, say: Callable[[str, str], None], flags: Any
) -> None:
    rng = random.Random(7)
    headers = {"Authorization": f"Bearer {token.get_secret_value()}"} if token else {}
    window: deque[tuple[int, int]] = deque(maxlen=WINDOW)
    current = ""
    started = asyncio.get_running_loop().time()
    async with aiohttp.ClientSession(base_url=collector_url, headers=headers) as session:
        while True:
            elapsed = asyncio.get_running_loop().time() - started
            flag_on = flags.get_boolean_value(FLAG, default_value=True) if flags is not None else True
            name, error_rate = phase(elapsed, flag_on)
            if name != current:
                current = name
                say("demo", _STORY[name])
            errors = sum(rng.random() < error_rate for _ in range(REQUESTS_PER_SECOND))
            window.append((REQUESTS_PER_SECOND, errors))
            total = sum(r for r, _ in window)
            ratio = sum(e for _, e in window) / total
            labels = {"service": "checkout"}
            samples = [
                {
                    "name": "http_requests_total",
                    "labels": {**labels, "status": "200"},
                    "value": REQUESTS_PER_SECOND - errors,
                    "kind": "increment",
                },
                {
                    "name": "http_requests_total",
                    "labels": {**labels, "status": "500"},
                    "value": errors,
                    "kind": "increment",
                },
                {"name": "checkout_error_ratio", "labels": labels, "value": round(ratio, 4)},
            ]
            logs = [
                {
                    "service": "checkout",
                    "level": "error",
                    "message": "payment provider timeout",
                    "labels": {"release": "new-checkout" if name == "bad-release" else "stable"},
                }
            ] * min(errors, 20)
            try:
                await _post(session, "/api/v1/metrics", {"samples": samples})
                if logs:
                    await _post(session, "/api/v1/logs", {"logs": logs})
            except (aiohttp.ClientError, RuntimeError) as exc:
                say("demo", f"could not post to the collector: {exc}")
            await asyncio.sleep(1.0)


async def _post(session: aiohttp.ClientSession, path: str, body: dict[str, object]) -> None:
    async with session.post(path, json=body) as response:
        if response.status != 202:
            raise RuntimeError(f"{path}: HTTP {response.status}: {(await response.text())[:200]}")
