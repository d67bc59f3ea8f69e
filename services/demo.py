"""The demo traffic generator behind `tripwire up --demo`.

It plays a small checkout service: healthy traffic first, then a bad release (`new-checkout`) that pushes the
error rate to ~8%, then, a while after the alert has fired, a rollback. Every second it posts what a real app
would: request counters (`increment` samples), a `checkout_error_ratio` gauge over the last 10 seconds, and
an error log line per failed payment. With examples/ the HighErrorRate rule fires within a minute of start.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Callable

import aiohttp
from pydantic import SecretStr

HEALTHY_ERROR_RATE = 0.005
BAD_ERROR_RATE = 0.08
HEALTHY_SECONDS = 5
BAD_SECONDS = 60
REQUESTS_PER_SECOND = 200
WINDOW = 10


_STORY = {
    "healthy": f"checkout is healthy ({HEALTHY_ERROR_RATE:.1%} errors); bad release in {HEALTHY_SECONDS}s",
    "bad-release": (
        f"deploying release new-checkout: error rate jumps to {BAD_ERROR_RATE:.0%}; "
        "HighErrorRate (>2% for 10s) should fire within ~30s"
    ),
    "rolled-back": "rolling new-checkout back: errors back to normal; the alert will resolve",
}


def phase(elapsed: float) -> tuple[str, float]:
    """Which part of the story we are in, and its error rate."""
    if elapsed < HEALTHY_SECONDS:
        return "healthy", HEALTHY_ERROR_RATE
    if elapsed < HEALTHY_SECONDS + BAD_SECONDS:
        return "bad-release", BAD_ERROR_RATE
    return "rolled-back", HEALTHY_ERROR_RATE


async def run_demo(collector_url: str, token: SecretStr | None, say: Callable[[str, str], None]) -> None:
    rng = random.Random(7)
    headers = {"Authorization": f"Bearer {token.get_secret_value()}"} if token else {}
    window: deque[tuple[int, int]] = deque(maxlen=WINDOW)
    current = ""
    started = asyncio.get_running_loop().time()
    async with aiohttp.ClientSession(base_url=collector_url, headers=headers) as session:
        while True:
            elapsed = asyncio.get_running_loop().time() - started
            name, error_rate = phase(elapsed)
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
