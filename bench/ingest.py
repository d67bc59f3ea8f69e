"""Ingest throughput: samples/s through the collector's POST /api/v1/metrics, next to raw redis-py XADD.

Everything runs in one go on this machine, against one Redis the script starts (persistence off, so both
paths measure software, not the disk), or TRIPWIRE_REDIS_URL:

- collector: the real service as a subprocess; an aiohttp client posts pre-encoded 1,000-sample requests
  with a few in flight, like several instrumented apps would;
- raw, pipelined: redis-py XADD of the very entries the collector writes (same bytes), 50 per pipeline;
- raw, one by one: one XADD round trip per entry, which is what one request costs the collector at minimum.

Usage: python bench/ingest.py [--requests 300] [--concurrency 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import orjson
from redis.asyncio import Redis

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from services.collector.ingest import METRICS, parse_body  # noqa: E402
from services.local_redis import free_port, redis_server_binary, spawn_redis_server, wait_until_ready  # noqa: E402
from shared.codec import encode_batch  # noqa: E402

BATCH = 1000


def make_request(seed: int) -> bytes:
    """A realistic 1,000-sample request: increments of an HTTP counter over services, routes and codes."""
    now = time.time()
    samples = [
        {
            "name": "http_requests_total",
            "labels": {
                "service": f"svc-{(seed + i) % 20}",
                "route": f"/api/v1/items/{i % 50}",
                "method": ("GET", "POST", "PUT")[i % 3],
                "status": ("200", "200", "200", "404", "500")[i % 5],
            },
            "value": 1,
            "kind": "increment",
            "timestamp": now + i / 1000,
        }
        for i in range(BATCH)
    ]
    return orjson.dumps({"samples": samples})


def start_redis() -> tuple[str, subprocess.Popen[bytes] | None, Path | None]:
    if url := os.environ.get("TRIPWIRE_REDIS_URL"):
        return url, None, None
    binary = redis_server_binary()
    if binary is None:
        raise SystemExit("bench: install redis-server or set TRIPWIRE_REDIS_URL")
    directory = Path(tempfile.mkdtemp(prefix="tripwire-bench-"))
    port = free_port()
    proc = spawn_redis_server(binary, port, directory, persistent=False)
    url = f"redis://127.0.0.1:{port}/0"
    wait_until_ready(url, process=proc)
    return url, proc, directory


def start_collector(redis_url: str, prefix: str) -> tuple[subprocess.Popen[bytes], str, Path]:
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="tripwire-bench-collector-"))
    config = workdir / "tripwire.yml"
    config.write_text(
        f"redis:\n  url: {redis_url}\n  prefix: {prefix}\n"
        f"collector:\n  listen: 127.0.0.1:{port}\n  max_items: 10000\nlog:\n  level: warning\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIPWIRE_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "collector", "-c", str(config)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(workdir / "collector.log").open("wb"),
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            time.sleep(0.1)
    return proc, base, workdir


async def bench_collector(base: str, bodies: list[bytes], concurrency: int) -> tuple[float, list[float]]:
    latencies: list[float] = []
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.get(base + "/readyz") as r:
            assert r.status == 200, await r.text()

        async def worker() -> None:
            while not queue.empty():
                body = queue.get_nowait()
                t = time.perf_counter()
                async with session.post(
                    base + "/api/v1/metrics", data=body, headers={"Content-Type": "application/json"}
                ) as r:
                    if r.status != 202:
                        raise RuntimeError(f"HTTP {r.status}: {await r.text()}")
                latencies.append(time.perf_counter() - t)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return len(bodies) * BATCH / elapsed, latencies


async def encoded_entries(bodies: list[bytes]) -> list[dict[bytes, bytes]]:
    """The exact entry fields the collector writes for each request body."""
    entries = []
    for i, body in enumerate(bodies):
        accepted = parse_body(METRICS, body, time.time(), 10_000)
        entries.append(await encode_batch("metrics", accepted.items_json, f"bench-{i}"))
    return entries


async def bench_raw_pipelined(
    client: Redis, stream: str, entries: list[dict[bytes, bytes]], per: int
) -> float:
    started = time.perf_counter()
    for i in range(0, len(entries), per):
        async with client.pipeline(transaction=False) as pipe:
            for fields in entries[i : i + per]:
                pipe.xadd(stream, fields, maxlen=1_000_000, approximate=True)
            await pipe.execute()
    return len(entries) * BATCH / (time.perf_counter() - started)


async def bench_raw_single(client: Redis, stream: str, entries: list[dict[bytes, bytes]]) -> float:
    started = time.perf_counter()
    for fields in entries:
        await client.xadd(stream, fields, maxlen=1_000_000, approximate=True)
    return len(entries) * BATCH / (time.perf_counter() - started)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    redis_url, redis_proc, redis_dir = start_redis()
    collector, base, workdir = start_collector(redis_url, "bench")
    client = Redis.from_url(redis_url)
    try:
        bodies = [make_request(i) for i in range(args.requests)]
        entries = await encoded_entries(bodies)
        results: dict[str, list[float]] = {"collector": [], "pipelined": [], "single": []}
        latencies: list[float] = []
        for _ in range(args.rounds):
            await client.delete("bench:{metrics}", "bench:raw")
            rate, lat = await bench_collector(base, bodies, args.concurrency)
            results["collector"].append(rate)
            latencies.extend(lat)
            await client.delete("bench:raw")
            results["pipelined"].append(await bench_raw_pipelined(client, "bench:raw", entries, 50))
            await client.delete("bench:raw")
            results["single"].append(await bench_raw_single(client, "bench:raw", entries))
        assert await client.xlen("bench:{metrics}") == args.requests, "collector did not store every request"

        body_kb = sum(map(len, bodies)) / len(bodies) / 1024
        print(
            f"ingest benchmark: {args.requests} requests x {BATCH} samples ({body_kb:.0f} KiB JSON each), "
            f"{args.concurrency} in flight, median of {args.rounds} rounds; Redis {redis_url}"
        )
        collector_rate = statistics.median(results["collector"])
        for name, label in (
            ("collector", "POST /api/v1/metrics (collector)"),
            ("pipelined", "raw redis-py XADD, pipelines of 50"),
            ("single", "raw redis-py XADD, one per entry"),
        ):
            rate = statistics.median(results[name])
            print(f"  {label:<38} {rate:>12,.0f} samples/s   ({collector_rate / rate:.2f}x of this)")
        print(
            f"  collector request latency: p50 {pct(latencies, 0.5) * 1000:.1f} ms, "
            f"p99 {pct(latencies, 0.99) * 1000:.1f} ms"
        )
    finally:
        await client.aclose()
        collector.terminate()
        collector.wait(timeout=15)
        shutil.rmtree(workdir, ignore_errors=True)
        if redis_proc is not None:
            redis_proc.terminate()
            redis_proc.wait(timeout=15)
        if redis_dir is not None:
            shutil.rmtree(redis_dir, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
