"""Notifier speed, end to end over a real Redis (started here, persistence off), in one run:

- latency: from XADD of an alert entry on the alerts stream to the fake Slack webhook receiving the POST
  (group_wait 0, one group per alert), p50/p99 over 200 alerts (target p99 <= 250 ms). The fake runs in its
  own thread, so its clock is not the notifier loop's. The Slack token bucket (1 message/s per channel, as
  Slack asks) is raised to 1000/s here: this measures the pipeline, not Slack's rate limit.
- throughput: notifications/s sustained to the webhook fake (N alerts, one group each, all at once), next to
  raw aiohttp POSTs of the same payload with the same concurrency (64) in the same run.

The notifier is the real service (stream consumer, Redis-held groups and timers, dedup, notification log with
intent records) running in this process.

Usage: python bench/notify.py [--trials 200] [--notifications 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp
import orjson
import yaml
from redis.asyncio import Redis

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from ingest import start_redis  # noqa: E402

from services.notifier.app import build  # noqa: E402
from services.notifier.dispatcher import MAX_FLUSHES  # noqa: E402
from shared.config import Config  # noqa: E402
from shared.jsonlog import configure_logging  # noqa: E402
from shared.streams import Keys, append_batch  # noqa: E402
from tests.fakes.http import serve_in_thread, stop_in_thread  # noqa: E402
from tests.fakes.slack import FakeSlackWebhook  # noqa: E402
from tests.fakes.webhook import FakeWebhook  # noqa: E402


def notifier_config(url: str, prefix: str, receiver: dict) -> Config:
    workdir = Path(tempfile.mkdtemp(prefix="tripwire-bench-notify-"))
    routing = {
        "route": {
            "receiver": "bench",
            "group_by": ["trial"],
            "group_wait": "0s",
            "group_interval": "5m",
            "repeat_interval": "4h",
        },
        "receivers": [{"name": "bench", **receiver}],
    }
    (workdir / "alertmanager.yml").write_text(yaml.safe_dump(routing))
    return Config.model_validate(
        {
            "redis": {"url": url, "prefix": prefix},
            "alerting": {"config_file": str(workdir / "alertmanager.yml")},
            "streams": {"consumer_name": "bench", "read_count": 100},
            "notifier": {"startup_wait": "0s"},
        }
    )


def alert(trial: int) -> dict:
    now = time.time()
    return {
        "labels": {"alertname": "BenchAlert", "trial": str(trial), "severity": "critical"},
        "annotations": {"summary": f"bench alert {trial}", "runbook_url": "https://runbooks/bench"},
        "startsAt": now,
        "endsAt": now + 3600,
        "generatorURL": "http://evaluator/graph",
    }


async def bench_latency(url: str, trials: int) -> list[float]:
    slack = serve_in_thread(FakeSlackWebhook())
    directory = Path(tempfile.mkdtemp(prefix="tripwire-bench-secret-"))
    (directory / "url").write_text(slack.webhook_url)
    hook = {"api_url_file": str(directory / "url"), "rate_limit": 1000, "burst": 1000}
    prefix = f"bench-{uuid.uuid4().hex[:6]}"
    keys = Keys(prefix)
    redis = Redis.from_url(url)
    app = build(notifier_config(url, prefix, {"slack_configs": [hook]}))
    await app.service.start()
    rng = random.Random(7)
    latencies = []
    try:
        for trial in range(trials):
            await asyncio.sleep(rng.uniform(0, 0.02))  # arrive at random points, not in lockstep
            before = len(slack.requests)
            sent = time.monotonic()
            await append_batch(redis, keys.alerts, "alerts", orjson.dumps([alert(trial)]), "bench", 100_000)
            deadline = sent + 5.0
            while len(slack.requests) == before:
                if time.monotonic() > deadline:
                    raise SystemExit(f"no Slack POST within 5 s for trial {trial}")
                await asyncio.sleep(0.0005)
            latencies.append(slack.requests[before].at - sent)
        assert len(slack.messages) == trials, len(slack.messages)
    finally:
        await app.service.stop()
        await redis.aclose()
        stop_in_thread(slack)
    return latencies


async def bench_throughput(url: str, count: int) -> float:
    webhook = serve_in_thread(FakeWebhook())
    prefix = f"bench-{uuid.uuid4().hex[:6]}"
    keys = Keys(prefix)
    redis = Redis.from_url(url)
    app = build(notifier_config(url, prefix, {"webhook_configs": [{"url": webhook.url}]}))
    await app.service.start()
    try:
        started = time.monotonic()
        for first in range(0, count, 100):
            items = [alert(t) for t in range(first, min(count, first + 100))]
            await append_batch(redis, keys.alerts, "alerts", orjson.dumps(items), "bench", 100_000)
        deadline = started + 300
        while len(webhook.delivered) < count:
            if time.monotonic() > deadline:
                raise SystemExit(f"only {len(webhook.delivered)} of {count} notifications in 300 s")
            await asyncio.sleep(0.005)
        elapsed = time.monotonic() - started
    finally:
        await app.service.stop()
        await redis.aclose()
        stop_in_thread(webhook)
    return count / elapsed


async def bench_raw(count: int) -> float:
    """The floor: aiohttp POSTs of a v4 payload to the same fake, MAX_FLUSHES at a time."""
    webhook = serve_in_thread(FakeWebhook())
    payload = {
        "version": "4",
        "groupKey": "{}:{trial}",
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "bench",
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://x",
        "alerts": [
            {
                "status": "firing",
                "labels": alert(0)["labels"],
                "annotations": alert(0)["annotations"],
                "startsAt": "2026-01-01T00:00:00Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://evaluator/graph",
                "fingerprint": "0123456789abcdef",
            }
        ],
    }
    slots = asyncio.Semaphore(MAX_FLUSHES)
    async with aiohttp.ClientSession() as session:

        async def post() -> None:
            async with slots, session.post(webhook.url, json=payload) as response:
                assert response.status == 200

        started = time.monotonic()
        await asyncio.gather(*(post() for _ in range(count)))
        elapsed = time.monotonic() - started
    stop_in_thread(webhook)
    return count / elapsed


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--notifications", type=int, default=2000)
    args = parser.parse_args()
    configure_logging("bench", "warning", "text")
    url, proc, _ = start_redis()
    try:
        latencies = await bench_latency(url, args.trials)
        p50, p99 = statistics.median(latencies) * 1000, percentile(latencies, 0.99) * 1000
        print(
            f"latency alerts stream -> fake Slack POST (group_wait 0, {args.trials} alerts): "
            f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {max(latencies) * 1000:.1f} ms   (target p99 <= 250 ms)"
        )
        rate = await bench_throughput(url, args.notifications)
        raw = await bench_raw(args.notifications)
        print(
            f"throughput to the webhook fake: {rate:,.0f} notifications/s sustained "
            f"({args.notifications} groups) vs raw aiohttp POST {raw:,.0f}/s ({MAX_FLUSHES} concurrent), "
            f"ratio {rate / raw:.2f}x"
        )
    finally:
        if proc is not None:
            proc.terminate()


if __name__ == "__main__":
    asyncio.run(main())
