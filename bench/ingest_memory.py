"""Collector memory with its request budget full: how much it grows past collector.max_buffered_bytes.

The collector runs as a subprocess against a Redis this script starts. Redis writes are paused (CLIENT PAUSE
WRITE), so every accepted request waits on its append; meanwhile many concurrent JSON API requests of 10,000
samples arrive. The script prints the collector's resident memory (VmHWM, the peak, and VmRSS) over its idle
size, as a multiple of the budget, and the answers the requests got (202 once Redis is back, 503 for those
refused by the budget or the max_in_flight queue).

Usage: python bench/ingest_memory.py [--budget-mib 64] [--requests 300] [--pause 8]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import sys
import time
from pathlib import Path

import aiohttp
import orjson
from redis.asyncio import Redis

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.ingest import start_collector, start_redis  # noqa: E402

SAMPLES = 10_000


def memory_mib(pid: int) -> dict[str, int]:
    """VmHWM and VmRSS of a process, in MiB."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            found[key] = int(value.split()[0]) // 1024
    return found


def request_body() -> bytes:
    now = time.time()
    samples = [
        {
            "name": "http_requests_total",
            "labels": {"service": "checkout", "route": f"/api/v{i % 50}", "code": "200"},
            "value": i,
            "timestamp": now,
        }
        for i in range(SAMPLES)
    ]
    return orjson.dumps({"samples": samples})


async def run(args: argparse.Namespace) -> None:
    budget = args.budget_mib * 1024 * 1024
    # Always a Redis of its own, never TRIPWIRE_REDIS_URL's: the bench pauses its writes.
    redis_url, redis_process, _ = start_redis(own=True)
    collector, url, _workdir = start_collector(
        redis_url,
        "memory",
        redis="  socket_timeout: 60s\n",
        collector=f"  max_buffered_bytes: {budget}\n",
        log_level="error",
    )
    redis = Redis.from_url(redis_url)
    body = request_body()
    answers: collections.Counter[str] = collections.Counter()
    try:
        idle = memory_mib(collector.pid)
        # Ended by UNPAUSE below (or in `finally`), and by Redis 2 s after the pause at the latest.
        await redis.execute_command("CLIENT", "PAUSE", int((args.pause + 2) * 1000), "WRITE")
        timeout = aiohttp.ClientTimeout(total=120)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as session:

            async def post() -> None:
                headers = {"Content-Type": "application/json"}
                try:
                    async with session.post(f"{url}/api/v1/metrics", data=body, headers=headers) as response:
                        answers[str(response.status)] += 1
                except aiohttp.ClientError as exc:
                    answers[type(exc).__name__] += 1

            posts = [asyncio.create_task(post()) for _ in range(args.requests)]
            await asyncio.sleep(args.pause)  # the requests pile up against the paused Redis meanwhile
            paused = memory_mib(collector.pid)
            await redis.execute_command("CLIENT", "UNPAUSE")
            await asyncio.gather(*posts)
        peak = paused["VmHWM"] - idle["VmRSS"]
        print(f"  {args.requests} requests of {len(body):,} bytes, budget {args.budget_mib} MiB")
        rss = f"idle {idle['VmRSS']} MiB, paused {paused['VmRSS']} MiB, peak {paused['VmHWM']} MiB"
        print(f"  collector RSS {rss}")
        print(f"  grew {peak} MiB at its peak: {peak / args.budget_mib:.1f}x the budget")
        print(f"  answers: {dict(sorted(answers.items()))}")
    finally:
        await redis.execute_command("CLIENT", "UNPAUSE")
        await redis.aclose()
        collector.terminate()
        collector.wait()
        if redis_process is not None:
            redis_process.terminate()
            redis_process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--budget-mib", type=int, default=64)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--pause", type=float, default=8.0, help="seconds Redis writes stay paused")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
